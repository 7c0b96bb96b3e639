"""The tutorial's reference recipes, exactly as written there (in tf_keras): the baseline edgekit's
training is measured against.

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, validation_split=0.1)      # default batch size 32

with x / 255.0 as inputs. Softmax outputs, Keras' last-10% validation split, no shuffling seed
beyond the global one (set here only so that re-runs repeat).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

EPOCHS = 5
VALIDATION_SPLIT = 0.1


def reference_mlp():
    return tf_keras.models.Sequential([
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(256, activation="relu"),
        tf_keras.layers.Dropout(0.2),
        tf_keras.layers.Dense(10, activation="softmax"),
    ])


def reference_cnn():
    return tf_keras.models.Sequential([
        tf_keras.layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        tf_keras.layers.MaxPooling2D((2, 2)),
        tf_keras.layers.Conv2D(64, (3, 3), activation="relu"),
        tf_keras.layers.MaxPooling2D((2, 2)),
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(10, activation="softmax"),
    ])


RECIPES = {"mlp": reference_mlp, "cnn": reference_cnn}


@dataclass(frozen=True)
class ReferenceResult:
    name: str
    test_accuracy: float
    test_loss: float
    fit_seconds: float          # wall time of model.fit (5 epochs, validation included)
    epoch_seconds: list
    history: dict


class _EpochTimes(tf_keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds, self._t = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.monotonic() - self._t, 3))
        print(f"  reference {self.model.name} epoch {epoch + 1}/{EPOCHS} "
              f"val_accuracy={logs.get('val_accuracy', float('nan')):.4f} ({self.seconds[-1]:.1f}s)", flush=True)


def run_reference(name: str, x_train_u8: np.ndarray, y_train: np.ndarray, x_test_u8: np.ndarray,
                  y_test: np.ndarray, seed: int = 0) -> ReferenceResult:
    """Train and test one reference recipe; x arrays are uint8 (N, 28, 28, 1) as edgekit loads them."""
    x_train, x_test = x_train_u8[..., 0] / 255.0, x_test_u8[..., 0] / 255.0   # as in the tutorial
    if name == "cnn":
        x_train, x_test = x_train.reshape(-1, 28, 28, 1), x_test.reshape(-1, 28, 28, 1)
    tf_keras.utils.set_random_seed(seed)
    model = RECIPES[name]()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = _EpochTimes()
    t0 = time.monotonic()
    fit = model.fit(x_train, y_train, epochs=EPOCHS, validation_split=VALIDATION_SPLIT, callbacks=[times], verbose=0)
    fit_seconds = time.monotonic() - t0
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    return ReferenceResult(name=name, test_accuracy=float(test_accuracy), test_loss=float(test_loss),
                           fit_seconds=fit_seconds, epoch_seconds=times.seconds,
                           history={k: [float(v) for v in vals] for k, vals in fit.history.items()})
