"""A Keras 3 `.keras` file (TensorFlow's default Keras) through the float and post-training variants.

Differential, as every converter test: the Keras 3 model's own outputs against each file's on its
runtime. The model is random (untrained), so its outputs have no margins and top-1 agreement
would measure noise: the int8 bound is on output error in output quantization steps instead.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ModelError, UntrustedModelError

MADE = ("tflite-fp32", "tflite-int8-ptq", "onnx-fp32", "onnx-int8-ptq")


def _tiny_keras3(name: str = "k3"):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="pixels")(inp)  # [0, 1] pixels -> [-1, 1], inside the model
    x = keras.layers.Conv2D(8, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4)(x)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def keras3_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keras3") / "k3.keras"
    _tiny_keras3().save(path)
    return path


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).random((64, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def made(keras3_file, x, tmp_path_factory):
    """The Keras 3 model as edgekit loads it (scanned first), and its four files."""
    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS
    from edgekit.runtimes.keras_tf import load_keras_model

    model = load_keras_model(keras3_file)
    inputs = ConversionInputs(float_model=model, qat_model=None, representative=x[:32],
                              source_sha256="ab" * 32, labels=("cat", "dog", "owl", "eel"))
    out = tmp_path_factory.mktemp("keras3-files")
    paths = {}
    for name in MADE:
        v = VARIANTS[name]
        paths[name] = out / f"{name}{v.suffix}"
        v.make(inputs, paths[name])
    return model, inputs, paths


def test_a_keras3_file_is_told_from_a_tf_keras_one(keras3_file, tmp_path):
    import tf_keras

    from edgekit.convert.keras3 import is_keras3
    from edgekit.security.scan import keras_major_version

    legacy = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    legacy.save(tmp_path / "legacy.keras")
    assert keras_major_version(keras3_file) == 3
    assert keras_major_version(tmp_path / "legacy.keras") == 2
    assert not is_keras3(legacy) and is_keras3(_tiny_keras3())


def test_the_scan_passes_a_plain_keras3_file_and_still_refuses_code(keras3_file, tmp_path):
    import keras

    from edgekit.security.scan import check_model, scan_model

    assert scan_model(keras3_file).clean, scan_model(keras3_file).findings
    lam = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2)])
    lam.save(tmp_path / "lambda.keras")

    @keras.saving.register_keras_serializable(package="elsewhere")
    class Custom(keras.layers.Layer):
        def call(self, t):
            return t
    keras.Sequential([keras.Input((4,)), Custom(), keras.layers.Dense(2)]).save(tmp_path / "custom.keras")
    for name, kind in (("lambda.keras", "lambda-layer"), ("custom.keras", "custom-object")):
        report = scan_model(tmp_path / name)
        assert kind in {f.kind for f in report.findings}, (name, report.findings)
        with pytest.raises(UntrustedModelError):
            check_model(tmp_path / name)


def _tf_keras_twin(model):
    """The same network and weights in tf_keras, converted by edgekit's tf_keras routes."""
    import tf_keras
    from tf_keras import layers

    twin = tf_keras.Sequential([
        tf_keras.Input((32, 32, 3)), layers.Rescaling(2.0, offset=-1.0), layers.Conv2D(8, 3, strides=2),
        layers.BatchNormalization(), layers.ReLU(), layers.Conv2D(8, 3, strides=2, activation="relu"),
        layers.GlobalAveragePooling2D(), layers.Dense(4)])
    twin.set_weights(model.get_weights())
    return twin


def test_every_float_and_ptq_file_agrees_with_the_keras3_model(made, x, tmp_path):
    """Float files: the Keras 3 model's outputs up to float rounding. Int8 files: the untrained
    model's outputs have no margins and int8 error has no bound from arithmetic alone, so they are
    compared with the int8 file of the same network and weights made by the tf_keras route (same
    graph, same calibration images): equal up to one output quantization step of each other."""
    from edgekit.convert.converters import io_details
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS
    from edgekit.verify.parity import predict_file, predict_keras

    model, inputs, paths = made
    ref = predict_keras(model, x)
    assert np.allclose(ref, model(x).numpy(), atol=1e-5)   # the loaded model is the Keras 3 one
    twin = dataclasses.replace(inputs, float_model=_tf_keras_twin(model))
    assert np.allclose(predict_keras(twin.float_model, x), ref, atol=1e-5)
    for name, path in paths.items():
        ins, outs = io_details(path)
        assert ins[0]["signature_key"] == "image" and ins[0]["shape"] == [-1, 32, 32, 3], (name, ins)
        got = predict_file(path, x)
        assert got.shape == ref.shape, name
        if "int8" not in name:  # float32 kernels, another summation order: float rounding only
            assert np.max(np.abs(got - ref)) < 1e-4, name
            continue
        v = VARIANTS[name]
        v.make(twin, tmp_path / f"{name}{v.suffix}")
        legacy = predict_file(tmp_path / f"{name}{v.suffix}", x)
        # TFLite: the file's output scale; ONNX (float output): the QDQ step of the output range
        step = outs[0]["scale"] or (ref.max() - ref.min()) / 255
        assert np.max(np.abs(got - legacy)) <= step * 1.001, (name, np.max(np.abs(got - legacy)) / step)
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9, name   # and it computes the model


def test_qat_on_a_keras3_model_is_refused_in_one_line(made, tmp_path):
    from edgekit.convert.keras3 import refuse_qat
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    model, inputs, _ = made
    for v in (v for v in VARIANTS.values() if v.needs_qat):
        with pytest.raises(ModelError) as e:
            v.make(inputs, tmp_path / f"{v.name}{v.suffix}")
        assert "Keras 3" in str(e.value) and "tf_keras" in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / f"{v.name}{v.suffix}").exists()
    with pytest.raises(ModelError, match="Keras 3 model"):
        refuse_qat(model)


def test_keras3_files_carry_their_metadata(made, keras3_file):
    from edgekit.convert.converters import io_details
    from edgekit.convert.metadata import FileMetadata, read_metadata

    _, _, paths = made
    for name, path in paths.items():
        meta = FileMetadata.from_json(read_metadata(path))
        assert meta.variant == name and meta.input_shape == (-1, 32, 32, 3) and meta.output_shape == (-1, 4)
        assert meta.labels == ("cat", "dog", "owl", "eel") and meta.source_sha256 == "ab" * 32
        assert meta.preprocessing == ("pixels: x * 2 + -1",)
        ins, outs = io_details(path)
        assert (meta.input_dtype, meta.input_scale, meta.output_scale) == \
            (ins[0]["dtype"], ins[0]["scale"], outs[0]["scale"])
