#!/usr/bin/env python3
"""Times onnxruntime (the peer) on an ONNX model: median ms of a batch-1 forward pass.

Usage: ort_bench.py MODEL.onnx THREADS RUNS  → prints one JSON line
{"ms_median": ..., "ms_min": ..., "threads": ..., "onnxruntime": version}.
The input is deterministic noise in the model's input shape (timing does not depend on it).
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main(argv):
    model, threads, runs = argv[0], int(argv[1]), int(argv[2])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(5):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"ms_median": float(np.median(times)), "ms_min": float(min(times)), "threads": threads,
                      "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main(sys.argv[1:])
