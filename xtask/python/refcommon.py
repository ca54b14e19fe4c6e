"""What the reference scripts share: repository paths, checksums, the fixtures' float
rounding, EfficientNet-Lite0's stage table, and PNG reading (Pillow; none uses actmax)."""

import hashlib
import os

import numpy as np

REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand, in_channels, out_channels).
EFFNET_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def path(rel):
    """`rel` inside the repository."""
    return os.path.join(REPO_ROOT, rel)


def sha256(p):
    with open(p, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def r7(x):
    """Round to 7 significant digits (as a Python float) for the JSON."""
    return float("%.7g" % x)


def r7list(a):
    return [r7(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def effnet_blocks():
    """Yield (index, kernel, stride, expand, in, out) for the 16 MBConv blocks."""
    idx = 0
    for repeats, k, s, e, cin, cout in EFFNET_STAGES:
        for r in range(repeats):
            yield idx, k, (s if r == 0 else 1), e, (cin if r == 0 else cout), cout
            idx += 1


def decode_png_rgb8(p):
    """An 8-bit RGB image as a [H, W, 3] uint8 array (Pillow, pinned in the venv; PNG is
    lossless, so these are the file's own pixels)."""
    from PIL import Image

    with Image.open(p) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
