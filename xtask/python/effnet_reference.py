#!/usr/bin/env python3
"""Independent float64 numpy reference for EfficientNet-Lite0.

This script shares NO code with the Rust implementation in this repository.
It exists to produce a committed fixture (testdata/effnet_reference.json)
that the Rust forward pass and gradient code can be checked against.

Everything is done from first principles with the Python standard library,
numpy and Pillow:

* the legacy (non-zip) ``torch.save`` checkpoint is parsed with a
  ``pickle.Unpickler`` subclass that stubs out the torch classes, so torch is
  not needed;
* the PNG is decoded by Pillow (lossless: the file's own pixels);
* the network is evaluated in float64, NCHW, with TensorFlow "SAME" padding;
  convolutions use matmul (1x1), per-tap shifted sums (depthwise) and im2col
  (the 3x3 stem);
* gradients of one logit with respect to input pixels (0..255 units, before
  preprocessing) are central finite differences, checked against the two
  one-sided differences so that no ReLU6 kink lies inside the step.

Usage (paths are relative to the repository root, i.e. two levels above this
file)::

    python3 xtask/python/effnet_reference.py [PTH] [PNG] [OUT]

defaults: .cache/efficientnet-lite0-57934424.pth, testdata/coffee.png,
testdata/effnet_reference.json.
"""

import os

# Keep BLAS single-threaded; must be set before numpy is imported.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import collections  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_PTH = ".cache/efficientnet-lite0-57934424.pth"
DEFAULT_PNG = "testdata/coffee.png"
DEFAULT_OUT = "testdata/effnet_reference.json"

CROP = 224
BN_EPS = 1e-3
GRAD_CLASS = 967  # ImageNet "espresso"
# Finite-difference step in 0..255 pixel units.  The network is piecewise
# linear in its input, so a central difference is exact (up to rounding) as
# long as no ReLU6 kink is crossed within +-step.  With step 1e-2 kinks ARE
# crossed at several of the positions below (e.g. (1,0,100) gives 1.95e-5 at
# 1e-2 but 2.91e-5 at <= 1e-3; (2,57,141) still crosses one at 1e-3), so
# 1e-4 is used; rounding error there is ~1e-6 relative.
GRAD_STEP = 1e-4
# Largest tolerated relative disagreement between the forward and backward
# one-sided differences (a kink detector; see main()).
GRAD_LINEARITY_TOL = 1e-4
# (channel, row, col) positions in the 224x224 crop; the first four touch
# borders/corners, the rest are interior.
# Candidate positions, borders first; the first GRAD_COUNT that are ROBUST are kept.
GRAD_CANDIDATES = [
    (0, 0, 0), (1, 223, 223), (2, 0, 223), (0, 223, 0), (1, 0, 100), (0, 112, 112),
    (2, 57, 141), (1, 150, 60), (2, 200, 30), (1, 31, 190), (0, 90, 170), (2, 140, 99),
    (1, 12, 12), (0, 180, 205), (2, 111, 5), (1, 70, 222),
]
GRAD_COUNT = 8
# A position is kept only if no ReLU6 kink lies within +-ROBUST_STEP pixels of it, so an
# implementation in float32 (whose pre-activations differ from these by ~1e-6 relative)
# sits on the same linear piece and must get the same gradient.
ROBUST_STEP = 1e-2



# --------------------------------------------------------------------------
# Legacy torch.save checkpoint parsing (no torch required)
# --------------------------------------------------------------------------

class _StorageType:
    """Stand-in for torch.FloatStorage / torch.LongStorage / ..."""

    def __init__(self, name, dtype):
        self.name = name
        self.dtype = np.dtype(dtype)


_STORAGE_TYPES = {
    "FloatStorage": _StorageType("FloatStorage", "<f4"),
    "DoubleStorage": _StorageType("DoubleStorage", "<f8"),
    "HalfStorage": _StorageType("HalfStorage", "<f2"),
    "LongStorage": _StorageType("LongStorage", "<i8"),
    "IntStorage": _StorageType("IntStorage", "<i4"),
}


class _StorageRef:
    """A storage referenced from the pickle; its data is filled in later."""

    def __init__(self, stype, key, location, numel, view_metadata):
        if view_metadata is not None:
            raise ValueError("storage views are not supported (key %r)" % key)
        self.stype = stype
        self.key = key
        self.location = location
        self.numel = numel
        self.data = None


class _TensorRef:
    """Result of torch._utils._rebuild_tensor_v2, materialised later."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def to_numpy(self):
        flat = self.storage.data
        if len(self.size) == 0:
            return np.array(flat[self.offset], dtype=np.float64)
        # Bounds check of the furthest element addressed by size/stride.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if last >= flat.shape[0]:
            raise ValueError("tensor view exceeds its storage")
        base = flat[self.offset:]
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base, shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False
        )
        return np.array(view, dtype=np.float64)  # copy into contiguous float64


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError("unexpected global %s.%s" % (module, name))

    def __init__(self, f, storages):
        super().__init__(f)
        self._storages = storages

    def persistent_load(self, pid):
        tag, stype, key, location, numel, view_metadata = pid
        if tag != "storage":
            raise pickle.UnpicklingError("unexpected persistent id %r" % (pid,))
        if key not in self._storages:
            self._storages[key] = _StorageRef(stype, key, location, numel, view_metadata)
        return self._storages[key]


def load_legacy_state_dict(path):
    """Return an OrderedDict name -> float64 ndarray from a legacy .pth."""
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise ValueError("not a legacy torch.save file (magic %r)" % magic)
        protocol = pickle.load(f)
        if protocol != 1001:
            raise ValueError("unexpected protocol version %r" % protocol)
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError("big-endian checkpoint not supported")
        storages = {}
        state = _LegacyUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            ref = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            if count != ref.numel:
                raise ValueError("storage %s: %d elements, expected %d" % (key, count, ref.numel))
            nbytes = count * ref.stype.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError("truncated storage %s" % key)
            ref.data = np.frombuffer(raw, dtype=ref.stype.dtype)
        if f.read(1):
            raise ValueError("trailing bytes after the last storage")
    return collections.OrderedDict((k, v.to_numpy()) for k, v in state.items())


# --------------------------------------------------------------------------
# PNG decoding (8-bit RGB, non-interlaced only)
# --------------------------------------------------------------------------

from refcommon import REPO_ROOT, decode_png_rgb8, effnet_blocks as block_specs  # noqa: E402


# --------------------------------------------------------------------------
# Network primitives (float64, NCHW, TensorFlow SAME padding)
# --------------------------------------------------------------------------

def same_pad(x, k, stride):
    """Zero-pad H and W of x [N,C,H,W] for TF-SAME; returns (padded, OH, OW)."""
    _, _, h, w = x.shape
    pads = []
    outs = []
    for size in (h, w):
        out = -(-size // stride)  # ceil
        total = max((out - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
        outs.append(out)
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    return xp, outs[0], outs[1]


def conv2d_dense(x, w, stride):
    """Dense conv, w [O,C,k,k] (OIHW), no bias, TF-SAME padding, via im2col."""
    o, c, k, k2 = w.shape
    assert k == k2 and x.shape[1] == c
    n = x.shape[0]
    if k == 1 and stride == 1:
        h, wd = x.shape[2:]
        y = np.matmul(w.reshape(o, c), x.reshape(n, c, h * wd))
        return y.reshape(n, o, h, wd)
    xp, oh, ow = same_pad(x, k, stride)
    s0, s1, s2, s3 = xp.strides
    # windows[n, c, i, j, oh, ow] = xp[n, c, oh*stride + i, ow*stride + j]
    windows = np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, k, k, oh, ow), strides=(s0, s1, s2, s3, s2 * stride, s3 * stride),
        writeable=False,
    )
    cols = np.ascontiguousarray(windows).reshape(n, c * k * k, oh * ow)
    y = np.matmul(w.reshape(o, c * k * k), cols)
    return y.reshape(n, o, oh, ow)


def conv2d_depthwise(x, w, stride):
    """Depthwise conv, w [C,1,k,k], groups=C, no bias, TF-SAME padding."""
    c, one, k, _ = w.shape
    assert one == 1 and x.shape[1] == c
    xp, oh, ow = same_pad(x, k, stride)
    y = np.zeros((x.shape[0], c, oh, ow))
    span_h = (oh - 1) * stride + 1
    span_w = (ow - 1) * stride + 1
    for i in range(k):
        for j in range(k):
            tap = xp[:, :, i:i + span_h:stride, j:j + span_w:stride]
            y += w[None, :, 0, i, j, None, None] * tap
    return y


def batch_norm(x, p, prefix):
    """Inference BN: (x - mean) / sqrt(var + eps) * weight + bias."""
    mean = p[prefix + ".running_mean"]
    var = p[prefix + ".running_var"]
    scale = p[prefix + ".weight"] / np.sqrt(var + BN_EPS)
    shift = p[prefix + ".bias"] - mean * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def forward(p, img):
    """Logits [N,1000] for img [N,3,224,224] float64 in 0..255 (RGB)."""
    x = (img - 127.0) / 128.0
    x = relu6(batch_norm(conv2d_dense(x, p["_conv_stem.weight"], 2), p, "_bn0"))
    for n, k, s, e, cin, cout in block_specs():
        pre = "_blocks.%d." % n
        inp = x
        if e != 1:
            x = conv2d_dense(x, p[pre + "_expand_conv.weight"], 1)
            x = relu6(batch_norm(x, p, pre + "_bn0"))
        w_dw = p[pre + "_depthwise_conv.weight"]
        assert w_dw.shape == (cin * e, 1, k, k), (n, w_dw.shape)
        x = relu6(batch_norm(conv2d_depthwise(x, w_dw, s), p, pre + "_bn1"))
        x = batch_norm(conv2d_dense(x, p[pre + "_project_conv.weight"], 1), p, pre + "_bn2")
        assert x.shape[1] == cout
        if s == 1 and cin == cout:
            x = x + inp
    x = relu6(batch_norm(conv2d_dense(x, p["_conv_head.weight"], 1), p, "_bn1"))
    pooled = x.mean(axis=(2, 3))  # [N,1280]
    return pooled @ p["_fc.weight"].T + p["_fc.bias"][None, :]


def check_params_used(p):
    """Every non-counter tensor in the checkpoint must be consumed by forward()."""
    expected = {"_conv_stem.weight", "_fc.weight", "_fc.bias", "_conv_head.weight"}
    bn = ["_bn0", "_bn1"]
    for n, _, _, e, _, _ in block_specs():
        pre = "_blocks.%d." % n
        expected |= {pre + "_depthwise_conv.weight", pre + "_project_conv.weight"}
        bn += [pre + "_bn1", pre + "_bn2"]
        if e != 1:
            expected.add(pre + "_expand_conv.weight")
            bn.append(pre + "_bn0")
    for b in bn:
        expected |= {b + s for s in (".weight", ".bias", ".running_mean", ".running_var")}
    present = {k for k in p if not k.endswith("num_batches_tracked")}
    if present != expected:
        raise ValueError("checkpoint keys mismatch: missing %s, unused %s"
                         % (sorted(expected - present), sorted(present - expected)))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def resolve(arg, default):
    path = arg if arg is not None else default
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def main(argv):
    args = argv[1:] + [None] * (3 - len(argv[1:]))
    pth, png, out = (resolve(a, d) for a, d in zip(args[:3], (DEFAULT_PTH, DEFAULT_PNG, DEFAULT_OUT)))
    t0 = time.time()

    params = load_legacy_state_dict(pth)
    check_params_used(params)

    rgb = decode_png_rgb8(png)
    height, width, _ = rgb.shape
    r0, c0 = (height - CROP) // 2, (width - CROP) // 2
    crop = rgb[r0:r0 + CROP, c0:c0 + CROP, :].astype(np.float64).transpose(2, 0, 1)
    crop = np.ascontiguousarray(crop)  # [3,224,224], RGB, 0..255
    t_load = time.time()

    logits = forward(params, crop[None])[0]
    t_fwd = time.time()
    top5 = np.argsort(-logits, kind="stable")[:5]
    print("top5:", [(int(i), float(logits[i])) for i in top5])
    if int(top5[0]) != GRAD_CLASS:
        raise SystemExit("sanity check failed: top-1 is %d, expected %d" % (top5[0], GRAD_CLASS))

    # Central differences.  The network is piecewise linear in its input
    # (affine convs/BN, ReLU6, average pool, linear), so the central
    # difference is exact up to rounding unless a ReLU6 kink is crossed within
    # +-h.  The one-sided differences come for free and detect that case: if
    # a single kink lies within +-h the central value is off by at most half
    # of |fwd - bwd|, so requiring fwd ~= bwd bounds the error.
    base = float(logits[GRAD_CLASS])

    def one_sided(pos, step):
        probe = np.repeat(crop[None], 2, axis=0)
        probe[0][pos] += step
        probe[1][pos] -= step
        fp, fm = forward(params, probe)[:, GRAD_CLASS]
        return (fp - base) / step, (base - fm) / step

    positions = []
    for pos in GRAD_CANDIDATES:
        fwd_d, bwd_d = one_sided(pos, ROBUST_STEP)
        rel = abs(fwd_d - bwd_d) / max(abs(fwd_d + bwd_d) / 2, 1e-12)
        print("robustness %r at +-%g: rel %.1e%s" % (pos, ROBUST_STEP, rel, "" if rel <= GRAD_LINEARITY_TOL else "  (kink nearby: skipped)"))
        if rel <= GRAD_LINEARITY_TOL:
            positions.append(pos)
        if len(positions) == GRAD_COUNT:
            break
    if len(positions) < GRAD_COUNT:
        raise SystemExit("only %d robust positions among the candidates" % len(positions))
    GRAD_POSITIONS = positions
    batch = np.repeat(crop[None], 2 * len(GRAD_POSITIONS), axis=0)
    for i, (c, h, w) in enumerate(GRAD_POSITIONS):
        batch[2 * i, c, h, w] += GRAD_STEP
        batch[2 * i + 1, c, h, w] -= GRAD_STEP
    f = np.empty(batch.shape[0])
    for start in range(0, batch.shape[0], 4):  # small chunks bound peak memory
        f[start:start + 4] = forward(params, batch[start:start + 4])[:, GRAD_CLASS]
    grads = []
    max_rel_disagreement = 0.0
    for i, (c, h, w) in enumerate(GRAD_POSITIONS):
        fp, fm = f[2 * i], f[2 * i + 1]
        central = (fp - fm) / (2 * GRAD_STEP)
        fwd_d = (fp - base) / GRAD_STEP
        bwd_d = (base - fm) / GRAD_STEP
        rel = abs(fwd_d - bwd_d) / max(abs(central), 1e-12)
        max_rel_disagreement = max(max_rel_disagreement, rel)
        print("grad c=%d h=%3d w=%3d: central %+.12e  fwd %+.12e  bwd %+.12e  rel %.1e"
              % (c, h, w, central, fwd_d, bwd_d, rel))
        if rel > GRAD_LINEARITY_TOL:
            raise SystemExit("position %r: one-sided differences disagree (rel %.1e); a ReLU6 "
                             "kink lies within the step, use a smaller GRAD_STEP" % ((c, h, w), rel))
        grads.append({"c": c, "h": h, "w": w, "value": float(central)})
    t_grad = time.time()

    with open(png, "rb") as fh:
        png_sha = hashlib.sha256(fh.read()).hexdigest()
    with open(pth, "rb") as fh:
        pth_sha = hashlib.sha256(fh.read()).hexdigest()
    fixture = {
        "source": (
            "xtask/python/effnet_reference.py: independent float64 numpy EfficientNet-Lite0 "
            "(TF-SAME padding, BN eps 1e-3, ReLU6, preprocessing (x-127)/128) using %s (sha256 %s) "
            "on %s (sha256 %s); grads are central finite differences of logit %d w.r.t. 0..255 "
            "pixels, step grad_step (max relative fwd/bwd one-sided disagreement %.1e, "
            "i.e. no ReLU6 kink crossed); positions kept only with no kink within +-%g pixels"
            % (os.path.basename(pth), pth_sha, os.path.basename(png), png_sha,
               GRAD_CLASS, max_rel_disagreement, ROBUST_STEP)
        ),
        "input": "%s centre crop %dx%d rows %d..%d cols %d..%d, RGB 0..255, no resampling"
                 % (os.path.basename(png), CROP, CROP, r0, r0 + CROP, c0, c0 + CROP),
        "crop_top": int(r0),
        "crop_left": int(c0),
        "logits": [float(v) for v in logits],
        "top5": [[int(i), float(logits[i])] for i in top5],
        "grad_class": GRAD_CLASS,
        "grad_step": GRAD_STEP,
        "robust_step": ROBUST_STEP,
        "grad": grads,
    }
    with open(out, "w") as fh:
        json.dump(fixture, fh, separators=(",", ":"))
        fh.write("\n")
    print("wrote %s" % out)
    print("timing: load+decode %.2fs, forward %.2fs, %d FD forwards %.2fs, total %.2fs"
          % (t_load - t0, t_fwd - t_load, batch.shape[0], t_grad - t_fwd, time.time() - t0))


if __name__ == "__main__":
    main(sys.argv)
