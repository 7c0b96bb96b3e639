"""Runtimes, differentially: each exported file on its runtime against the Keras model it came from,
and the int8 input/output arithmetic checked by hand against the file's own scale and zero point."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ConfigError, ModelError
from edgekit.runtimes import RUNTIMES, dequantize, get_runtime, open_file, quantize, runtime_for


def _variants(run: Path) -> dict[str, Path]:
    import json

    m = json.loads((run / "manifest.json").read_text())
    variants = m["stages"]["export"]["models"]["cnn"]["variants"]
    return {name: run / v["file"]["path"] for name, v in variants.items() if v.get("file")}


@pytest.fixture(scope="module")
def cnn(exported_run, synthetic):
    """The CNN's files, its float Keras logits and the inputs they were computed on."""
    from edgekit.core.data import to_float
    from edgekit.verify.parity import predict_keras

    x = to_float(synthetic.x_test[:200])
    return {"files": _variants(exported_run), "x": x, "y": synthetic.y_test[:200],
            "keras": exported_run / "train" / "cnn" / "model.keras",
            "ref": predict_keras(exported_run / "train" / "cnn" / "model.keras", x)}


def test_quantize_rounds_half_away_from_zero_and_saturates():
    scale, zp = 0.5, 3
    x = np.array([0.25, -0.25, 0.75, 1.25, -1.25, 100.0, -100.0], np.float32)  # /scale: .5 -.5 1.5 2.5 -2.5 ...
    assert quantize(x, scale, zp, np.int8).tolist() == [4, 2, 5, 6, 0, 127, -128]
    assert quantize(x, scale, zp, np.uint8).tolist() == [4, 2, 5, 6, 0, 203, 0]
    assert dequantize(np.array([4, 2, -128], np.int8), scale, zp).tolist() == [0.5, -0.5, -65.5]


def test_pixels_map_exactly_to_int8_with_scale_1_255():
    pixels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    q = quantize(pixels, 1.0 / 255.0, -128, np.int8)
    assert q.tolist() == list(range(-128, 128))


def test_registry_and_option_grids():
    assert runtime_for("a.tflite").name == "litert" and runtime_for("a.onnx").name == "onnxruntime"
    assert runtime_for("a.keras").name == "keras" and runtime_for("a.h5").name == "keras"
    assert RUNTIMES["litert"].option_grid() == [{"xnnpack": True}, {"xnnpack": False}]
    grid = RUNTIMES["onnxruntime"].option_grid()
    assert grid[0] == {"graph_optimization": "all"}
    assert all(g.get("provider", "").endswith("ExecutionProvider") for g in grid[1:])  # only when installed
    assert RUNTIMES["keras"].option_grid() == [{}]
    with pytest.raises(ConfigError, match="choose one of keras, litert, onnxruntime"):
        get_runtime("tensorrt")
    with pytest.raises(ConfigError, match="no runtime runs '.pt' files"):
        runtime_for("model.pt")


def test_float_files_match_keras(cnn):
    for name in ("tflite-fp32", "onnx-fp32"):
        out = open_file(cnn["files"][name]).predict(cnn["x"], batch_size=64)
        np.testing.assert_allclose(out, cnn["ref"], atol=1e-4, err_msg=name)


@pytest.mark.parametrize("options", [{"xnnpack": False}, {"xnnpack": True}])
def test_litert_options_agree(cnn, options):
    out = open_file(cnn["files"]["tflite-fp32"], threads=2, **options).predict(cnn["x"], batch_size=32)
    np.testing.assert_allclose(out, cnn["ref"], atol=1e-4)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_onnxruntime_optimization_levels_agree(cnn, level):
    out = open_file(cnn["files"]["onnx-fp32"], graph_optimization=level).predict(cnn["x"])
    np.testing.assert_allclose(out, cnn["ref"], atol=1e-4)


def test_quantized_files_follow_keras(cnn):
    """int8/fp16/dynamic files: dequantized logits close to Keras' and (nearly) the same top-1."""
    ref_top = cnn["ref"].argmax(1)
    span = float(cnn["ref"].max() - cnn["ref"].min())
    for name, path in cnn["files"].items():
        if name.endswith("fp32"):
            continue
        out = open_file(path).predict(cnn["x"], batch_size=50)
        assert out.dtype == np.float32 and out.shape == cnn["ref"].shape, name
        assert np.mean(out.argmax(1) == ref_top) >= 0.95, name
        assert np.abs(out - cnn["ref"]).max() <= 0.2 * span, name


def test_int8_tflite_io_by_hand(cnn):
    """The session feeds int8 quantized with the file's own (scale, zero point) and dequantizes
    the int8 output with the output's own: redo both by hand on the raw interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    path = cnn["files"]["tflite-int8-ptq"]
    raw = Interpreter(model_path=str(path), num_threads=1)
    inp, out = raw.get_input_details()[0], raw.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    s_in, z_in = inp["quantization"]
    s_out, z_out = out["quantization"]

    x = cnn["x"][:8]
    q = np.clip(np.floor(x / s_in + 0.5) + z_in, -128, 127).astype(np.int8)  # x >= 0 here
    session = open_file(path)
    assert session.input_quant == (s_in, z_in)
    np.testing.assert_array_equal(session.prepare(x), q)

    raw.resize_tensor_input(inp["index"], [8, 28, 28, 1])
    raw.allocate_tensors()
    raw.set_tensor(inp["index"], q)
    raw.invoke()
    by_hand = (raw.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
    np.testing.assert_allclose(session.predict(x), by_hand, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["tflite-fp32", "tflite-int8-qat", "onnx-fp32", "onnx-int8-qat"])
def test_bind_runs_one_inference_at_any_batch(cnn, name):
    session = open_file(cnn["files"][name])
    for batch in (1, 32, 3):
        run = session.bind(session.prepare(cnn["x"][:batch]))
        for _ in range(3):
            run()
    # binding (which resizes LiteRT) leaves predict correct
    out = session.predict(cnn["x"][:10])
    assert np.mean(out.argmax(1) == cnn["ref"][:10].argmax(1)) >= 0.9


def test_keras_session_is_a_compiled_function(cnn):
    import tensorflow as tf

    session = open_file(cnn["keras"])
    assert isinstance(session._fn, tf.types.experimental.GenericFunction)  # tf.function, not eager
    out = session.bind(session.prepare(cnn["x"][:4]))()
    np.testing.assert_allclose(np.asarray(out), cnn["ref"][:4], atol=1e-5)
    np.testing.assert_allclose(session.predict(cnn["x"], batch_size=64), cnn["ref"], atol=1e-5)


def test_unloadable_files_raise_one_line_model_errors(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError) as e:
        open_file(bad)
    assert "\n" not in str(e.value) and "re-export" in str(e.value)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError):
        open_file(bad_onnx)
    with pytest.raises(ModelError, match="not found"):
        open_file(tmp_path / "missing.keras")


@pytest.mark.parametrize("name", ["tflite-fp32", "tflite-int8-ptq", "onnx-fp32", "onnx-int8-ptq"])
def test_integer_inputs_are_refused_floats_are_taken(cnn, synthetic, name):
    """uint8 pixels 0..255 are not the [0, 1] floats the models take: a float model would see
    values 255x too large and an int8-I/O one would saturate them, so they are refused in one
    line saying the fix; any float dtype is taken, and pixels / 255 give the same logits as x."""
    session = open_file(cnn["files"][name])
    pixels = synthetic.x_test[:8].reshape(cnn["x"][:8].shape)
    assert pixels.dtype == np.uint8
    for bad in (pixels, pixels.astype(np.int32), pixels > 127):
        for call in (session.predict, session.prepare):
            with pytest.raises(ConfigError) as e:
                call(bad)
            assert str(e.value) == (f"{cnn['files'][name]}: input dtype {bad.dtype} refused; pass float32 "
                                    "in [0, 1] (e.g. uint8 pixels / 255)")
    x = cnn["x"][:8]
    expected = session.predict(x)
    # float64 p / 255 rounded to float32 equals float32(p) / 255 for all 256 pixel values (IEEE
    # arithmetic, the same on every CPU), so the session sees exactly x
    np.testing.assert_array_equal(session.predict(pixels / 255), expected)
    np.testing.assert_array_equal(session.predict(x.astype(np.float64)), expected)
    np.testing.assert_array_equal(session.predict(x.tolist()), expected)     # nested lists of floats too


def test_unknown_runtime_options_are_refused_with_the_valid_ones(tmp_path):
    """A misspelled option used to be ignored (the default ran instead); checked before the file
    is opened, so no file is needed here."""
    with pytest.raises(ConfigError, match=r"^litert: unknown runtime option xnnpak; valid: xnnpack$"):
        open_file(tmp_path / "m.tflite", xnnpak=False)
    with pytest.raises(ConfigError, match=r"^onnxruntime: unknown runtime options graph_optimisation, thread; "
                                          r"valid: graph_optimization, provider$"):
        open_file(tmp_path / "m.onnx", graph_optimisation="disable", thread=2)
    with pytest.raises(ConfigError, match=r"^keras: unknown runtime option xnnpack; valid: model$"):
        get_runtime("keras").open(tmp_path / "m.keras", xnnpack=False)
    for rt in RUNTIMES.values():  # every option the bench sweeps is one the runtime takes
        assert all(set(options) <= set(rt.option_names()) for options in rt.option_grid()), rt.name
