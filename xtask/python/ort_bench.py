#!/usr/bin/env python3
"""Times onnxruntime (the inference peer) on an ONNX model.

Usage: ort_bench.py MODEL.onnx THREADS RUNS [BATCHES]  → prints one JSON line
{"onnxruntime": version, "threads": ..., "rows": [{"batch": b, "ms_median": ..., "ms_min": ...}]}.
BATCHES is a comma list (default 1). A model whose input has a fixed batch of 1 runs a
batch of b as b calls, as its users must. The input is deterministic noise in the model's
input shape (timing does not depend on it).
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main(argv):
    model, threads, runs = argv[0], int(argv[1]), int(argv[2])
    batches = [int(b) for b in (argv[3] if len(argv) > 3 else "1").split(",")]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    fixed = isinstance(inp.shape[0], int) and inp.shape[0] == 1
    rows = []
    for batch in batches:
        per_call = 1 if fixed else batch
        shape = [per_call] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        calls = batch // per_call

        def run():
            for _ in range(calls):
                sess.run(None, {inp.name: x})
        for _ in range(5):
            run()
        times = []
        for _ in range(max(3, runs // min(batch, 4))):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
        rows.append({"batch": batch, "ms_median": float(np.median(times)), "ms_min": float(min(times))})
    print(json.dumps({"onnxruntime": ort.__version__, "threads": threads, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])
