"""Keras 3 models (TensorFlow's default Keras) through the float and post-training routes.

edgekit's own Keras is tf_keras (Keras 2, TF_USE_LEGACY_KERAS=1), yet `import keras` still gives
Keras 3 in the same process, so a user's Keras 3 file loads beside it (edgekit.runtimes.keras_tf).
Its variables are Keras 3 variables, which both tf_keras routes miss: TFLite's
from_concrete_functions keeps them as READ_VARIABLE ops (int8 calibration then fails on a null
variable) and tf2onnx's from_keras rejects the model. So a Keras 3 model goes to TFLite through a
SavedModel written by keras.export.ExportArchive, with the same signature as every edgekit file
(serving_default: image -> logits), and to ONNX through tf2onnx's from_function.
QAT needs tensorflow-model-optimization, which wraps tf_keras layers only: it is refused.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgekit.errors import ExportError, ModelError, one_line

QAT_REFUSAL = ("is a Keras 3 model and QAT (tensorflow-model-optimization) needs a tf_keras / Keras 2 "
               "model; drop the -qat variants, or rebuild and save the model with tf_keras")


def is_keras3(model: Any) -> bool:
    """True for a Keras 3 model (its class, or a base class, comes from the `keras` package;
    tf_keras and tfmot classes live in `tf_keras` / `tensorflow_model_optimization`)."""
    return any(f"{c.__module__}.".startswith("keras.") for c in type(model).__mro__)


def refuse_qat(model: Any) -> None:
    """Raise the one-line ModelError QAT gives a Keras 3 model (no-op for a tf_keras one)."""
    if is_keras3(model):
        raise ModelError(f"model '{model.name}' {QAT_REFUSAL}")


@contextmanager
def saved_model(model: Any, input_name: str, output_name: str) -> Iterator[Path]:
    """A temporary SavedModel of a Keras 3 model whose `serving_default` signature takes float32
    NHWC `input_name` (dynamic batch) and returns {output_name: logits}; removed on exit."""
    import keras
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=input_name)

    def serve(image):
        return {output_name: model(image, training=False)}

    with tempfile.TemporaryDirectory(prefix="edgekit-keras3-") as tmp:
        try:
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serving_default", tf.autograph.experimental.do_not_convert(serve),
                                 input_signature=[spec])
            archive.write_out(tmp, verbose=False)
        except Exception as e:  # Keras raises ValueError/TypeError for layers it cannot trace
            raise ExportError(f"Keras 3 model '{model.name}' cannot be exported as a SavedModel "
                              f"({one_line(e, 200)}); check its layers run in TensorFlow") from e
        yield Path(tmp)


def tflite_converter(saved: Path):
    """The TFLite converter of a SavedModel made by `saved_model` (its one signature)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])


def to_onnx(model: Any, opset: int, input_name: str, output_name: str):
    """tf2onnx conversion of a Keras 3 model (from_function: from_keras takes tf_keras models only),
    with the same named, batch-dynamic input as edgekit.convert.onnx_int8.keras_to_onnx."""
    import logging

    import tensorflow as tf
    import tf2onnx

    from edgekit.convert.onnx_determinism import deterministic_tf2onnx
    from edgekit.convert.onnx_int8 import nhwc_reshape_as_transpose

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    spec = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=input_name),)

    def serve(image):
        return {output_name: model(image, training=False)}

    fn = tf.function(tf.autograph.experimental.do_not_convert(serve), input_signature=spec)
    try:
        with deterministic_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises bare Exception/ValueError for unsupported ops
        raise ExportError(f"tf2onnx cannot convert Keras 3 model '{model.name}' ({one_line(e, 200)}); "
                          f"use layers with ONNX equivalents") from e
    nhwc_reshape_as_transpose(proto)
    return proto
