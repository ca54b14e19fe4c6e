#!/usr/bin/env python3
"""Export torchvision classifiers to ONNX with both PyTorch exporters and write
onnxruntime's outputs as references for actmax (which shares no code with this script).

    python torchvision_models.py full OUT_DIR [MODEL ...]   # full-size, into .cache
    python torchvision_models.py tiny OUT_DIR                # small fixtures to commit

Weights are seeded random (torch.manual_seed), and so are the batch-norm statistics and
ConvNeXt's layer scales (torchvision initialises them to identities / 1e-6, which would
hide a wrong normalisation). Per model and exporter this writes `<name>-<exporter>.onnx`,
`<name>-<exporter>.input.bin` and `.logits.bin` (float32 little-endian, the input
uniform in [0, 1)), and one `index.json` listing every case with its opset, input shape
and, where export or onnxruntime failed, the error.
"""

import json
import os
import sys
import traceback
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision.models import convnext, shufflenetv2  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

FULL = [
    "resnet18", "resnet50", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s", "densenet121",
    "regnet_x_400mf", "mnasnet0_5", "vgg11_bn", "alexnet", "inception_v3", "convnext_tiny",
    "googlenet", "squeezenet1_1", "shufflenet_v2_x1_0",
]
EXPORTERS = [("torchscript", 13), ("dynamo", 18)]


def randomize(model):
    """Non-trivial normalisation statistics and layer scales, seeded."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, convnext.CNBlock):
                m.layer_scale.copy_(torch.rand(m.layer_scale.shape, generator=g) * 0.5 + 0.25)
    return model


def full_model(name):
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    if name == "googlenet":
        kwargs["aux_logits"] = False
    if name == "inception_v3":
        kwargs["aux_logits"] = False
    m = getattr(torchvision.models, name)(weights=None, **kwargs)
    size = 299 if name == "inception_v3" else 224
    return randomize(m.eval()), size


def tiny_models():
    """Small widths of the architectures whose ops the full list adds."""
    torch.manual_seed(0)
    cn = convnext.ConvNeXt(
        [convnext.CNBlockConfig(8, 16, 1), convnext.CNBlockConfig(16, None, 1)], num_classes=10
    )
    yield "convnext_tiny_w8", randomize(cn.eval()), 32
    torch.manual_seed(0)
    sh = shufflenetv2.ShuffleNetV2([2, 1, 1], [8, 16, 32, 64, 96], num_classes=10)
    yield "shufflenet_v2_w8", randomize(sh.eval()), 48
    torch.manual_seed(0)
    sq = torchvision.models.squeezenet1_1(weights=None, num_classes=10)
    # Narrow squeezenet: keep the ceil-mode pools and the fire modules, shrink the widths.
    sq.features = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(3, 2, ceil_mode=True),
        torchvision.models.squeezenet.Fire(8, 4, 8, 8),
        torch.nn.MaxPool2d(3, 2, ceil_mode=True),
        torchvision.models.squeezenet.Fire(16, 4, 8, 8),
    )
    sq.classifier = torch.nn.Sequential(
        torch.nn.Conv2d(16, 10, 1), torch.nn.ReLU(inplace=True), torch.nn.AdaptiveAvgPool2d(1)
    )
    yield "squeezenet_w8", randomize(sq.eval()), 45
    torch.manual_seed(0)
    yield "resize_w8", Resizing().eval(), 20


class Resizing(torch.nn.Module):
    """The interpolations segmentation heads and FPNs use, in a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        F = torch.nn.functional
        x = F.interpolate(torch.relu(self.conv1(x)), scale_factor=2, mode="nearest")
        x = F.interpolate(torch.relu(self.conv2(x)), size=(11, 13), mode="bilinear", align_corners=False)
        x = F.interpolate(self.conv3(x), scale_factor=1.5, mode="bilinear", align_corners=True)
        return self.fc(x.mean((2, 3)))


def export(model, size, path, exporter, opset):
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset, external_data=False)
        else:
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_logits = model(x).numpy()
    return x.numpy(), logits, float(np.abs(logits - torch_logits).max() / max(np.abs(torch_logits).max(), 1e-30))


def main():
    mode, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if mode == "full":
        names = sys.argv[3:] or FULL
        cases = ((n, *full_model(n)) for n in names)
    else:
        cases = tiny_models()
    index = []
    for name, model, size in cases:
        for exporter, opset in EXPORTERS:
            stem = f"{name}-{exporter}"
            entry = {"model": name, "exporter": exporter, "opset": opset, "onnx": stem + ".onnx",
                     "input_shape": [1, 3, size, size], "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "onnxruntime": ort.__version__}
            try:
                x, logits, vs_torch = export(model, size, os.path.join(out, stem + ".onnx"), exporter, opset)
                x.astype("<f4").tofile(os.path.join(out, stem + ".input.bin"))
                logits.astype("<f4").tofile(os.path.join(out, stem + ".logits.bin"))
                entry.update(logits=list(logits.shape), ort_vs_torch=vs_torch,
                             ops=sorted({n.op_type for n in onnx.load(os.path.join(out, stem + ".onnx")).graph.node}))
            except Exception as e:  # noqa: BLE001 — the table reports it
                traceback.print_exc()
                entry["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            print(json.dumps({k: entry[k] for k in ("model", "exporter") if k in entry}), entry.get("error", "ok"),
                  flush=True)
            index.append(entry)
            with open(os.path.join(out, "index.json"), "w") as fh:
                json.dump(index, fh, indent=1)


if __name__ == "__main__":
    main()
