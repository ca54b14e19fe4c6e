#!/usr/bin/env python3
"""Build real ONNX test models and onnxruntime reference outputs for actmax.

This script shares NO code with the Rust implementation in this repository.  It uses
only numpy, onnx (helper / numpy_helper / external_data_helper / checker) and
onnxruntime, and writes:

* ``models/efficientnet_lite0.onnx``: EfficientNet-Lite0 (opset 13, IR 7) whose
  weights are ONNX *external data* pointing into the existing
  ``models/efficientnet_lite0.safetensors`` (location relative to the .onnx file,
  absolute byte offset in the safetensors file, byte length), so the .onnx holds
  only the graph and a few small inline constants.  Input "input" [1,3,224,224]
  is the PREPROCESSED image ((x - 127) / 128 of RGB 0..255); output "logits" [1,1000].
* ``testdata/small_cnn.onnx``: a small random CNN (numpy seed 0, inline weights,
  opset 13) covering Conv (explicit pads, SAME_UPPER, dilations), Relu,
  LeakyRelu, MaxPool, Sigmoid, Tanh, Elu, Mul, Sub, Div, Constant, Concat,
  AveragePool, Pad, BatchNormalization, GlobalAveragePool, Flatten, MatMul,
  Add, Dropout, Identity and Softmax; one node has an empty name.
* ``testdata/clip_opset6.onnx``: Conv -> Clip(min=0, max=6 as ATTRIBUTES, the
  opset 6..10 form; the model is opset 10) -> GlobalAveragePool.
* ``testdata/onnx_reference.json``: onnxruntime outputs of the three models
  (graph optimisations disabled), deterministic inputs, and some intermediate
  activations.

Usage (paths relative to the repository root, two levels above this file)::

    .cache/venv/bin/python xtask/python/onnx_models.py

with a venv holding numpy, onnx and onnxruntime (see the README section).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SAFETENSORS = "models/efficientnet_lite0.safetensors"
EFFNET_ONNX = "models/efficientnet_lite0.onnx"
SMALL_ONNX = "testdata/small_cnn.onnx"
CLIP_ONNX = "testdata/clip_opset6.onnx"
SE_ONNX = "testdata/se_block.onnx"
COFFEE_PNG = "testdata/coffee.png"
OUT_JSON = "testdata/onnx_reference.json"
EFFNET_REFERENCE_JSON = "testdata/effnet_reference.json"  # float64 numpy fixture, for a cross-check

BN_EPS = 1e-3
CROP = 224


# --------------------------------------------------------------------------
# safetensors header (no safetensors package)
# --------------------------------------------------------------------------

def read_safetensors_header(p):
    """Return (data_start, {name: (dtype, shape, begin, end)}) with begin/end relative to data_start."""
    with open(p, "rb") as fh:
        (hlen,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(hlen))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), begin, end)
    return 8 + hlen, out


def read_safetensors_array(p, data_start, entry):
    dtype, shape, begin, end = entry
    assert dtype == "F32"
    with open(p, "rb") as fh:
        fh.seek(data_start + begin)
        raw = fh.read(end - begin)
    return np.frombuffer(raw, dtype="<f4").reshape(shape)


# --------------------------------------------------------------------------
# PNG decoding (8-bit RGB, non-interlaced), same approach as effnet_reference.py
# --------------------------------------------------------------------------

from refcommon import decode_png_rgb8, effnet_blocks as block_specs, path, r7, r7list, sha256  # noqa: E402


# --------------------------------------------------------------------------
# EfficientNet-Lite0 with external data into the safetensors file
# --------------------------------------------------------------------------

def tf_same_pads(size, k, stride):
    """ONNX pads [top, left, bottom, right] for TF-SAME on a square input; returns (pads, out)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    lo, hi = total // 2, total - total // 2
    return [lo, lo, hi, hi], out


def build_effnet():
    st_path = path(SAFETENSORS)
    data_start, entries = read_safetensors_header(st_path)
    used = set()
    initializers = []

    def ext(name):
        """An initializer whose bytes live in the safetensors file."""
        dtype, shape, begin, end = entries[name]
        assert dtype == "F32"
        t = TensorProto()
        t.name = name
        t.data_type = TensorProto.FLOAT
        t.dims.extend(shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", os.path.basename(SAFETENSORS)),
                           ("offset", str(data_start + begin)), ("length", str(end - begin))):
            entry = t.external_data.add()
            entry.key = key
            entry.value = value
        initializers.append(t)
        used.add(name)
        return name

    # Small inline constants, two encodings each for float and int64.
    initializers.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "relu6.min"))  # raw_data
    initializers.append(helper.make_tensor("relu6.max", TensorProto.FLOAT, [], [6.0], raw=False))  # float_data
    initializers.append(helper.make_tensor("flatten.gather_index", TensorProto.INT64, [], [0], raw=False))  # int64_data
    initializers.append(helper.make_tensor("flatten.unsqueeze_axes", TensorProto.INT64, [1], [0], raw=False))  # int64_data
    initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "flatten.minus_one"))  # raw_data

    nodes = []

    def node(op, inputs, name, **attrs):
        out = name + ".out"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(x, wname, name, stride, pads, group=1):
        k = entries[wname][1][2]
        return node("Conv", [x, ext(wname)], name, kernel_shape=[k, k], strides=[stride, stride],
                    pads=pads, dilations=[1, 1], group=group)

    def bn(x, prefix):
        ins = [x] + [ext(prefix + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        return node("BatchNormalization", ins, prefix, epsilon=BN_EPS, momentum=0.99)

    def relu6(x, name):
        return node("Clip", [x, "relu6.min", "relu6.max"], name)

    size = 224
    pads, size = tf_same_pads(size, 3, 2)
    x = conv("input", "_conv_stem.weight", "_conv_stem", 2, pads)
    x = relu6(bn(x, "_bn0"), "relu6_stem")
    for n, k, s, e, cin, cout in block_specs():
        pre = "_blocks.%d." % n
        inp = x
        if e != 1:
            x = conv(x, pre + "_expand_conv.weight", pre + "_expand_conv", 1, [0, 0, 0, 0])
            x = relu6(bn(x, pre + "_bn0"), pre + "relu6_0")
        pads, size = tf_same_pads(size, k, s)
        x = conv(x, pre + "_depthwise_conv.weight", pre + "_depthwise_conv", s, pads, group=cin * e)
        x = relu6(bn(x, pre + "_bn1"), pre + "relu6_1")
        x = conv(x, pre + "_project_conv.weight", pre + "_project_conv", 1, [0, 0, 0, 0])
        x = bn(x, pre + "_bn2")
        if s == 1 and cin == cout:
            x = node("Add", [x, inp], pre + "add")
    x = conv(x, "_conv_head.weight", "_conv_head", 1, [0, 0, 0, 0])
    x = relu6(bn(x, "_bn1"), "relu6_head")
    pooled = node("GlobalAveragePool", [x], "_avg_pooling")
    # Exporter-style flatten: x.view(x.size(0), -1)
    shp = node("Shape", [pooled], "flatten.Shape")
    n0 = node("Gather", [shp, "flatten.gather_index"], "flatten.Gather", axis=0)
    n1 = node("Unsqueeze", [n0, "flatten.unsqueeze_axes"], "flatten.Unsqueeze")
    cat = node("Concat", [n1, "flatten.minus_one"], "flatten.Concat", axis=0)
    flat = node("Reshape", [pooled, cat], "flatten.Reshape")
    nodes.append(helper.make_node("Gemm", [flat, ext("_fc.weight"), ext("_fc.bias")], ["logits"],
                                  name="_fc", transB=1, alpha=1.0, beta=1.0))

    unused = set(entries) - used
    if unused:
        raise SystemExit("safetensors tensors not used by the graph: %s" % sorted(unused))

    graph = helper.make_graph(
        nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        initializer=initializers,
    )
    graph.doc_string = ("EfficientNet-Lite0 (ImageNet-1k). Input: RGB 224x224 NCHW, already preprocessed "
                        "as (x - 127) / 128 with x in 0..255. Weights: external data in "
                        "efficientnet_lite0.safetensors.")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="actmax xtask/python/onnx_models.py", producer_version="1")
    model.ir_version = 7
    # actmax.* keys tell actmax's loader how an image becomes this graph's input.
    helper.set_model_props(model, {"preprocessing": "(x - 127) / 128, RGB, x in 0..255",
                                   "labels": "models/imagenet_classes.txt",
                                   "actmax.input_range": "0,255",
                                   "actmax.mean": "127",
                                   "actmax.std": "128",
                                   "actmax.channels": "rgb"})
    return model


# --------------------------------------------------------------------------
# Small CNN (inline weights) and the opset-10 Clip model
# --------------------------------------------------------------------------

def build_small_cnn():
    rng = np.random.default_rng(0)

    def he(shape, fan_in, gain=1.0):
        return (rng.standard_normal(shape) * gain * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = []

    def raw(name, a):  # raw_data encoding
        inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def typed(name, a):  # float_data / int64_data encoding
        a = np.asarray(a)
        dt = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}[a.dtype]
        inits.append(helper.make_tensor(name, dt, list(a.shape), a.ravel().tolist(), raw=False))
        return name

    N = helper.make_node
    nodes = [
        N("Conv", ["input", raw("conv1.weight", he((8, 3, 3, 3), 27)),
                   typed("conv1.bias", (rng.standard_normal(8) * 0.1).astype(np.float32))],
          ["conv1.out"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        N("Relu", ["conv1.out"], ["relu1.out"], name="relu1"),
        N("Conv", ["relu1.out", raw("conv2.weight", he((16, 8, 3, 3), 72)),
                   raw("conv2.bias", (rng.standard_normal(16) * 0.1).astype(np.float32))],
          ["conv2.out"], name="conv2", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        N("LeakyRelu", ["conv2.out"], ["lrelu.out"], name="lrelu", alpha=0.1),
        N("MaxPool", ["lrelu.out"], ["pool1.out"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        # no kernel_shape attribute (inferred from W), no bias
        N("Conv", ["pool1.out", typed("conv3.weight", he((12, 16, 3, 3), 144))], ["conv3.out"],
          name="conv3", dilations=[2, 2], pads=[2, 2, 2, 2]),
        N("Sigmoid", ["conv3.out"], ["sig.out"], name=""),  # EMPTY node name on purpose
        N("Tanh", ["conv3.out"], ["tanh.out"], name="tanh"),
        N("Elu", ["conv3.out"], ["elu.out"], name="elu", alpha=0.5),
        N("Constant", [], ["divisor"], name="divisor_const",
          value=numpy_helper.from_array(rng.uniform(0.5, 2.0, (1, 12, 1, 1)).astype(np.float32), "divisor_value")),
        N("Mul", ["sig.out", "tanh.out"], ["mul.out"], name="mul"),
        N("Sub", ["elu.out", "sig.out"], ["sub.out"], name="sub"),
        N("Div", ["tanh.out", "divisor"], ["div.out"], name="div"),
        N("Concat", ["mul.out", "sub.out", "div.out"], ["cat.out"], name="cat", axis=1),
        N("AveragePool", ["cat.out"], ["apool.out"], name="apool", kernel_shape=[3, 3], strides=[1, 1],
          pads=[1, 1, 1, 1], count_include_pad=0),
        N("Pad", ["apool.out", typed("pad.pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)),
                  raw("pad.value", np.array(0.25, dtype=np.float32))], ["pad.out"], name="pad", mode="constant"),
        N("BatchNormalization", ["pad.out",
                                 typed("bn.scale", rng.uniform(0.5, 1.5, 36).astype(np.float32)),
                                 raw("bn.bias", (rng.standard_normal(36) * 0.1).astype(np.float32)),
                                 raw("bn.mean", (rng.standard_normal(36) * 0.1).astype(np.float32)),
                                 typed("bn.var", rng.uniform(0.05, 0.5, 36).astype(np.float32))],
          ["bn.out"], name="bn"),  # default epsilon 1e-5
        N("GlobalAveragePool", ["bn.out"], ["gap.out"], name="gap"),
        N("Flatten", ["gap.out"], ["flat.out"], name="flatten", axis=1),
        N("MatMul", ["flat.out", raw("fc.weight", (rng.standard_normal((36, 10)) * 0.5).astype(np.float32))],
          ["fc.mm"], name="fc.matmul"),
        N("Add", ["fc.mm", typed("fc.bias", (rng.standard_normal(10) * 0.5).astype(np.float32))],
          ["fc.out"], name="fc.add"),
        N("Dropout", ["fc.out", raw("dropout.ratio", np.array(0.3, dtype=np.float32))], ["drop.out"],
          name="dropout"),
        N("Identity", ["drop.out"], ["logits"], name="identity"),
        N("Softmax", ["logits"], ["probs"], name="softmax"),  # opset-13 default axis -1
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="actmax xtask/python/onnx_models.py", producer_version="1")
    model.ir_version = 7
    return model


def build_clip_opset10():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((4, 3, 3, 3)) * 2.0).astype(np.float32)
    b = np.array([-1.0, 0.5, 2.0, 4.0], dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["conv.out"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["conv.out"], ["clip.out"], name="relu6", min=0.0, max=6.0),
        helper.make_node("GlobalAveragePool", ["clip.out"], ["output"], name="gap"),
    ]
    graph = helper.make_graph(
        nodes, "clip_opset10",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 1, 1])],
        initializer=[numpy_helper.from_array(w, "conv.weight"),
                     helper.make_tensor("conv.bias", TensorProto.FLOAT, [4], b.tolist(), raw=False)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)],
                              producer_name="actmax xtask/python/onnx_models.py", producer_version="1")
    model.ir_version = 5
    return model


def build_se_block():
    """Squeeze-excite and MobileNetV3 patterns: ReduceMean gates, HardSigmoid, HardSwish,
    Sum, a broadcasting Mul of [N,C,H,W] by [N,C,1,1], and a Squeeze before the classifier."""
    rng = np.random.default_rng(3)
    f = lambda *s: (rng.standard_normal(s) * 0.4).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("stem.weight", f(8, 3, 3, 3)), ("stem.bias", f(8)),
        ("se.reduce.weight", f(4, 8, 1, 1)), ("se.reduce.bias", f(4)),
        ("se.expand.weight", f(8, 4, 1, 1)), ("se.expand.bias", f(8)),
        ("fc.weight", f(5, 8)), ("fc.bias", f(5)),
    ]] + [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "squeeze_axes")]
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "stem.weight", "stem.bias"], ["stem.out"], name="stem", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1], strides=[2, 2]),
        n("HardSwish", ["stem.out"], ["hswish.out"], name="hswish"),
        n("ReduceMean", ["hswish.out"], ["se.squeeze.out"], name="se.squeeze", axes=[2, 3], keepdims=1),
        n("Conv", ["se.squeeze.out", "se.reduce.weight", "se.reduce.bias"], ["se.reduce.out"], name="se.reduce",
          kernel_shape=[1, 1]),
        n("Relu", ["se.reduce.out"], ["se.relu.out"], name="se.relu"),
        n("Conv", ["se.relu.out", "se.expand.weight", "se.expand.bias"], ["se.expand.out"], name="se.expand",
          kernel_shape=[1, 1]),
        n("HardSigmoid", ["se.expand.out"], ["se.gate.out"], name="se.gate", alpha=0.2, beta=0.5),
        n("Mul", ["hswish.out", "se.gate.out"], ["se.excite.out"], name="se.excite"),
        n("Sum", ["se.excite.out", "hswish.out", "stem.out"], ["residual.out"], name="residual"),
        n("GlobalAveragePool", ["residual.out"], ["gap.out"], name="gap"),
        n("Squeeze", ["gap.out", "squeeze_axes"], ["squeeze.out"], name="squeeze"),
        n("Gemm", ["squeeze.out", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "se_block",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              producer_name="actmax xtask/python/onnx_models.py", producer_version="1")
    model.ir_version = 7
    return model


# --------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------

def session(model_path, optimize=False):
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def run_with_intermediates(model_path, feeds, extra, companion=None):
    """Run a copy of the model with `extra` value names added as graph outputs.

    The copy lives in a temporary directory; `companion` (an external-data file) is
    copied beside it so relative external-data locations still resolve.
    """
    model = onnx.load(model_path, load_external_data=False)
    for name in extra:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, os.path.basename(model_path))
        onnx.save(model, p)
        if companion is not None:
            # a copy, not a symlink: onnxruntime rejects external data resolving outside the model dir
            shutil.copyfile(companion, os.path.join(tmp, os.path.basename(companion)))
        sess = session(p)
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(names, feeds)
    return dict(zip(names, outs))


def describe_nodes(model):
    return [(n.name, n.op_type) for n in model.graph.node]


def main():
    results = []

    # ---- EfficientNet-Lite0 ------------------------------------------------
    eff = build_effnet()
    eff_path = path(EFFNET_ONNX)
    onnx.save(eff, eff_path)
    onnx.checker.check_model(eff_path, full_check=True)
    rgb = decode_png_rgb8(path(COFFEE_PNG))
    h, w, _ = rgb.shape
    r0, c0 = (h - CROP) // 2, (w - CROP) // 2
    crop = rgb[r0:r0 + CROP, c0:c0 + CROP, :].astype(np.float32).transpose(2, 0, 1)
    x = ((crop - 127.0) / 128.0)[None].astype(np.float32)  # exact in f32
    extra = ["relu6_stem.out", "_blocks.0._bn2.out", "_blocks.15._bn2.out", "relu6_head.out"]
    outs = run_with_intermediates(eff_path, {"input": x}, extra, companion=path(SAFETENSORS))
    logits = outs["logits"][0].astype(np.float64)
    opt = session(eff_path, optimize=True).run(["logits"], {"input": x})[0][0]
    print("effnet: ORT optimised vs unoptimised max |diff| %.3g" % np.abs(opt - logits).max())
    top5 = np.argsort(-logits, kind="stable")[:5]
    print("effnet top5:", [(int(i), float(logits[i])) for i in top5])
    with open(path(EFFNET_REFERENCE_JSON)) as fh:
        ref = json.load(fh)
    np_diff = float(np.abs(np.array(ref["logits"]) - logits).max())
    print("effnet: ORT vs float64 numpy fixture (%s) max |diff| %.3g" % (EFFNET_REFERENCE_JSON, np_diff))
    if np_diff > 1e-3 or int(top5[0]) != 967:
        raise SystemExit("effnet ONNX disagrees with the numpy reference")
    inter = []
    for name in extra:
        a = outs[name]
        inter.append({"value": name, "shape": list(a.shape), "reduction": "mean over N,H,W per channel",
                      "values": r7list(a.astype(np.float64).mean(axis=(0, 2, 3)))})
    results.append({
        "name": "efficientnet_lite0",
        "path": EFFNET_ONNX,
        "sha256": sha256(eff_path),
        "opset": 13,
        "ir_version": eff.ir_version,
        "external_data": os.path.basename(SAFETENSORS),
        "input_name": "input",
        "input_shape": [1, 3, CROP, CROP],
        "input": {
            "kind": "png_crop",
            "png": COFFEE_PNG,
            "crop_top": int(r0), "crop_left": int(c0), "size": CROP,
            "layout": "NCHW, RGB",
            "preprocess": "(x - 127) / 128 with x the 0..255 pixel value (exact in f32)",
            "sum": r7(float(x.astype(np.float64).sum())),
            "first8": r7list(x.ravel()[:8]),
        },
        "output_name": "logits",
        "output_shape": [1, 1000],
        "output": r7list(logits),
        "top5": [[int(i), r7(logits[i])] for i in top5],
        "max_abs_diff_vs_numpy_float64": r7(np_diff),
        "intermediates": inter,
    })

    # ---- small CNN and Clip (attribute form) -------------------------------
    for name, builder, rel, in_shape, out_name, extra in [
        # (value, reduction): "none" stores the whole tensor, "channel_mean" the mean over N,H,W per channel
        ("small_cnn", build_small_cnn, SMALL_ONNX, (1, 3, 32, 32), "probs",
         [("conv1.out", "channel_mean"), ("relu1.out", "channel_mean"), ("conv2.out", "channel_mean"),
          ("pool1.out", "channel_mean"), ("conv3.out", "channel_mean"), ("sig.out", "channel_mean"),
          ("divisor", "none"), ("cat.out", "channel_mean"), ("apool.out", "channel_mean"),
          ("pad.out", "channel_mean"), ("bn.out", "channel_mean"), ("gap.out", "none"), ("logits", "none")]),
        ("clip_opset6", build_clip_opset10, CLIP_ONNX, (1, 3, 8, 8), "output",
         [("conv.out", "none"), ("clip.out", "none")]),
        ("se_block", build_se_block, SE_ONNX, (1, 3, 16, 16), "logits",
         [("hswish.out", "channel_mean"), ("se.squeeze.out", "none"), ("se.gate.out", "none"),
          ("se.excite.out", "channel_mean"), ("residual.out", "channel_mean")]),
    ]:
        model = builder()
        p = path(rel)
        onnx.save(model, p)
        onnx.checker.check_model(p, full_check=True)
        rng = np.random.default_rng(1)
        # multiples of 1/256: exact in f32 and printed exactly in JSON
        xin = (np.round(rng.standard_normal(in_shape) * 256.0) / 256.0).astype(np.float32)
        outs = run_with_intermediates(p, {"input": xin}, [v for v, _ in extra])
        y = outs[out_name]
        opt = session(p, optimize=True).run([out_name], {"input": xin})[0]
        print("%s: output %s, optimised vs unoptimised max |diff| %.3g"
              % (name, y.ravel()[:6], np.abs(opt - y).max()))
        inter = []
        for v, how in extra:
            a = outs[v].astype(np.float64)
            if how == "channel_mean":
                inter.append({"value": v, "shape": list(a.shape), "reduction": "mean over N,H,W per channel",
                              "values": r7list(a.mean(axis=(0, 2, 3)))})
            else:
                inter.append({"value": v, "shape": list(a.shape), "reduction": "none", "values": r7list(a)})
        results.append({
            "name": name,
            "path": rel,
            "sha256": sha256(p),
            "opset": model.opset_import[0].version,
            "ir_version": model.ir_version,
            "input_name": "input",
            "input_shape": list(in_shape),
            "input": {"kind": "inline", "generator": "numpy default_rng(1).standard_normal rounded to "
                                                   "multiples of 1/256 (exact in f32)",
                      "values": [float(v) for v in xin.ravel()]},
            "output_name": out_name,
            "output_shape": list(y.shape),
            "output": r7list(y),
            "intermediates": inter,
        })
        if name == "clip_opset6":
            c = outs["conv.out"]
            print("clip model: conv.out range %.3f..%.3f (below 0: %d, above 6: %d)"
                  % (c.min(), c.max(), (c < 0).sum(), (c > 6).sum()))

    fixture = {
        "generator": "xtask/python/onnx_models.py",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
                     "onnxruntime": ort.__version__},
        "runtime": "onnxruntime CPUExecutionProvider, graph optimisations disabled, 1 thread, float32",
        "rounding": "outputs and intermediates rounded to 7 significant digits; inputs exact",
        "models": results,
    }
    with open(path(OUT_JSON), "w") as fh:
        json.dump(fixture, fh, separators=(",", ":"))
        fh.write("\n")
    for rel in (EFFNET_ONNX, SMALL_ONNX, CLIP_ONNX, SE_ONNX, OUT_JSON):
        print("wrote %s (%d bytes)" % (rel, os.path.getsize(path(rel))))
    print("effnet nodes:", len(eff.graph.node))


if __name__ == "__main__":
    sys.exit(main())
