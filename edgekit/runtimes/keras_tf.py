"""TensorFlow running a Keras model through a compiled `tf.function` (never eager: eager
batch-1 calls cost ~30 ms of Python overhead here and would measure the wrong thing)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import ModelError


def available() -> bool:
    try:
        import tensorflow  # noqa: F401
        return True
    except ImportError:
        return False


def load_keras_model(path: str | Path, trust_model: bool = False, scanned: bool = False):
    """Load a .keras/.h5/SavedModel, QAT-wrapped or not, as a tf_keras model; a file Keras 3 saved
    (TensorFlow's default Keras) as a Keras 3 model, for the float and post-training variants
    (edgekit.convert.keras3) and as their parity reference.

    The file is scanned first (edgekit.security.scan) and refused if it holds code: loading is running.
    scanned=True skips that scan (the caller has just scanned the file) but keeps tf_keras'
    safe mode on, so a scan that missed something still meets a second check. Only
    trust_model=True (the user's --trust-model: their findings are accepted, and the load runs in
    edgekit.export.contained) skips the scan and turns safe mode off."""
    import tf_keras
    import tensorflow_model_optimization as tfmot

    from edgekit.security.scan import keras_major_version

    path = Path(path)
    if not (trust_model or scanned):
        from edgekit.security.scan import check_model

        check_model(path)  # raises UntrustedModelError, or ModelError for a missing/unknown file
    elif not path.exists():
        raise ModelError(f"{path}: model file not found")
    if keras_major_version(path) >= 3:
        return _load_keras3(path, safe_mode=not trust_model)
    try:
        with tfmot.quantization.keras.quantize_scope():
            return tf_keras.models.load_model(str(path), compile=False, safe_mode=not trust_model)
    except Exception as e:
        raise ModelError(f"{path}: cannot load as a Keras model ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         f"save it with model.save('model.keras') from tf_keras / Keras 2") from e


def _load_keras3(path: Path, safe_mode: bool):
    """Keras 3 loads beside tf_keras: `import keras` is Keras 3 whatever TF_USE_LEGACY_KERAS says."""
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
    except Exception as e:
        raise ModelError(f"{path}: cannot load as a Keras 3 model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}); save it with model.save('model.keras')") from e


class KerasSession:
    def __init__(self, path: Path, threads: int = 1, model=None) -> None:
        import tensorflow as tf

        self.path, self.threads = path, threads
        self.model = model if model is not None else load_keras_model(path)
        shape = tuple(-1 if d is None else int(d) for d in self.model.input_shape)
        self.input_shape = shape
        self.input_dtype = np.dtype(np.float32)
        self.input_quant = self.output_quant = None
        spec = tf.TensorSpec([None, *self.model.input_shape[1:]], tf.float32)
        model_ = self.model
        self._fn = tf.function(lambda x: model_(x, training=False), input_signature=[spec],
                               reduce_retracing=True)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        outs = [self._fn(self.prepare(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def bind(self, x_prepared: np.ndarray):
        import tensorflow as tf

        x = tf.constant(x_prepared)
        fn = self._fn
        return lambda: fn(x)


def open_session(path: Path, threads: int = 1, model=None, **_ignored) -> KerasSession:
    """TensorFlow's thread pools are process-wide and fixed at first use; the bench runs each
    thread count in its own subprocess, so setting them here is effective there."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialized in this process
    return KerasSession(path, threads=threads, model=model)
