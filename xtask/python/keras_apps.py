#!/usr/bin/env python3
"""Keras applications and a small all-layers model, saved as Keras 2 `.h5` (tf-keras) and
Keras 3 `.keras`, with TensorFlow's own outputs as references for actmax (which shares
no code with this script).

    python keras_apps.py full OUT_DIR [NAME ...]   # MobileNet, MobileNetV2, ResNet50, ...
    python keras_apps.py tiny OUT_DIR              # the small fixture to commit

Weights are seeded random (`weights=None`), and so are the batch-norm statistics and
EfficientNet's Normalization layer (identities would hide a wrong normalisation). Heads
are linear (`classifier_activation=None`) so logits are compared, not a near-uniform
softmax. Per case: `<name>-<format>.{h5,keras}`, `.input.bin` (NHWC float32 LE, uniform in
[0, 1)), `.output.bin`, and `index.json`.
"""

import json
import os
import sys
import traceback
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402  (Keras 2)

warnings.filterwarnings("ignore")
tf.config.threading.set_intra_op_parallelism_threads(1)

APPS = ["MobileNet", "MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121"]


def randomize(model, lib):
    """Seeded non-trivial statistics for every BatchNormalization / Normalization layer."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, lib.layers.BatchNormalization):
            new = []
            for w in layer.weights:
                n = w.name.split("/")[-1].split(":")[0]
                shape = tuple(w.shape)
                if "gamma" in n or "variance" in n:
                    new.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
                else:
                    new.append(rng.normal(0, 0.1, shape).astype("float32"))
            layer.set_weights(new)
        elif isinstance(layer, lib.layers.Normalization) and layer.weights:
            ws = layer.get_weights()
            ws[0] = rng.normal(0.4, 0.1, ws[0].shape).astype("float32")
            ws[1] = rng.uniform(0.05, 0.1, ws[1].shape).astype("float32")
            layer.set_weights(ws)
    return model


def app(lib, name):
    lib.utils.set_random_seed(0)
    model = getattr(lib.applications, name)(weights=None, classifier_activation=None)
    return randomize(model, lib), 224


def tiny(lib):
    """One small functional model with every layer class the applications use."""
    lib.utils.set_random_seed(0)
    L = lib.layers
    inp = L.Input((24, 24, 3))
    x = L.Rescaling([1.0 / 0.5, 1.0 / 0.6, 1.0 / 0.7], offset=-0.25)(inp)
    norm = L.Normalization(axis=-1)
    x = norm(x)
    x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = L.Conv2D(8, 3, strides=2, activation="swish", name="stem")(x)
    x = L.BatchNormalization()(x)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    y = L.ReLU(6.0)(y)
    s = L.GlobalAveragePooling2D(keepdims=True)(y)
    s = L.Conv2D(4, 1, activation="swish")(s)
    s = L.Conv2D(8, 1, activation="sigmoid")(s)
    y = L.Multiply(name="excite")([y, s])
    x = L.Add()([x, y])
    z = L.SeparableConv2D(6, 3, padding="same", use_bias=False)(x)
    x = L.Concatenate()([x, z])
    x = L.AveragePooling2D(2)(x)
    x = L.Conv2D(12, 1, use_bias=False)(x)
    x = L.BatchNormalization(center=False)(x)
    x = L.Activation("relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    out = L.Dense(5, name="logits")(x)
    model = lib.Model(inp, out)
    norm.set_weights([np.array([0.1, 0.2, 0.3], "float32"), np.array([0.5, 0.8, 1.2], "float32"),
                      np.array(1, "int64") if lib is keras else np.array(1, "int64")][: len(norm.get_weights())])
    return randomize(model, lib), 24


def save(model, lib, path):
    if lib is keras:
        model.save(path)
    else:
        model.save(path, save_format="h5")


def main():
    mode, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    names = (sys.argv[3:] or APPS) if mode == "full" else ["keras_small_all_layers"]
    index = []
    for name in names:
        for fmt, lib, ext in [("keras2-h5", tf_keras, "h5"), ("keras3", keras, "keras")]:
            stem = f"{name}-{fmt}"
            entry = {"model": name, "format": fmt, "file": f"{stem}.{ext}", "tensorflow": tf.__version__,
                     "keras": keras.__version__, "tf_keras": tf_keras.__version__}
            try:
                model, size = tiny(lib) if mode == "tiny" else app(lib, name)
                path = os.path.join(out, entry["file"])
                save(model, lib, path)
                # The reference is the file as Keras loads it back: Keras 3 derives a
                # Normalization's statistics from its variables only on load.
                loaded = keras.saving.load_model(path) if lib is keras else tf_keras.models.load_model(path)
                x = np.random.default_rng(2).uniform(0, 1, (1, size, size, 3)).astype("float32")
                y = np.asarray(loaded(x, training=False))
                x.astype("<f4").tofile(os.path.join(out, stem + ".input.bin"))
                y.astype("<f4").tofile(os.path.join(out, stem + ".output.bin"))
                entry.update(input_shape=[1, size, size, 3], output_shape=list(y.shape))
            except Exception as e:  # noqa: BLE001 — the table reports it
                traceback.print_exc()
                entry["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            print(stem, entry.get("error", "ok"), flush=True)
            index.append(entry)
            with open(os.path.join(out, "index.json"), "w") as fh:
                json.dump(index, fh, indent=1)


if __name__ == "__main__":
    main()
