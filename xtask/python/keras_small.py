#!/usr/bin/env python3
"""Two small Keras-2 HDF5 models, written with h5py alone, plus a float64 reference.

This script shares NO code with the Rust implementation in this repository and uses
neither TensorFlow nor Keras.  It writes the files exactly as Keras 2.2.4's
``model.save()`` lays them out (``keras/engine/saving.py``):

* root attributes ``keras_version`` (``b'2.2.4'``), ``backend`` (``b'tensorflow'``),
  ``model_config`` (JSON of ``{"class_name", "config"}``, ``.encode('utf8')``: a
  fixed-length ASCII string) and, for the compiled functional model only,
  ``training_config``;
* group ``model_weights`` with attributes ``layer_names`` (fixed-length byte strings),
  ``backend`` and ``keras_version``;
* per layer a group ``model_weights/<layer>`` with attribute ``weight_names``
  (``b'<layer>/kernel:0'``, ...; an empty array for a weightless layer) and the
  float32 datasets ``model_weights/<layer>/<layer>/kernel:0``, ...

Files written (paths relative to the repository root):

* ``testdata/keras_small_functional.h5``: functional ``Model`` "small_functional",
  input ``[null, 16, 16, 3]``: ZeroPadding2D (asymmetric), Conv2D, DepthwiseConv2D,
  ReLU(max 6), SeparableConv2D (depth multiplier 2), LeakyReLU, AveragePooling2D
  ('same', stride 1), Concatenate, BatchNormalization, a 1x1 Conv2D, Add,
  MaxPooling2D, Flatten, Dropout, Dense relu, Dense softmax.
* ``testdata/keras_small_sequential.h5``: ``Sequential`` "small_sequential" (Keras
  2.2 ``{"name", "layers"}`` config, no InputLayer, the first layer carries
  ``batch_input_shape`` ``[null, 12, 12, 1]``): Conv2D 'same' stride 2, MaxPooling2D
  'same', Reshape [9, 4], Flatten, Dense linear.
* ``testdata/keras_small_reference.json``: for each model the input (``default_rng(7)``,
  multiples of 1/256, stored NCHW ``[1, C, H, W]`` row-major), the output and every
  layer's whole-tensor output mean, evaluated in float64 (8 significant digits).

Keras / TensorFlow semantics used by the reference: 'same' padding puts the odd pixel
at the bottom / right; 'same' average pooling averages over the real pixels only;
max pooling pads with -inf; a depthwise output channel is ``c * multiplier + m``;
Flatten and Reshape work in NHWC order; convolutions are cross-correlations.

Every layer is evaluated twice, by a vectorised numpy path (padding + im2col) and by
plain scalar Python loops with explicit bounds checks, and the two must agree to
1e-12.  Reruns give byte-identical files (``track_times=False`` on the datasets).

Usage::

    .cache/venv/bin/python xtask/python/keras_small.py
"""

import json
import math
import os
import sys

import h5py
import numpy as np

from refcommon import path

FUNCTIONAL = "testdata/keras_small_functional.h5"
SEQUENTIAL = "testdata/keras_small_sequential.h5"
OUT = "testdata/keras_small_reference.json"
KERAS_VERSION = "2.2.4"
BACKEND = "tensorflow"
INPUT_SEED = 7
WEIGHT_SEEDS = {"small_functional": 20240601, "small_sequential": 20240602}


def r8(x):
    return float("%.8g" % x)


def f32_as_json(x):
    """What Keras writes for a float it keeps as float32 (e.g. LeakyReLU's alpha)."""
    return float(np.float32(x))


# --------------------------------------------------------------------------
# Keras 2.2.4 layer configs (key order as `get_config` builds them)
# --------------------------------------------------------------------------

GLOROT = {"class_name": "VarianceScaling",
          "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}}
ZEROS = {"class_name": "Zeros", "config": {}}
ONES = {"class_name": "Ones", "config": {}}


def base(name, batch_input_shape=None):
    c = {"name": name, "trainable": True}
    if batch_input_shape is not None:
        c["batch_input_shape"] = batch_input_shape
        c["dtype"] = "float32"
    return c


def pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def conv_common(filters, kernel, strides, padding, activation, use_bias):
    return {"filters": filters, "kernel_size": pair(kernel), "strides": pair(strides), "padding": padding,
            "data_format": "channels_last", "dilation_rate": [1, 1], "activation": activation,
            "use_bias": use_bias}


def cfg_input(name, shape):
    return {"batch_input_shape": shape, "dtype": "float32", "sparse": False, "name": name}


def cfg_conv2d(name, filters, kernel, strides, padding, activation, use_bias=True, batch_input_shape=None):
    c = base(name, batch_input_shape)
    c.update(conv_common(filters, kernel, strides, padding, activation, use_bias))
    c.update({"kernel_initializer": GLOROT, "bias_initializer": ZEROS, "kernel_regularizer": None,
              "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
              "bias_constraint": None})
    return c


def cfg_depthwise(name, kernel, strides, padding, activation, depth_multiplier, use_bias=True):
    c = base(name)
    common = conv_common(None, kernel, strides, padding, activation, use_bias)
    del common["filters"]
    c.update(common)
    c.update({"bias_initializer": ZEROS, "bias_regularizer": None, "activity_regularizer": None,
              "bias_constraint": None, "depth_multiplier": depth_multiplier, "depthwise_initializer": GLOROT,
              "depthwise_regularizer": None, "depthwise_constraint": None})
    return c


def cfg_separable(name, filters, kernel, strides, padding, activation, depth_multiplier, use_bias=True):
    c = base(name)
    c.update(conv_common(filters, kernel, strides, padding, activation, use_bias))
    c.update({"bias_initializer": ZEROS, "bias_regularizer": None, "activity_regularizer": None,
              "bias_constraint": None, "depth_multiplier": depth_multiplier, "depthwise_initializer": GLOROT,
              "pointwise_initializer": GLOROT, "depthwise_regularizer": None, "pointwise_regularizer": None,
              "depthwise_constraint": None, "pointwise_constraint": None})
    return c


def cfg_dense(name, units, activation, use_bias=True):
    c = base(name)
    c.update({"units": units, "activation": activation, "use_bias": use_bias, "kernel_initializer": GLOROT,
              "bias_initializer": ZEROS, "kernel_regularizer": None, "bias_regularizer": None,
              "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None})
    return c


def cfg_bn(name, epsilon=0.001):
    c = base(name)
    c.update({"axis": -1, "momentum": 0.99, "epsilon": epsilon, "center": True, "scale": True,
              "beta_initializer": ZEROS, "gamma_initializer": ONES, "moving_mean_initializer": ZEROS,
              "moving_variance_initializer": ONES, "beta_regularizer": None, "gamma_regularizer": None,
              "beta_constraint": None, "gamma_constraint": None})
    return c


def cfg_pool(name, pool, strides, padding):
    c = base(name)
    c.update({"pool_size": pair(pool), "padding": padding, "strides": pair(strides),
              "data_format": "channels_last"})
    return c


def cfg_zero_padding(name, padding):
    c = base(name)
    c.update({"padding": padding, "data_format": "channels_last"})
    return c


def cfg_relu(name, max_value=None, negative_slope=0.0, threshold=0.0):
    c = base(name)
    c.update({"max_value": max_value, "negative_slope": negative_slope, "threshold": threshold})
    return c


def cfg_leaky(name, alpha):
    c = base(name)
    c["alpha"] = f32_as_json(alpha)
    return c


def cfg_concat(name, axis):
    c = base(name)
    c["axis"] = axis
    return c


def cfg_flatten(name, batch_input_shape=None):
    c = base(name, batch_input_shape)
    c["data_format"] = "channels_last"
    return c


def cfg_dropout(name, rate):
    c = base(name)
    c.update({"rate": rate, "noise_shape": None, "seed": None})
    return c


def cfg_reshape(name, target_shape):
    c = base(name)
    c["target_shape"] = list(target_shape)
    return c


# --------------------------------------------------------------------------
# Random weights
# --------------------------------------------------------------------------

def he(rng, shape, fan_in, gain=1.0):
    return (rng.standard_normal(shape) * gain * math.sqrt(2.0 / fan_in)).astype(np.float32)


def small(rng, shape, scale=0.1):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


class Layer:
    """One Keras layer: name, class, config, inbound layer names, ordered weights."""

    def __init__(self, name, class_name, config, inbound, weights=()):
        self.name = name
        self.class_name = class_name
        self.config = config
        self.inbound = list(inbound)
        self.weights = list(weights)  # [(short name, float32 array)] in Keras order

    def w(self, short):
        return dict(self.weights)[short].astype(np.float64)


def functional_model():
    rng = np.random.default_rng(WEIGHT_SEEDS["small_functional"])
    L = []
    L.append(Layer("input_1", "InputLayer", cfg_input("input_1", [None, 16, 16, 3]), []))
    L.append(Layer("zero_padding2d_1", "ZeroPadding2D",
                   cfg_zero_padding("zero_padding2d_1", [[1, 2], [0, 1]]), ["input_1"]))
    L.append(Layer("conv2d_1", "Conv2D", cfg_conv2d("conv2d_1", 6, 3, 1, "valid", "relu"), ["zero_padding2d_1"],
                   [("kernel", he(rng, (3, 3, 3, 6), 27)), ("bias", small(rng, (6,)))]))
    L.append(Layer("depthwise_conv2d_1", "DepthwiseConv2D",
                   cfg_depthwise("depthwise_conv2d_1", 3, 2, "same", "linear", 1), ["conv2d_1"],
                   [("depthwise_kernel", he(rng, (3, 3, 6, 1), 9)), ("bias", small(rng, (6,)))]))
    L.append(Layer("re_lu_1", "ReLU", cfg_relu("re_lu_1", max_value=6.0), ["depthwise_conv2d_1"]))
    L.append(Layer("separable_conv2d_1", "SeparableConv2D",
                   cfg_separable("separable_conv2d_1", 5, 3, 1, "same", "linear", 2), ["re_lu_1"],
                   [("depthwise_kernel", he(rng, (3, 3, 6, 2), 9)),
                    ("pointwise_kernel", he(rng, (1, 1, 12, 5), 12)),
                    ("bias", small(rng, (5,)))]))
    L.append(Layer("leaky_re_lu_1", "LeakyReLU", cfg_leaky("leaky_re_lu_1", 0.2), ["separable_conv2d_1"]))
    L.append(Layer("average_pooling2d_1", "AveragePooling2D", cfg_pool("average_pooling2d_1", 3, 1, "same"),
                   ["re_lu_1"]))
    L.append(Layer("concatenate_1", "Concatenate", cfg_concat("concatenate_1", -1),
                   ["leaky_re_lu_1", "average_pooling2d_1"]))
    L.append(Layer("batch_normalization_1", "BatchNormalization", cfg_bn("batch_normalization_1"),
                   ["concatenate_1"],
                   [("gamma", rng.uniform(0.5, 1.5, 11).astype(np.float32)),
                    ("beta", small(rng, (11,))),
                    ("moving_mean", rng.uniform(0.0, 1.0, 11).astype(np.float32)),
                    ("moving_variance", rng.uniform(0.25, 2.0, 11).astype(np.float32))]))
    L.append(Layer("conv2d_2", "Conv2D", cfg_conv2d("conv2d_2", 11, 1, 1, "valid", "linear"), ["concatenate_1"],
                   [("kernel", he(rng, (1, 1, 11, 11), 11, gain=0.5)), ("bias", small(rng, (11,)))]))
    L.append(Layer("add_1", "Add", base("add_1"), ["batch_normalization_1", "conv2d_2"]))
    L.append(Layer("max_pooling2d_1", "MaxPooling2D", cfg_pool("max_pooling2d_1", 2, 2, "valid"), ["add_1"]))
    L.append(Layer("flatten_1", "Flatten", cfg_flatten("flatten_1"), ["max_pooling2d_1"]))
    L.append(Layer("dropout_1", "Dropout", cfg_dropout("dropout_1", 0.3), ["flatten_1"]))
    L.append(Layer("dense_1", "Dense", cfg_dense("dense_1", 8, "relu"), ["dropout_1"],
                   [("kernel", he(rng, (176, 8), 176)), ("bias", small(rng, (8,)))]))
    L.append(Layer("predictions", "Dense", cfg_dense("predictions", 4, "softmax"), ["dense_1"],
                   [("kernel", he(rng, (8, 4), 8, gain=0.7)), ("bias", small(rng, (4,)))]))
    layers_json = [{"name": l.name, "class_name": l.class_name, "config": l.config,
                    "inbound_nodes": [[[src, 0, 0, {}] for src in l.inbound]] if l.inbound else []}
                   for l in L]
    config = {"class_name": "Model",
              "config": {"name": "small_functional", "layers": layers_json,
                         "input_layers": [["input_1", 0, 0]], "output_layers": [["predictions", 0, 0]]}}
    # As Keras 2.2.4 writes it for a model compiled with Adam() (never fitted, so no
    # optimizer_weights group).
    training = {"optimizer_config": {"class_name": "Adam",
                                     "config": {"lr": f32_as_json(0.001), "beta_1": f32_as_json(0.9),
                                                "beta_2": f32_as_json(0.999), "decay": 0.0,
                                                "epsilon": 1e-07, "amsgrad": False}},
                "loss": "categorical_crossentropy", "metrics": ["accuracy"], "sample_weight_mode": None,
                "loss_weights": None}
    return L, config, training


def sequential_model():
    rng = np.random.default_rng(WEIGHT_SEEDS["small_sequential"])
    L = []
    L.append(Layer("conv2d_1", "Conv2D",
                   cfg_conv2d("conv2d_1", 4, 3, 2, "same", "relu", batch_input_shape=[None, 12, 12, 1]),
                   ["input"], [("kernel", he(rng, (3, 3, 1, 4), 9)), ("bias", small(rng, (4,)))]))
    L.append(Layer("max_pooling2d_1", "MaxPooling2D", cfg_pool("max_pooling2d_1", 2, 2, "same"), ["conv2d_1"]))
    L.append(Layer("reshape_1", "Reshape", cfg_reshape("reshape_1", [9, 4]), ["max_pooling2d_1"]))
    L.append(Layer("flatten_1", "Flatten", cfg_flatten("flatten_1"), ["reshape_1"]))
    L.append(Layer("dense_1", "Dense", cfg_dense("dense_1", 3, "linear"), ["flatten_1"],
                   [("kernel", he(rng, (36, 3), 36)), ("bias", small(rng, (3,)))]))
    config = {"class_name": "Sequential",
              "config": {"name": "small_sequential",
                         "layers": [{"class_name": l.class_name, "config": l.config} for l in L]}}
    return L, config, None


# --------------------------------------------------------------------------
# HDF5 writing, as keras/engine/saving.py (2.2.4) + h5py do it
# --------------------------------------------------------------------------

def write_h5(rel, layers, config, training):
    with h5py.File(path(rel), "w") as f:
        f.attrs["keras_version"] = np.bytes_(KERAS_VERSION.encode("utf8"))
        f.attrs["backend"] = np.bytes_(BACKEND.encode("utf8"))
        f.attrs["model_config"] = np.bytes_(json.dumps(config).encode("utf8"))
        if training is not None:
            f.attrs["training_config"] = np.bytes_(json.dumps(training).encode("utf8"))
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([l.name.encode("utf8") for l in layers])
        mw.attrs["backend"] = np.bytes_(BACKEND.encode("utf8"))
        mw.attrs["keras_version"] = np.bytes_(KERAS_VERSION.encode("utf8"))
        for l in layers:
            g = mw.create_group(l.name)
            names = [("%s/%s:0" % (l.name, short)).encode("utf8") for short, _ in l.weights]
            if l.name == "separable_conv2d_1":
                # Keras splits attributes over 64 KB into name0, name1, ... (saving.py's
                # save_attributes_to_hdf5_group); exercise that layout on one small layer.
                for k, chunk in enumerate([names[:2], names[2:]]):
                    g.attrs["weight_names%d" % k] = np.array(chunk)
            else:
                g.attrs["weight_names"] = np.array(names) if names else np.array([], dtype="S")
            for full, (_, value) in zip(names, l.weights):
                ds = g.create_dataset(full.decode("utf8"), shape=value.shape, dtype=value.dtype, track_times=False)
                ds[...] = value


# --------------------------------------------------------------------------
# Reference 1: vectorised numpy (padding + im2col), float64 NHWC, batch 1
# --------------------------------------------------------------------------

def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def pads_for(x, k, s, padding):
    if padding == "valid":
        return (0, 0), (0, 0)
    return same_pads(x.shape[0], k[0], s[0]), same_pads(x.shape[1], k[1], s[1])


def windows(xp, k, s):
    """[H, W, C] padded → [OH, OW, C, kh, kw]."""
    v = np.lib.stride_tricks.sliding_window_view(xp, tuple(k), axis=(0, 1))
    return v[::s[0], ::s[1]]


def v_conv(x, kernel, s, padding):
    k = kernel.shape[:2]
    ph, pw = pads_for(x, k, s, padding)
    xp = np.pad(x, (ph, pw, (0, 0)))
    cols = windows(xp, k, s)  # [OH, OW, C, kh, kw]
    oh, ow = cols.shape[:2]
    cols = cols.transpose(0, 1, 3, 4, 2).reshape(oh * ow, -1)  # (kh, kw, c) order = HWIO rows
    return (cols @ kernel.reshape(-1, kernel.shape[3])).reshape(oh, ow, -1)


def v_depthwise(x, dk, s, padding):
    k = dk.shape[:2]
    ph, pw = pads_for(x, k, s, padding)
    xp = np.pad(x, (ph, pw, (0, 0)))
    cols = windows(xp, k, s)  # [OH, OW, C, kh, kw]
    out = np.einsum("hwcij,ijcm->hwcm", cols, dk)
    return out.reshape(out.shape[0], out.shape[1], -1)  # channel c * M + m


def v_pool(x, k, s, padding, kind):
    ph, pw = pads_for(x, k, s, padding)
    if kind == "max":
        xp = np.pad(x, (ph, pw, (0, 0)), constant_values=-np.inf)
        return windows(xp, k, s).max(axis=(3, 4))
    xp = np.pad(x, (ph, pw, (0, 0)))
    ones = np.pad(np.ones(x.shape[:2] + (1,)), (ph, pw, (0, 0)))
    return windows(xp, k, s).sum(axis=(3, 4)) / windows(ones, k, s).sum(axis=(3, 4))


def act(x, name):
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(name)


def v_layer(l, ins):
    c = l.config
    x = ins[0]
    if l.class_name == "ZeroPadding2D":
        (t, b), (le, r) = c["padding"]
        return np.pad(x, ((t, b), (le, r), (0, 0)))
    if l.class_name == "Conv2D":
        return act(v_conv(x, l.w("kernel"), c["strides"], c["padding"]) + l.w("bias"), c["activation"])
    if l.class_name == "DepthwiseConv2D":
        y = v_depthwise(x, l.w("depthwise_kernel"), c["strides"], c["padding"]) + l.w("bias")
        return act(y, c["activation"])
    if l.class_name == "SeparableConv2D":
        y = v_depthwise(x, l.w("depthwise_kernel"), c["strides"], c["padding"])
        y = v_conv(y, l.w("pointwise_kernel"), [1, 1], "valid") + l.w("bias")
        return act(y, c["activation"])
    if l.class_name == "ReLU":
        y = np.where(x >= c["threshold"], x, c["negative_slope"] * (x - c["threshold"]))
        return y if c["max_value"] is None else np.minimum(y, c["max_value"])
    if l.class_name == "LeakyReLU":
        return np.where(x > 0, x, c["alpha"] * x)
    if l.class_name == "AveragePooling2D":
        return v_pool(x, c["pool_size"], c["strides"], c["padding"], "avg")
    if l.class_name == "MaxPooling2D":
        return v_pool(x, c["pool_size"], c["strides"], c["padding"], "max")
    if l.class_name == "Concatenate":
        return np.concatenate(ins, axis=c["axis"])
    if l.class_name == "Add":
        return sum(ins[1:], ins[0])
    if l.class_name == "BatchNormalization":
        return (l.w("gamma") * (x - l.w("moving_mean")) / np.sqrt(l.w("moving_variance") + c["epsilon"])
                + l.w("beta"))
    if l.class_name == "Flatten":
        return x.reshape(-1)
    if l.class_name == "Reshape":
        return x.reshape(c["target_shape"])
    if l.class_name == "Dropout":
        return x
    if l.class_name == "Dense":
        return act(x @ l.w("kernel") + l.w("bias"), c["activation"])
    raise ValueError(l.class_name)


# --------------------------------------------------------------------------
# Reference 2: scalar Python loops, explicit bounds checks, no padded arrays
# --------------------------------------------------------------------------

def s_offsets(size, k, s, padding):
    """Output size and the top/left offset of the first window."""
    if padding == "valid":
        return (size - k) // s + 1, 0
    out = (size + s - 1) // s
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2


def s_conv_like(x, k, s, padding, cout, term):
    """out[oy, ox, o] = sum over in-range (i, j, c) of term(o, i, j, c, x[y, x, c])."""
    H, W, C = x.shape
    oh, top = s_offsets(H, k[0], s[0], padding)
    ow, left = s_offsets(W, k[1], s[1], padding)
    out = np.zeros((oh, ow, cout))
    for oy in range(oh):
        for ox in range(ow):
            for o in range(cout):
                acc = 0.0
                for i in range(k[0]):
                    yy = oy * s[0] + i - top
                    if yy < 0 or yy >= H:
                        continue
                    for j in range(k[1]):
                        xx = ox * s[1] + j - left
                        if xx < 0 or xx >= W:
                            continue
                        acc += term(o, i, j, x[yy, xx])
                out[oy, ox, o] = acc
    return out


def s_conv(x, kernel, s, padding):
    C = x.shape[2]
    kl = kernel.tolist()

    def term(o, i, j, px):
        return sum(float(px[c]) * kl[i][j][c][o] for c in range(C))

    return s_conv_like(x, kernel.shape[:2], s, padding, kernel.shape[3], term)


def s_depthwise(x, dk, s, padding):
    M = dk.shape[3]
    kl = dk.tolist()

    def term(o, i, j, px):
        c, m = divmod(o, M)
        return float(px[c]) * kl[i][j][c][m]

    return s_conv_like(x, dk.shape[:2], s, padding, x.shape[2] * M, term)


def s_pool(x, k, s, padding, kind):
    H, W, C = x.shape
    oh, top = s_offsets(H, k[0], s[0], padding)
    ow, left = s_offsets(W, k[1], s[1], padding)
    out = np.zeros((oh, ow, C))
    for oy in range(oh):
        for ox in range(ow):
            for c in range(C):
                vals = []
                for i in range(k[0]):
                    for j in range(k[1]):
                        yy, xx = oy * s[0] + i - top, ox * s[1] + j - left
                        if 0 <= yy < H and 0 <= xx < W:
                            vals.append(float(x[yy, xx, c]))
                out[oy, ox, c] = max(vals) if kind == "max" else sum(vals) / len(vals)
    return out


def s_map(x, f):
    out = np.zeros(x.shape)
    for ix in np.ndindex(x.shape):
        out[ix] = f(float(x[ix]), ix)
    return out


def s_act(x, name):
    if name == "linear":
        return x
    if name == "relu":
        return s_map(x, lambda v, ix: v if v > 0 else 0.0)
    if name == "softmax":
        m = max(x.tolist())
        e = [math.exp(v - m) for v in x.tolist()]
        return np.array([v / sum(e) for v in e])
    raise ValueError(name)


def s_bias(x, b):
    return s_map(x, lambda v, ix: v + float(b[ix[-1]]))


def s_layer(l, ins):
    c = l.config
    x = ins[0]
    if l.class_name == "ZeroPadding2D":
        (t, b), (le, r) = c["padding"]
        H, W, C = x.shape
        out = np.zeros((H + t + b, W + le + r, C))
        for y in range(H):
            for xx in range(W):
                for ch in range(C):
                    out[y + t, xx + le, ch] = x[y, xx, ch]
        return out
    if l.class_name == "Conv2D":
        return s_act(s_bias(s_conv(x, l.w("kernel"), c["strides"], c["padding"]), l.w("bias")), c["activation"])
    if l.class_name == "DepthwiseConv2D":
        y = s_bias(s_depthwise(x, l.w("depthwise_kernel"), c["strides"], c["padding"]), l.w("bias"))
        return s_act(y, c["activation"])
    if l.class_name == "SeparableConv2D":
        y = s_depthwise(x, l.w("depthwise_kernel"), c["strides"], c["padding"])
        y = s_bias(s_conv(y, l.w("pointwise_kernel"), [1, 1], "valid"), l.w("bias"))
        return s_act(y, c["activation"])
    if l.class_name == "ReLU":
        assert c["negative_slope"] == 0.0 and c["threshold"] == 0.0
        return s_map(x, lambda v, ix: min(max(v, 0.0), c["max_value"]))
    if l.class_name == "LeakyReLU":
        return s_map(x, lambda v, ix: v if v > 0 else c["alpha"] * v)
    if l.class_name == "AveragePooling2D":
        return s_pool(x, c["pool_size"], c["strides"], c["padding"], "avg")
    if l.class_name == "MaxPooling2D":
        return s_pool(x, c["pool_size"], c["strides"], c["padding"], "max")
    if l.class_name == "Concatenate":
        assert c["axis"] == -1
        H, W = x.shape[:2]
        chans = sum(t.shape[2] for t in ins)
        out = np.zeros((H, W, chans))
        for y in range(H):
            for xx in range(W):
                k = 0
                for t in ins:
                    for ch in range(t.shape[2]):
                        out[y, xx, k] = t[y, xx, ch]
                        k += 1
        return out
    if l.class_name == "Add":
        return s_map(x, lambda v, ix: sum(float(t[ix]) for t in ins))
    if l.class_name == "BatchNormalization":
        g, b, m, var = (l.w(n) for n in ("gamma", "beta", "moving_mean", "moving_variance"))
        eps = c["epsilon"]
        return s_map(x, lambda v, ix: g[ix[-1]] * (v - m[ix[-1]]) / math.sqrt(var[ix[-1]] + eps) + b[ix[-1]])
    if l.class_name in ("Flatten", "Reshape"):
        # NHWC: the flat index of (h, w, c) is (h * W + w) * C + c.
        flat = []
        if x.ndim == 3:
            H, W, C = x.shape
            for y in range(H):
                for xx in range(W):
                    for ch in range(C):
                        flat.append(float(x[y, xx, ch]))
        elif x.ndim == 2:
            for r in range(x.shape[0]):
                for q in range(x.shape[1]):
                    flat.append(float(x[r, q]))
        else:
            flat = [float(v) for v in x]
        out = np.array(flat)
        if l.class_name == "Reshape":
            t0, t1 = c["target_shape"]
            out2 = np.zeros((t0, t1))
            for r in range(t0):
                for q in range(t1):
                    out2[r, q] = flat[r * t1 + q]
            return out2
        return out
    if l.class_name == "Dropout":
        return x
    if l.class_name == "Dense":
        k = l.w("kernel")
        b = l.w("bias")
        y = np.array([sum(float(x[i]) * k[i, o] for i in range(k.shape[0])) + b[o] for o in range(k.shape[1])])
        return s_act(y, c["activation"])
    raise ValueError(l.class_name)


# --------------------------------------------------------------------------

def forward(layers, x, layer_fn):
    """Every layer's output by name (a Sequential model's first layer reads "input")."""
    outs = {"input": x}
    for l in layers:
        outs[l.name] = x if l.class_name == "InputLayer" else layer_fn(l, [outs[s] for s in l.inbound])
    del outs["input"]
    return outs, layers[-1].name


def make_input(h, w, c):
    rng = np.random.default_rng(INPUT_SEED)
    return rng.integers(0, 256, size=(h, w, c)).astype(np.float64) / 256.0


def check_semantics():
    """Hand-made cases for the conventions the reference relies on."""
    # 'same' on an even size with stride 2: the extra pixel is at the bottom/right.
    assert same_pads(12, 3, 2) == (0, 1) and same_pads(17, 3, 2) == (1, 1) and same_pads(9, 3, 1) == (1, 1)
    # 'same' average pooling of ones is ones (padding not counted); a corner of arange.
    a = np.arange(9.0).reshape(3, 3, 1)
    p = v_pool(a, [3, 3], [1, 1], "same", "avg")
    assert abs(p[0, 0, 0] - (0 + 1 + 3 + 4) / 4) < 1e-15, p[0, 0, 0]
    assert np.allclose(v_pool(np.ones((5, 4, 2)), [3, 3], [1, 1], "same", "avg"), 1.0)
    # max pooling of negatives with padding: -inf padding never wins.
    assert v_pool(-np.ones((3, 3, 1)), [2, 2], [2, 2], "same", "max").max() == -1.0
    # cross-correlation: a kernel with one 1 at (0, 0) picks the top-left neighbour.
    k = np.zeros((3, 3, 1, 1))
    k[0, 0, 0, 0] = 1.0
    y = v_conv(a, k, [1, 1], "same")
    assert y[1, 1, 0] == a[0, 0, 0] and y[2, 2, 0] == a[1, 1, 0] and y[0, 0, 0] == 0.0
    # depthwise channel order c * M + m.
    dk = np.zeros((1, 1, 2, 3))
    dk[0, 0, 1, 2] = 1.0
    z = v_depthwise(np.stack([np.zeros((2, 2)), np.ones((2, 2))], axis=-1), dk, [1, 1], "valid")
    assert z.shape == (2, 2, 6) and z[..., 5].min() == 1.0 and z[..., :5].max() == 0.0


def evaluate(name, rel, layers, x):
    outs, last = forward(layers, x, v_layer)
    outs2, _ = forward(layers, x, s_layer)
    worst = 0.0
    for l in layers:
        a, b = outs[l.name], outs2[l.name]
        assert a.shape == b.shape, (l.name, a.shape, b.shape)
        d = float(np.max(np.abs(a - b))) if a.size else 0.0
        worst = max(worst, d)
        assert d < 1e-12, (name, l.name, d)
    print("%s: vectorised and scalar references agree (max |diff| %.2e)" % (name, worst))
    for l in layers:
        a = outs[l.name]
        extra = ""
        if l.class_name in ("Conv2D", "DepthwiseConv2D", "Dense", "ReLU", "LeakyReLU"):
            extra = "  zero fraction %.2f" % float(np.mean(a == 0.0))
        print("  %-22s %-18s %-14s mean %+.6f  min %+.4f  max %+.4f%s"
              % (l.name, l.class_name, tuple(a.shape), a.mean(), a.min(), a.max(), extra))
    h, w, c = x.shape
    return {
        "name": name,
        "path": rel,
        "input_shape_nchw": [1, c, h, w],
        "input": [float(v) for v in x.transpose(2, 0, 1).ravel()],
        "output": [r8(v) for v in np.asarray(outs[last]).ravel()],
        "layer_means": {l.name: r8(outs[l.name].mean()) for l in layers},
        "layer_shapes_nhwc": {l.name: [1] + list(outs[l.name].shape) for l in layers},
    }


def main(argv):
    del argv
    check_semantics()
    models = []
    for name, rel, build in (("small_functional", FUNCTIONAL, functional_model),
                             ("small_sequential", SEQUENTIAL, sequential_model)):
        layers, config, training = build()
        write_h5(rel, layers, config, training)
        shape = config["config"]["layers"][0]["config"]["batch_input_shape"]
        x = make_input(shape[1], shape[2], shape[3])
        models.append(evaluate(name, rel, layers, x))
        print("wrote %s (%d bytes)" % (rel, os.path.getsize(path(rel))))
    fixture = {
        "generator": "xtask/python/keras_small.py: h5py-written Keras 2.2.4-layout models, independent "
                     "float64 numpy reference (no TensorFlow/Keras)",
        "note": "input is NCHW [1, C, H, W] row-major (the model's NHWC input transposed), values k/256; "
                "output and layer_means (whole-tensor mean of each Keras layer's output) are float64, "
                "8 significant digits; layer_shapes_nhwc are Keras (NHWC) shapes",
        "models": models,
    }
    with open(path(OUT), "w") as fh:
        json.dump(fixture, fh, indent=1)
        fh.write("\n")
    print("wrote %s (%d bytes)" % (OUT, os.path.getsize(path(OUT))))


if __name__ == "__main__":
    main(sys.argv[1:])
