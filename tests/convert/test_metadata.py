"""Every exported file carries what its app needs, readable back, and adding it changes nothing else."""
from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest

from edgekit.errors import ConfigError

LABELS = ("zero", "one", "two")
SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def tiny():
    """A tiny tf_keras classifier (random: these tests compare files, not accuracy) and its inputs."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([
        tf_keras.Input((12, 12, 1)), tf_keras.layers.Rescaling(1 / 255.0, name="pixels"),
        tf_keras.layers.Conv2D(4, 3, activation="relu"), tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((40, 12, 12, 1), dtype=np.float32) * 255
    return model, x


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    """name -> (file made by the registry, with metadata; the same converter's bare file, without)."""
    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS, converter_of

    model, x = tiny
    inputs = ConversionInputs(float_model=model, qat_model=None, representative=x, source_sha256=SHA,
                              labels=LABELS)
    out = tmp_path_factory.mktemp("meta")
    made = {}
    for name in ("tflite-fp32", "tflite-int8-ptq", "onnx-fp32", "onnx-int8-ptq"):
        v = VARIANTS[name]
        with_meta, bare = out / f"{name}{v.suffix}", out / f"bare-{name}{v.suffix}"
        v.make(inputs, with_meta)
        converter_of(v).convert(inputs, bare)
        made[name] = (with_meta, bare)
    return made


def test_metadata_round_trips_in_tflite_and_onnx_files(files, tiny):
    from edgekit.convert.converters import io_details
    from edgekit.convert.metadata import FileMetadata, read_metadata
    from edgekit.core.version import __version__

    _, x = tiny
    for name, (path, bare) in files.items():
        meta = FileMetadata.from_json(read_metadata(path))
        ins, outs = io_details(path)
        assert meta.variant == name and meta.edgekit_version == __version__ and meta.source_sha256 == SHA
        assert meta.labels == LABELS and meta.input_shape == (-1, 12, 12, 1) and meta.output_shape == (-1, 3)
        assert meta.input_range == (float(x.min()), float(x.max()))
        assert meta.preprocessing == ("pixels: x * 0.0039215686 + 0",)
        assert (meta.input_name, meta.input_dtype, meta.input_scale, meta.input_zero_point) == \
            (ins[0]["signature_key"], ins[0]["dtype"], ins[0]["scale"], ins[0]["zero_point"])
        assert (meta.output_dtype, meta.output_scale, meta.output_zero_point) == \
            (outs[0]["dtype"], outs[0]["scale"], outs[0]["zero_point"])
        int8_io = name == "tflite-int8-ptq"
        assert (meta.input_scale is not None) == int8_io and (meta.output_zero_point is not None) == int8_io
        assert read_metadata(bare) == {}


def test_metadata_leaves_outputs_bit_identical(files, tiny):
    from edgekit.verify.parity import predict_file

    _, x = tiny
    for name, (path, bare) in files.items():
        assert np.array_equal(predict_file(path, x), predict_file(bare, x)), name


def test_tflite_metadata_keeps_every_byte_and_alignment_of_the_converted_model(files):
    """The converted flatbuffer follows the inserted tables unchanged, shifted by a multiple of 16,
    so every weight buffer keeps its alignment; the converter's own entries stay."""
    from ai_edge_litert import schema_py_generated as schema

    from edgekit.convert.metadata import tflite_metadata

    for name in ("tflite-fp32", "tflite-int8-ptq"):
        path, bare = files[name]
        new, old = path.read_bytes(), bare.read_bytes()
        shift = len(new) - len(old)
        assert shift % 16 == 0 and new[8 + shift:] == old[8:] and new[4:8] == old[4:8] == b"TFL3"

        def data_alignment(data: bytes) -> list[int]:
            m = schema.Model.GetRootAs(data, 0)
            bufs = [m.Buffers(b) for b in range(m.BuffersLength())]
            return [b._tab.Vector(b._tab.Offset(4)) % 16 for b in bufs if b.DataLength()]
        assert data_alignment(new)[:len(data_alignment(old))] == data_alignment(old)
        entries = tflite_metadata(new)
        assert {"min_runtime_version", "edgekit"} <= set(entries)
        assert entries["min_runtime_version"] == tflite_metadata(old)["min_runtime_version"]


def test_writing_metadata_again_replaces_it(files, tmp_path):
    import shutil

    from edgekit.convert.metadata import FileMetadata, read_metadata, write_metadata
    from edgekit.verify.parity import predict_file

    x = np.random.default_rng(2).random((4, 12, 12, 1), dtype=np.float32)
    for name in ("tflite-int8-ptq", "onnx-fp32"):
        path = tmp_path / files[name][0].name
        shutil.copy(files[name][0], path)
        before = predict_file(path, x)
        meta = dataclasses.replace(FileMetadata.from_json(read_metadata(path)), labels=("a", "b", "c"))
        write_metadata(path, meta)
        assert FileMetadata.from_json(read_metadata(path)) == meta
        assert np.array_equal(predict_file(path, x), before)


def test_onnx_metadata_is_one_json_value_per_key(files):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(files["onnx-int8-ptq"][0])).metadata_props}
    assert json.loads(props["edgekit.labels"]) == list(LABELS)
    assert json.loads(props["edgekit.input_shape"]) == [-1, 12, 12, 1]
    assert json.loads(props["edgekit.source_sha256"]) == SHA


def test_labels_file(tmp_path):
    from edgekit.convert.metadata import check_labels, read_labels

    (tmp_path / "ok.txt").write_text("cat\ndog \n\n")
    assert read_labels(tmp_path / "ok.txt") == ("cat", "dog")
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    for bad in ("gap.txt", "missing.txt"):
        with pytest.raises(ConfigError):
            read_labels(tmp_path / bad)
    with pytest.raises(ConfigError, match="2 class labels but the model outputs 3"):
        check_labels(("cat", "dog"), 3)


def test_labels_that_do_not_match_the_classes_fail_the_file(tiny, tmp_path):
    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    model, x = tiny
    v = VARIANTS["tflite-fp32"]
    with pytest.raises(ConfigError):
        v.make(ConversionInputs(float_model=model, qat_model=None, representative=None, labels=("a",)),
               tmp_path / "f.tflite")
    assert not (tmp_path / "f.tflite").exists()


def test_tflite_metadata_of_a_file_without_the_identifier_is_refused():
    from edgekit.convert.metadata import tflite_with_metadata
    from edgekit.errors import ModelError

    with pytest.raises(ModelError):
        tflite_with_metadata(struct.pack("<I", 8) + b"NOPE" + bytes(16), "edgekit", b"{}")
