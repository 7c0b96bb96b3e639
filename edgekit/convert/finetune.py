"""QAT fine-tuning: the QAT model trained a few steps from ranges that start where the float model's
outputs lie, with the loss that matches its head, stopped with a one-line error if it diverges
(the QAT model itself is made by edgekit.convert.quantize)."""
from __future__ import annotations

import math

import numpy as np

from edgekit.convert.quantize import _FLOAT_SOURCE, output_kind, qat_float_layers
from edgekit.errors import ConfigError, EdgekitError, ModelError, one_line


def finetune_qat(qat_model, x: np.ndarray, y: np.ndarray, epochs: float, learning_rate: float,
                 batch_size: int = 128, seed: int = 0) -> dict:
    """Fine-tune a QAT model in place (Adam, sparse CE on the model's output: logits, or
    probabilities where the model ends in a softmax, see output_kind); returns the history,
    with "output" ("logits" or "softmax": the loss's from_logits) and "float_layers" (the layers
    left float, see make_qat_model) for the export record.

    Fractional epochs run that share of the steps of one pass. Before training, the activation
    ranges start from what the float model sees: tfmot starts them at [-6, 6] and moves them by a
    0.999 EMA, so after one epoch of Fashion-MNIST a ReLU's range still reaches ~-3.8, wasting
    nearly half of its 256 levels (and keeping ONNX Runtime from folding the ReLU)."""
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
    try:
        return _finetune(qat_model, x, y, epochs, learning_rate, batch_size, seed)
    except EdgekitError:
        raise
    except Exception as e:  # TF/Keras errors (labels vs. output shape, a layer failing in training)
        raise ModelError(f"QAT fine-tuning of model '{getattr(qat_model, 'name', '?')}' failed "
                         f"({one_line(e, 200)}); the float variants are still exported; drop the "
                         f"*-int8-qat variants") from e


def _finetune(qat_model, x, y, epochs, learning_rate, batch_size, seed) -> dict:
    import tensorflow as tf
    import tf_keras

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
    kind = output_kind(qat_model)
    qat_model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=kind == "logits"),
                      metrics=["accuracy"])
    watch = _finite_loss_watch()
    hist = qat_model.fit(ds, epochs=fit_epochs, steps_per_epoch=steps, verbose=0, callbacks=[watch])
    _check_finite(qat_model, watch, learning_rate)
    out = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    out.update(steps=int(fit_epochs * steps), epochs=float(epochs), batch_size=int(batch_size),
               learning_rate=float(learning_rate), warm_started_ranges=ranges, output=kind,
               float_layers=qat_float_layers(qat_model))
    return out


def _finite_loss_watch():
    """A Keras callback that stops fit at the first step whose loss is not finite and keeps
    that step and loss (`step` stays None while every loss is finite)."""
    import tf_keras

    class FiniteLoss(tf_keras.callbacks.Callback):
        step: int | None = None
        loss: float | None = None
        _seen = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._seen = epoch * (self.params.get("steps") or 0)

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if self.step is None and loss is not None and not math.isfinite(float(loss)):
                self.step, self.loss = self._seen + batch + 1, float(loss)
                self.model.stop_training = True

    return FiniteLoss()


def _check_finite(qat_model, watch, learning_rate: float) -> None:
    """ModelError, one line, when fine-tuning left a non-finite loss or weight: such a QAT model
    would export NaN (the ONNX rewrite reports it as off the grid, the TFLite file computes NaN)."""
    bad = next((v for v in qat_model.weights if not np.all(np.isfinite(v.numpy()))), None)
    if watch.step is None and bad is None:
        return
    what = []
    if watch.step is not None:
        what.append(f"the loss became {watch.loss} at step {watch.step}")
    if bad is not None:
        count = sum(1 for v in qat_model.weights if not np.all(np.isfinite(v.numpy())))
        what.append(f"{count} weights are non-finite, first '{bad.name.split(':')[0]}'")
    raise ModelError(f"QAT fine-tuning of model '{qat_model.name}' diverged ({'; '.join(what)}); no QAT model "
                     f"is exported; the float variants are still exported; lower qat_learning_rate "
                     f"(now {learning_rate:g}) or check the fine-tuning images")


def warm_start_ranges(qat_model, x: np.ndarray, batch_size: int = 128, max_samples: int = 2048) -> int:
    """Set each output quantizer's min/max (a wrapper's, or a QuantizeLayer's after a layer left
    float) to what the float model's layer outputs span:
    the mean per-batch min/max of the layer in training mode (batch statistics in BatchNorm,
    what fine-tuning sees and tfmot's EMA converges to) and in inference mode (moving
    statistics, what the exported model sees), whichever reaches further. Returns how many
    ranges were set; 0 when the QAT model was not made by make_qat_model (no float model).

    Both modes matter: where BatchNorm's moving statistics do not describe the data (an untrained
    or barely trained model: EfficientNet's fan-out initialisation gives stem outputs of std 0.2,
    which training-mode BN scales to std 1), inference-mode ranges alone clip every BN output to
    a fraction of its training range, the signal shrinks block by block, BN divides by the
    vanishing batch std, and the gradients overflow (1e20 at EfficientNetB0's stem, NaN after
    one Adam step)."""
    import tf_keras

    float_model = _FLOAT_SOURCE.get(qat_model)
    if float_model is None:
        return 0
    targets = {}
    for layer in qat_model.layers:
        source, found = _range_of(layer)
        if source is not None and set(found) == {"min", "max"}:
            try:
                targets[source] = (float_model.get_layer(source), found)
            except ValueError:
                continue
    if not targets:
        return 0
    probe = tf_keras.Model(float_model.inputs, [layer.output for layer, _ in targets.values()])
    xs = x[np.random.default_rng(0).permutation(len(x))[:max_samples]]
    # a training-mode call updates BatchNorm's moving statistics: the float model is restored after
    state = [(v, v.numpy()) for v in float_model.non_trainable_variables]
    lo = np.full(len(targets), np.inf)
    hi = np.full(len(targets), -np.inf)
    try:
        for training in (False, True):
            mins, maxs = [], []
            for i in range(0, len(xs), batch_size):
                outs = probe(xs[i:i + batch_size], training=training)
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                mins.append([float(np.min(o)) for o in outs])
                maxs.append([float(np.max(o)) for o in outs])
            lo, hi = np.minimum(lo, np.mean(mins, axis=0)), np.maximum(hi, np.mean(maxs, axis=0))
    finally:
        for v, value in state:
            v.assign(value)
    for (name, (_, found)), a, b in zip(targets.items(), lo, hi):
        if not (np.isfinite(a) and np.isfinite(b)):
            raise ModelError(f"the float model's layer '{name}' outputs non-finite values on the QAT "
                             f"fine-tuning images; check the model and the images (their scale) before QAT")
        found["min"].assign(min(float(a), 0.0))
        found["max"].assign(max(float(b), 0.0))
    return len(targets)


def _range_of(layer) -> tuple[str | None, dict]:
    """(name of the float layer whose output it quantizes, {"min": var, "max": var}) of a QAT
    layer's output range: a wrapper's output/post-activation quantizer, or a moving-average
    QuantizeLayer after a layer left float (edgekit.convert.quantize); (None, {}) otherwise."""
    inner = getattr(layer, "layer", None)
    found = {}
    if inner is not None:
        for v in layer.weights:
            short = v.name.split("/")[-1].split(":")[0]
            for kind in ("post_activation", "output"):
                if short in (f"{kind}_min", f"{kind}_max"):
                    found[short.rsplit("_", 1)[1]] = v
        return inner.name, found
    if type(getattr(layer, "quantizer", None)).__name__ != "MovingAverageQuantizer":
        return None, {}  # tfmot's input QuantizeLayer (AllValuesQuantizer) keeps its own start
    nodes = layer._inbound_nodes  # noqa: SLF001 - tf_keras has no public "previous layer"
    prev = nodes[0].inbound_layers if len(nodes) == 1 else None
    if prev is None or isinstance(prev, (list, tuple)):
        return None, {}
    for v in layer.weights:
        short = v.name.split("/")[-1].split(":")[0]
        for end in ("min", "max"):
            if short == f"{layer.name}_{end}":
                found[end] = v
    return prev.name, found
