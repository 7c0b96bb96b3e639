"""Quantization: the QAT model (tfmot), its fine-tuning, and calibration sets (the int8 audit of
the files made from them is edgekit.verify.audit)."""
from __future__ import annotations

import math
import re
import weakref

import numpy as np

from edgekit.errors import ConfigError, ModelError, one_line

# QAT model -> the float model it wraps (not an attribute: Keras would track it as a child).
_FLOAT_SOURCE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------- QAT

def make_qat_model(float_model):
    """Wrap a float tf_keras model for quantization-aware training (tfmot default 8-bit scheme).

    Raises ModelError naming the first layer tfmot cannot quantize; the float variants do not
    need QAT and are still exported."""
    import tensorflow_model_optimization as tfmot

    for layer in float_model.layers:  # tfmot skips Lambda layers silently, leaving float ops inside
        if type(layer).__name__ == "Lambda":
            raise ModelError(_unsupported(layer.name, "Lambda"))
    try:
        qat = tfmot.quantization.keras.quantize_model(float_model)
    except (RuntimeError, ValueError, TypeError) as e:
        text = str(e)
        m = re.search(r"Layer (\S+):<class '[\w.]*?(\w+)'>", text)
        if m:
            raise ModelError(_unsupported(m.group(1), m.group(2))) from e
        bad = _first_unsupported(float_model)
        if bad is not None:
            raise ModelError(_unsupported(bad.name, type(bad).__name__)) from e
        raise ModelError(f"tensorflow-model-optimization cannot wrap model '{float_model.name}' for QAT "
                         f"({one_line(e, 160)}); the float variants are still "
                         f"exported, drop the *-int8-qat variants") from e
    _FLOAT_SOURCE[qat] = float_model  # lets finetune_qat start the activation ranges from it
    return qat


def _unsupported(name: str, cls: str) -> str:
    return (f"layer '{name}' ({cls}) cannot be quantized by tensorflow-model-optimization, so there is no QAT "
            f"model; the float variants are still exported; replace the layer or drop the *-int8-qat variants")


def _first_unsupported(model):
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as reg)

    registry = reg.Default8BitQuantizeRegistry()
    for layer in model.layers:
        if type(layer).__name__ != "InputLayer" and not registry.supports(layer):
            return layer
    return None


def finetune_qat(qat_model, x: np.ndarray, y: np.ndarray, epochs: float, learning_rate: float,
                 batch_size: int = 128, seed: int = 0) -> dict:
    """Fine-tune a QAT model in place (Adam, sparse CE on logits); returns the history.

    Fractional epochs run that share of the steps of one pass. Before training, the activation
    ranges start from what the float model sees: tfmot starts them at [-6, 6] and moves them by a
    0.999 EMA, so after one epoch of Fashion-MNIST a ReLU's range still reaches ~-3.8, wasting
    nearly half of its 256 levels (and keeping ONNX Runtime from folding the ReLU)."""
    import tensorflow as tf
    import tf_keras

    if not epochs or epochs <= 0:
        raise ConfigError(f"QAT epochs must be > 0 (got {epochs}); a QAT model that never saw data has "
                          f"zero quantization ranges; set qat_epochs in the profile")
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    x = x.astype(np.float32, copy=False)
    y = np.asarray(y).astype(np.int64)
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"QAT fine-tuning needs as many labels as images (got {len(x)} images, {len(y)} labels)")
    tf_keras.utils.set_random_seed(seed)
    ranges = warm_start_ranges(qat_model, x, batch_size)

    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(1, round(epochs * steps_per_epoch))
    fit_epochs = max(1, math.ceil(epochs))
    steps = math.ceil(total / fit_epochs)
    # shuffle indices, not images: the shuffle buffer stays small for 60k images
    xs, ys = tf.constant(x), tf.constant(y)
    ds = (tf.data.Dataset.range(len(x)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
          .repeat().batch(batch_size).map(lambda i: (tf.gather(xs, i), tf.gather(ys, i)))
          .prefetch(tf.data.AUTOTUNE))
    qat_model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    hist = qat_model.fit(ds, epochs=fit_epochs, steps_per_epoch=steps, verbose=0)
    out = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    out.update(steps=int(fit_epochs * steps), epochs=float(epochs), batch_size=int(batch_size),
               learning_rate=float(learning_rate), warm_started_ranges=ranges)
    return out


def warm_start_ranges(qat_model, x: np.ndarray, batch_size: int = 128, max_samples: int = 2048) -> int:
    """Set each wrapper's output-quantizer min/max to the float model's mean per-batch min/max of
    that layer's output (the value tfmot's EMA converges to). Returns how many ranges were set;
    0 when the QAT model was not made by make_qat_model (no float model attached)."""
    import tf_keras

    float_model = _FLOAT_SOURCE.get(qat_model)
    if float_model is None:
        return 0
    targets = {}
    for wrapper in qat_model.layers:
        inner = getattr(wrapper, "layer", None)
        if inner is None:
            continue
        found = {}
        for v in wrapper.weights:
            short = v.name.split("/")[-1].split(":")[0]
            for kind in ("post_activation", "output"):
                if short in (f"{kind}_min", f"{kind}_max"):
                    found[short.rsplit("_", 1)[1]] = v
        if set(found) == {"min", "max"}:
            try:
                targets[inner.name] = (float_model.get_layer(inner.name), found)
            except ValueError:
                continue
    if not targets:
        return 0
    probe = tf_keras.Model(float_model.inputs, [layer.output for layer, _ in targets.values()])
    xs = x[np.random.default_rng(0).permutation(len(x))[:max_samples]]
    mins, maxs = [], []
    for i in range(0, len(xs), batch_size):
        outs = probe(xs[i:i + batch_size], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        mins.append([float(np.min(o)) for o in outs])
        maxs.append([float(np.max(o)) for o in outs])
    lo, hi = np.mean(mins, axis=0), np.mean(maxs, axis=0)
    for (name, (_, found)), a, b in zip(targets.items(), lo, hi):
        found["min"].assign(min(float(a), 0.0))
        found["max"].assign(max(float(b), 0.0))
    return len(targets)


def representative_set(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random sample of n training inputs (all of them if fewer), float32, for calibration."""
    if n <= 0:
        raise ConfigError(f"representative_samples must be > 0 (got {n}); set it in the profile")
    x = np.asarray(x)
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    out = x[idx]
    if out.dtype == np.uint8:
        return out.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(out, np.float32)
