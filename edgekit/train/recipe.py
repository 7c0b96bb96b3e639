"""The training recipe: what edgekit.train's fit_network trains with, apart from where it writes.

One recipe for every network (its numbers live in models.NETWORKS): Adam with a linear warm-up
then a cosine decay to zero, batch 128, cheap augmentation on whole batches in tf.data, early
stopping on validation accuracy with the best weights restored, optionally a moving average of
the weights. Plain functions and Keras callbacks; no run directory, manifest or keys here.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Iterator

import numpy as np

import tf_keras

from edgekit.core.metrics import top1_accuracy
from edgekit.core.data import make_tf_dataset
from edgekit.core.progress import Progress

EVAL_BATCH = 1000          # validation/test batch: large batches evaluate faster and change no result
SCHEDULE = "adam, linear warm-up then cosine decay to 0"


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`.

    The warm-up takes at most a tenth of the run: half an epoch is nothing in 30 epochs but
    would be half of a one-epoch --quick run, which then never trains at its peak rate."""
    warmup_steps = max(0, min(int(warmup_steps), total_steps // 10))
    return tf_keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak, decay_steps=max(1, total_steps - warmup_steps),
        alpha=0.0, warmup_target=peak if warmup_steps else None, warmup_steps=warmup_steps)


def batchnorm_momentum(total_steps: int) -> float:
    """Keras' 0.99 for any real run (>= 1000 steps); lower for a short one, whose inference-time
    BatchNorm statistics would otherwise still be mostly their initial values (0.99**42 = 0.66
    after a --quick ResNet epoch, which then scored 0.18 on the test set)."""
    return min(0.99, max(0.5, 1.0 - 10.0 / max(1, total_steps)))


def ema_momentum(ema_epochs: float, steps_per_epoch: int) -> float:
    """The moving-average momentum that averages over about `ema_epochs` of steps (0: none), so a
    short run (tests, --limit) averages over a short window too instead of over its initial weights."""
    if ema_epochs <= 0:
        return 0.0
    return min(0.999, max(0.5, 1.0 - 1.0 / (ema_epochs * steps_per_epoch)))


def adam(schedule, ema_momentum: float = 0.0):
    """Adam; with `ema_momentum`, it also keeps a moving average of the weights, updated inside
    the training step (see EmaValidation for how it is used)."""
    return tf_keras.optimizers.Adam(schedule, use_ema=bool(ema_momentum), ema_momentum=ema_momentum or 0.99)


def training_batches(x: np.ndarray, y: np.ndarray, *, batch: int, epochs: int, seed: int, flip: bool = False,
                     shift_px: int = 0, clean_epochs: int = 0):
    """All epochs' training batches as one stream, and the steps per epoch.

    Given `steps_per_epoch`, Keras reads one iterator across epochs, so every batch has a global
    step: it seeds that batch's augmentation, and augmentation starts after `clean_epochs`.
    """
    steps = math.ceil(len(y) / batch)
    ds = make_tf_dataset(x, y, batch, shuffle=True, seed=seed).repeat(epochs)  # reshuffled each epoch
    if flip or shift_px:
        ds = augment(ds, flip=flip, shift_px=shift_px, seed=seed, start_step=clean_epochs * steps)
    return without_autotune(ds), steps


def augment(ds, *, flip: bool, shift_px: int, seed: int, start_step: int = 0):
    """Random horizontal flips and pixel shifts of whole batches from `start_step` on: one
    resampling op per batch, cheap on a CPU. Stateless random ops seeded by (seed, batch number):
    the same seed gives the same images."""
    import tensorflow as tf

    def apply(batch, step):
        x, y = batch
        n = tf.shape(x)[0]
        s = tf.stack([tf.constant(seed, tf.int64), step])
        on = step >= start_step
        mirror = tf.random.stateless_uniform([n], seed=s) < tf.where(on, 0.5 if flip else 0.0, 0.0)
        d = tf.random.stateless_uniform([n, 2], seed=s + [0, 1 << 40], minval=-shift_px, maxval=shift_px + 1,
                                        dtype=tf.int32)
        d = tf.cast(d, tf.float32) * tf.cast(on, tf.float32)
        return flip_shift(x, mirror, d[:, 0], d[:, 1]), y

    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
    return ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def flip_shift(images, mirror, dx, dy):
    """Mirror (where `mirror`) and shift by (dx, dy) pixels a batch of NHWC images; zeros fill in.

    The projective transform reads output pixel (x, y) from input pixel (a0 x + a2, y - dy):
    a0 = -1 mirrors, a2 shifts. Nearest neighbour with integer shifts: pixel values stay exact.
    """
    import tensorflow as tf

    width = tf.cast(tf.shape(images)[2], tf.float32)
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    a0 = tf.where(mirror, -one, one)
    a2 = tf.where(mirror, width - 1.0 + dx, -dx)  # mirrored: x_in = w-1-(x-dx)
    transforms = tf.stack([a0, zero, a2, zero, one, -dy, zero, zero], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=tf.constant(0.0), interpolation="NEAREST", fill_mode="CONSTANT")


def without_autotune(ds):
    """The same pipeline with tf.data autotuning off. Measured here (TF 2.21, 2 cores): with it on,
    destroying a partly-read iterator at the end of `fit` waits on the autotune thread for 10-45 s
    per model; with it off that is gone and epochs are no slower (the pipeline is not the bottleneck)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def evaluate(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a logits model on uint8 images."""
    logits = model.predict(without_autotune(make_tf_dataset(x, y, EVAL_BATCH, shuffle=False)), verbose=0)
    logits = logits.astype(np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return top1_accuracy(logits, y), float(-log_p[np.arange(len(y)), y].mean())


@contextlib.contextmanager
def deterministic_ops() -> Iterator[None]:
    """TensorFlow op determinism for the duration of a fit, restored after (it is process-wide;
    only `enable` is public API, the query and `disable` live in tensorflow.python). Its cost
    here was within the noise of a shared 2-core machine (CNN: 10.5-11.3 vs 10.5-11.0 CPU-s)."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was = tf_config.is_op_determinism_enabled()
    if not was:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was:
            tf_config.disable_op_determinism()


class EmaValidation(tf_keras.callbacks.Callback):
    """Use the moving average of the weights as the model: at each epoch end it is swapped in,
    validated (val_loss, val_accuracy into the epoch's logs) and left in place for the callbacks
    after this one (best-weights checkpoint, benchmark clocks); the raw weights go back before
    the next epoch trains. The average is steadier than the raw weights while the learning rate
    is high, and equal to them once it has decayed.
    """

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray) -> None:
        super().__init__()
        self.x_val, self.y_val = x_val, y_val
        self._raw: list | None = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._raw is not None:
            for variable, value in zip(self.model.trainable_variables, self._raw):
                variable.assign(value)
            self._raw = None

    def on_epoch_end(self, epoch, logs=None):
        self._raw = [v.numpy() for v in self.model.trainable_variables]
        self.model.optimizer.finalize_variable_values(self.model.trainable_variables)  # average -> model
        accuracy, loss = evaluate(self.model, self.x_val, self.y_val)
        if logs is not None:
            logs.update(val_loss=loss, val_accuracy=accuracy)


class EpochLog(tf_keras.callbacks.Callback):
    """One progress line per epoch, plus the epoch times and learning rates for history.json."""

    def __init__(self, name: str, epochs: int, schedule, progress: Progress, span: tuple[float, float]) -> None:
        """`span`: (start, width), this network's part of the training stage, for the estimate."""
        super().__init__()
        self.name, self.epochs, self.schedule, self.progress, self.span = name, epochs, schedule, progress, span
        self.seconds: list[float] = []
        self.learning_rates: list[float] = []
        self._t = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.seconds.append(round(time.monotonic() - self._t, 3))
        self.learning_rates.append(float(self.schedule(self.model.optimizer.iterations)))
        start, width = self.span
        self.progress.update(
            f"epoch {epoch + 1}/{self.epochs} loss={logs.get('loss', float('nan')):.4f} "
            f"acc={logs.get('accuracy', float('nan')):.4f} val_acc={logs.get('val_accuracy', float('nan')):.4f} "
            f"({self.seconds[-1]:.1f}s)", model=self.name, fraction=start + width * (epoch + 1) / self.epochs)
