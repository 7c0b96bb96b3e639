"""Every export variant made from the tiny trained CNN, run on its own runtime and judged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ConfigError, ModelError

EXPECTED = ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq", "tflite-int8-qat",
            "onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat"]


@pytest.fixture(scope="module")
def cnn(trained_run, synthetic):
    """The float CNN, its QAT model (one short fine-tune) and a representative set."""
    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.data import to_float
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model, representative_set
    from edgekit.runtimes.keras_tf import load_keras_model

    model = load_keras_model(trained_run / "train/cnn/model.keras")
    x, y = to_float(synthetic.x_train), synthetic.y_train
    qat = make_qat_model(model)
    finetune_qat(qat, x, y, epochs=0.5, learning_rate=1e-4, batch_size=128)
    return ConversionInputs(float_model=model, qat_model=qat, representative=representative_set(x, 100))


@pytest.fixture(scope="module")
def made(cnn, tmp_path_factory) -> dict[str, Path]:
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    out = tmp_path_factory.mktemp("variants")
    paths = {}
    for v in VARIANTS.values():
        paths[v.name] = out / f"{v.name}{v.suffix}"
        v.make(cnn, paths[v.name])
    return paths


def test_registry_names_and_claims():
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    assert list(VARIANTS) == EXPECTED
    for v in VARIANTS.values():
        assert v.name.startswith(v.format) and v.suffix == f".{v.format}"
        assert v.needs_qat == (v.variant_class == "int8-qat") == (v.reference == "qat")
        assert v.needs_calibration == (v.variant_class == "int8-ptq")
        assert v.io_dtype == ("int8" if v.format == "tflite" and v.variant_class.startswith("int8") else "float32")


def test_every_variant_runs_and_agrees_with_its_reference(made, cnn, synthetic):
    """Float variants match to 1e-4; the rest keep top-1 on data with clear margins."""
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS
    from edgekit.core.data import to_float
    from edgekit.runtimes import open_file

    x = to_float(synthetic.x_test[:200])
    refs = {"float": cnn.float_model.predict(x, verbose=0), "qat": cnn.qat_model.predict(x, verbose=0)}
    for name, path in made.items():
        v = VARIANTS[name]
        y = open_file(path).predict(x, batch_size=64)
        ref = refs[v.reference]
        assert y.shape == ref.shape, name
        agreement = float(np.mean(y.argmax(1) == ref.argmax(1)))
        if v.variant_class == "float":
            assert np.abs(y - ref).max() <= 1e-4, name
            assert agreement == 1.0, name
        else:
            assert agreement >= 0.98, (name, agreement)


def test_io_details_batch_dynamic_and_int8_io(made):
    from edgekit.convert.converters import io_details
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    for name, path in made.items():
        ins, outs = io_details(path)
        assert len(ins) == 1 and len(outs) == 1
        assert ins[0]["shape"] == [-1, 28, 28, 1] and outs[0]["shape"] == [-1, 10], name
        want = VARIANTS[name].io_dtype
        assert ins[0]["dtype"] == outs[0]["dtype"] == want, name
        if want == "int8":  # [0, 1] inputs: scale 1/255, zero point -128
            assert ins[0]["scale"] == pytest.approx(1 / 255, rel=1e-4) and ins[0]["zero_point"] == -128
            assert outs[0]["scale"] > 0 and outs[0]["zero_point"] is not None
        else:
            assert ins[0]["scale"] is None and ins[0]["zero_point"] is None
        if name.startswith("onnx"):
            assert ins[0]["name"] == "image"


def test_int8_and_dynamic_files_are_at_most_032_of_fp32(made):
    for fmt in ("tflite", "onnx"):
        fp32 = made[f"{fmt}-fp32"].stat().st_size
        for name, path in made.items():
            if name.startswith(fmt) and ("int8" in name or "dynamic" in name):
                assert path.stat().st_size <= 0.32 * fp32, (name, path.stat().st_size, fp32)
    assert made["tflite-fp16"].stat().st_size <= 0.55 * made["tflite-fp32"].stat().st_size


def test_every_int8_variant_passes_the_audit(made):
    from edgekit.verify.audit import audit_int8

    for name, path in made.items():
        if "int8" in name:
            audit = audit_int8(path)
            assert audit["passed"], (name, audit["reason"])
            assert audit["integer_mac_fraction"] == 1.0 and audit["int8_weight_fraction"] == 1.0, name


def test_missing_inputs_are_user_errors(cnn, tmp_path):
    import dataclasses

    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS, get_variant

    no_qat = dataclasses.replace(cnn, qat_model=None)
    with pytest.raises(ModelError, match="needs the QAT model"):
        VARIANTS["onnx-int8-qat"].make(no_qat, tmp_path / "a.onnx")
    no_cal = dataclasses.replace(cnn, representative=None)
    with pytest.raises(ConfigError, match="calibration"):
        VARIANTS["tflite-int8-ptq"].make(no_cal, tmp_path / "b.tflite")
    wrong = dataclasses.replace(cnn, representative=np.zeros((4, 14, 14, 1), np.float32))
    with pytest.raises(ConfigError, match="shape"):
        VARIANTS["onnx-int8-ptq"].make(wrong, tmp_path / "c.onnx")
    with pytest.raises(ConfigError, match="unknown variant"):
        get_variant("onnx-int4")
    assert not any(tmp_path.iterdir())


TFLITE = [n for n in EXPECTED if n.startswith("tflite")]
CLEAN_SIGNATURE = {"serving_default": {"inputs": ["image"], "outputs": ["logits"]}}


@pytest.fixture(scope="module")
def mlp_made(trained_run, synthetic, tmp_path_factory) -> dict[str, Path]:
    """The TFLite variants of the MLP, whose QAT file the converter named `tfl.quantize`."""
    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS
    from edgekit.core.data import to_float
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model, representative_set
    from edgekit.runtimes.keras_tf import load_keras_model

    model = load_keras_model(trained_run / "train/mlp/model.keras")
    x, y = to_float(synthetic.x_train), synthetic.y_train
    qat = make_qat_model(model)
    finetune_qat(qat, x, y, epochs=0.2, learning_rate=1e-4, batch_size=128)
    inputs = ConversionInputs(float_model=model, qat_model=qat, representative=representative_set(x, 50))
    out = tmp_path_factory.mktemp("mlp")
    paths = {}
    for name in TFLITE:
        paths[name] = out / f"{name}.tflite"
        VARIANTS[name].make(inputs, paths[name])
    return paths


def test_every_tflite_file_has_one_signature_and_clean_io_names(made, mlp_made):
    """QAT files included: `serving_default`, "image" -> "logits", tensors named after the keys."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.convert.converters import io_details

    files = {f"cnn {n}": made[n] for n in TFLITE} | {f"mlp {n}": p for n, p in mlp_made.items()}
    assert len(files) == 10
    for label, path in files.items():
        it = Interpreter(model_path=str(path))
        assert it.get_signature_list() == CLEAN_SIGNATURE, label
        assert [d["name"] for d in it.get_input_details()] == ["image"], label
        assert [d["name"] for d in it.get_output_details()] == ["logits"], label
        ins, outs = io_details(path)
        assert [(d["signature"], d["signature_key"]) for d in ins + outs] == \
            [("serving_default", "image"), ("serving_default", "logits")], label


def test_every_file_has_its_declared_io_dtype(made, mlp_made):
    """The MLP's files too; int8 I/O needs a usable (non-zero) input scale to quantize images."""
    from edgekit.convert.converters import io_details
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    for name, path in list(made.items()) + list(mlp_made.items()):
        ins, outs = io_details(path)
        want = VARIANTS[name].io_dtype
        assert ins[0]["dtype"] == outs[0]["dtype"] == want, (name, path)
        if want == "int8":
            assert ins[0]["scale"] > 0 and outs[0]["scale"] > 0, (name, path)


def test_a_file_whose_io_dtype_differs_from_the_declared_one_is_refused(cnn, tmp_path):
    from edgekit.errors import ExportError
    from edgekit.core.variants import Format, Role, Variant, VariantClass

    from edgekit.convert.converters import make_tflite_fp32

    liar = Variant("tflite-int8-liar", Format.TFLITE, VariantClass.INT8_PTQ, Role.EXPORT,
                   "declares int8 I/O, converts float32", io_dtype="int8")
    with pytest.raises(ExportError, match="declares int8 input but the converted file takes float32"):
        make_tflite_fp32(liar, cnn, tmp_path / "liar.tflite")
    assert not any(tmp_path.iterdir())


def test_naming_the_io_tensors_changes_only_their_name_strings(cnn, tmp_path, monkeypatch, synthetic):
    """The int8 QAT file, converted with and without the rename: same size, same outputs bit for bit,
    and every differing byte lies inside the two renamed strings."""
    import edgekit.convert.converters as convert
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.core.data import to_float

    named = tmp_path / "named.tflite"
    convert.make_tflite_int8_qat.convert(cnn, named)
    monkeypatch.setattr(convert, "_name_io_tensors", lambda data: data)
    raw = tmp_path / "raw.tflite"
    convert.make_tflite_int8_qat.convert(cnn, raw)
    a, b = raw.read_bytes(), named.read_bytes()
    assert len(a) == len(b)
    old = [Interpreter(model_path=str(raw)).get_input_details()[0]["name"],
           Interpreter(model_path=str(raw)).get_output_details()[0]["name"]]
    assert old != ["image", "logits"]  # the converter's own names, which the rename replaces
    spans = []
    for name in old:
        at = a.find(name.encode())
        assert at > 4 and a.count(name.encode()) == 1, name
        spans.append(range(at - 4, at + len(name) + 1))  # uint32 length, bytes, NUL
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    assert diff and all(any(i in s for s in spans) for i in diff)

    x = to_float(synthetic.x_test[:16])
    outs = []
    for path in (raw, named):
        it = Interpreter(model_path=str(path))
        it.resize_tensor_input(it.get_input_details()[0]["index"], x.shape)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        scale, zp = d["quantization"]
        it.set_tensor(d["index"], np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8))
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    assert np.array_equal(outs[0], outs[1])
