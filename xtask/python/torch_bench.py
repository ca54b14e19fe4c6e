#!/usr/bin/env python3
"""Times PyTorch (the training-framework peer) on the cases of `cargo xtask bench-peer`.

Usage: torch_bench.py THREADS RUNS  → prints one JSON line: {"torch": version,
"capability": "AVX512"|..., "rows": [{"case": ..., "ms": median, "layout": ...}, ...]}.

The networks are written out here (no torchvision): EfficientNet-Lite0 (batch norms folded
into the convs' biases, as actmax runs a visualization) and VGG16 up to block5_conv3, with
He-uniform weights — these are speed cases, values do not change the time. Symmetric
padding stands in for TF-SAME: the same FLOPs.

Each case is timed as a user of lucent would run it at best: weights frozen
(`requires_grad_(False)`), the image a leaf that requires a gradient, in NCHW and in
channels-last memory format; the faster layout is reported (both are printed). A step is
forward + backward to the input + an Adam update of the image.
"""

import json
import sys
import time

import torch
import torch.nn as nn


def lite0():
    stages = [(3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
              (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1)]

    class Block(nn.Module):
        def __init__(self, k, s, e, ci, co):
            super().__init__()
            mid = ci * e
            layers = []
            if e != 1:
                layers += [nn.Conv2d(ci, mid, 1), nn.ReLU6()]
            layers += [nn.Conv2d(mid, mid, k, s, k // 2, groups=mid), nn.ReLU6(), nn.Conv2d(mid, co, 1)]
            self.body = nn.Sequential(*layers)
            self.residual = s == 1 and ci == co

        def forward(self, x):
            y = self.body(x)
            return y + x if self.residual else y

    layers = [nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU6()]
    for k, s, e, ci, co, reps in stages:
        for r in range(reps):
            layers.append(Block(k, s if r == 0 else 1, e, ci if r == 0 else co, co))
    layers += [nn.Conv2d(320, 1280, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers), 224


def vgg16_block5_conv3():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers), 224  # block5_conv3 and its ReLU, as actmax's layer has it


def median_ms(runs, f):
    for _ in range(3):
        f()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def time_case(net, size, batch, runs, channels_last, step):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.eval().to(memory_format=fmt)
    for p in net.parameters():
        p.requires_grad_(False)
    x0 = torch.rand(batch, 3, size, size).contiguous(memory_format=fmt)
    if not step:
        def forward():
            with torch.inference_mode():
                net(x0)
        return median_ms(runs, forward)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)

    def one_step():
        opt.zero_grad(set_to_none=True)
        out = net(x)
        loss = -out[:, 1].mean()  # channel (or class) 1, as actmax's bench
        loss.backward()
        opt.step()
    return median_ms(runs, one_step)


def main(argv):
    threads, runs = int(argv[0]), int(argv[1])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    cases = [("lite0", lite0, [("forward", 1), ("forward", 8), ("step", 1), ("step", 8)]),
             ("vgg16_block5_conv3", vgg16_block5_conv3, [("forward", 1), ("step", 1)])]
    for name, build, kinds in cases:
        net, size = build()
        for kind, batch in kinds:
            n = max(3, runs // (min(batch, 4) if name == "lite0" else 6))
            ms = {layout: time_case(net, size, batch, n, layout == "channels_last", kind == "step")
                  for layout in ("nchw", "channels_last")}
            best = min(ms, key=ms.get)
            rows.append({"case": f"{name} {kind} b{batch}", "ms": ms[best], "layout": best, "all": ms})
            print(f"torch {name} {kind} b{batch}: {ms}", file=sys.stderr)
    print(json.dumps({"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
                      "threads": threads, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])
