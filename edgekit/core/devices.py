"""Where training runs and in what precision: the GPU when TensorFlow sees one, mixed precision
and XLA only when asked for.

The decisions are plain functions of (requested device, flags, visible GPUs), so they are tested
on a CPU-only machine; `placement_scope` applies one to TensorFlow and undoes it afterwards
(the Keras dtype policy is process-global, and tests train many models in one process).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

from edgekit.errors import ConfigError

FLOAT32 = "float32"
MIXED_FLOAT16 = "mixed_float16"   # float16 compute, float32 variables (Keras mixed precision guide)


@dataclass(frozen=True)
class Placement:
    """One resolved choice of device and precision for a training run."""
    device: str           # "cpu" | "gpu" (what the manifest records)
    tf_device: str        # the tf.device() string ops are placed under
    policy: str           # Keras dtype policy name: float32 | mixed_float16
    jit_compile: bool     # XLA, passed to Model.compile

    @property
    def mixed(self) -> bool:
        return self.policy != FLOAT32

    def compile_kwargs(self) -> dict:
        """Extra Model.compile arguments (loss scaling is added by Keras itself under mixed_float16)."""
        return {"jit_compile": self.jit_compile}


def visible_gpus() -> list[str]:
    """Names of the GPUs TensorFlow can use (empty on a CPU-only machine or CPU-only build)."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def resolve_placement(device: str = "auto", mixed_precision: bool = False, xla: bool = False,
                      gpus: Sequence[str] | None = None) -> Placement:
    """auto -> the first GPU if any, else the CPU. A flag that cannot help where we run is an
    error, not a silent no-op: float16 on a CPU is emulated and much slower, not faster."""
    if device not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"--device must be auto, cpu or gpu, got '{device}'")
    gpus = visible_gpus() if gpus is None else list(gpus)
    if device == "gpu" and not gpus:
        raise ConfigError("--device gpu but TensorFlow sees no GPU; use --device auto or cpu, "
                          "or install a CUDA build of TensorFlow")
    use_gpu = device != "cpu" and bool(gpus)
    if mixed_precision and not use_gpu:
        raise ConfigError("--mixed-precision needs a GPU (float16 on a CPU is slower, not faster); "
                          "drop the flag or run where TensorFlow sees a GPU")
    return Placement(device="gpu" if use_gpu else "cpu", tf_device="/GPU:0" if use_gpu else "/CPU:0",
                     policy=MIXED_FLOAT16 if mixed_precision else FLOAT32, jit_compile=bool(xla))


def _allow_gpu_memory_growth() -> None:
    """Take GPU memory as needed instead of all of it (a shared GPU stays usable by others)."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU was initialised already; the setting is fixed by then
            pass


@contextlib.contextmanager
def placement_scope(placement: Placement) -> Iterator[Placement]:
    """Build, train and evaluate inside this: device scope + dtype policy, restored on exit."""
    import tensorflow as tf
    import tf_keras

    if placement.device == "gpu":
        _allow_gpu_memory_growth()
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(placement.policy)
    try:
        with tf.device(placement.tf_device):
            yield placement
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def with_float32_logits(model):
    """Under mixed precision the last layer computes in float16; cast the logits to float32
    so softmax cross-entropy stays stable (the guide's advice). Adds no weights."""
    import tf_keras

    if model.outputs[0].dtype == "float32":
        return model
    out = tf_keras.layers.Activation("linear", dtype="float32", name="logits_float32")(model.outputs[0])
    return tf_keras.Model(model.inputs, out, name=model.name)


def float32_model(model, build):
    """A fresh float32 copy of `model` (same weights), for saving and export.

    Under mixed precision the variables are float32 already, but every layer carries the
    mixed policy in its config, so a saved file would reload computing in float16. Rebuilding
    under float32 (`build()` -> a fresh model of the same architecture) and copying the weights
    gives a clean, uncompiled model in every case, which is also what the export stage wants.
    """
    import tf_keras

    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(FLOAT32)
    try:
        clean = build()
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)
    clean.set_weights(model.get_weights())
    return clean
