#!/usr/bin/env python3
"""Small weight files written by the real writers, as seeds for `cargo xtask fuzz`.

torch.save (legacy and zip serialization) and numpy's savez / savez_compressed write
a few tiny state dicts of every dtype actmax reads; the fuzzer mutates them, and the
regression test loads each one and compares it with the values recorded here.

Usage: python3 xtask/python/fuzz_seeds.py OUT_DIR
"""

import collections
import json
import os
import sys

import numpy as np
import torch


def state_dicts():
    """Named tensors as a model's state_dict holds them: weights, buffers, counters."""
    g = torch.Generator().manual_seed(7)
    conv = collections.OrderedDict()
    conv["features.0.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    conv["features.0.bias"] = torch.randn(4, generator=g)
    conv["features.1.running_mean"] = torch.randn(4, generator=g)
    conv["features.1.num_batches_tracked"] = torch.tensor(12, dtype=torch.int64)
    conv["classifier.weight"] = torch.randn(5, 4, generator=g)
    half = collections.OrderedDict()
    half["w16"] = torch.randn(2, 3, generator=g).half()
    half["wbf16"] = torch.randn(3, 2, generator=g).bfloat16()
    half["w64"] = torch.randn(6, generator=g).double()
    half["i32"] = torch.arange(5, dtype=torch.int32)
    half["u8"] = torch.arange(4, dtype=torch.uint8)
    views = collections.OrderedDict()
    base = torch.randn(4, 6, generator=g)
    views["t"] = base.t()  # a strided view of the storage below
    views["row"] = base[1]  # an offset into a shared storage
    views["base"] = base
    return {"conv": conv, "dtypes": half, "views": views}


def as_list(t):
    return t.detach().to(torch.float64).contiguous().reshape(-1).tolist()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    expected = {}
    for name, sd in state_dicts().items():
        for zip_format in (False, True):
            fname = f"{name}-{'zip' if zip_format else 'legacy'}.pth"
            torch.save(sd, os.path.join(out, fname), _use_new_zipfile_serialization=zip_format)
            expected[fname] = {k: {"shape": list(v.shape), "values": as_list(v)} for k, v in sd.items()}
        arrays = {k: v.detach().to(torch.float32).numpy() for k, v in sd.items() if v.dtype != torch.bfloat16}
        for compressed in (False, True):
            fname = f"{name}{'-compressed' if compressed else ''}.npz"
            (np.savez_compressed if compressed else np.savez)(os.path.join(out, fname), **arrays)
            expected[fname] = {k: {"shape": list(v.shape), "values": v.astype(np.float64).reshape(-1).tolist()} for k, v in arrays.items()}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"torch": torch.__version__, "numpy": np.__version__, "files": expected}, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
