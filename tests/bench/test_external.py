"""`edgekit bench --model`: .tflite/.onnx files made outside edgekit (here by TFLiteConverter and
tf2onnx directly), with and without a reference, and the inputs that must be refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit import cli
from edgekit.bench.external import RANDOM_SAMPLES, prepare_files
from edgekit.core import rundir
from edgekit.errors import ModelError

FAST = ["--quick", "--threads", "1", "--batch-sizes", "1"]


@pytest.fixture(scope="module")
def made_elsewhere(tmp_path_factory) -> dict[str, Path]:
    """A tiny tf_keras model, and the files another tool would make from it: float TFLite, int8-I/O
    TFLite and ONNX; plus a labelled test set of its input shape."""
    import tensorflow as tf
    import tf2onnx
    import tf_keras as keras

    d = tmp_path_factory.mktemp("elsewhere")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    model.save(d / "tiny.keras")
    (d / "tiny.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(1)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (d / "tiny_int8.tflite").write_bytes(conv.convert())
    tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, 8, 8, 1), tf.float32, name="x"),),
                               output_path=str(d / "tiny.onnx"))
    np.savez(d / "test.npz", x_test=x, y_test=np.argmax(model.predict(x, verbose=0), axis=1))
    return {"keras": d / "tiny.keras", "tflite": d / "tiny.tflite", "onnx": d / "tiny.onnx",
            "int8": d / "tiny_int8.tflite", "data": d / "test.npz"}


def _records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["records"]


def test_random_inputs_said_on_every_line(made_elsewhere, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--quiet", "bench", "--model", str(made_elsewhere["tflite"]), "--model", str(made_elsewhere["onnx"]),
            "--out", str(out), *FAST]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("report: ")
    assert len(lines) == 4 and all("random inputs of shape (8, 8, 1)" in ln and "seed 0" in ln for ln in lines[:-1])
    recs = _records(out)
    assert {(r["variant"], r["runtime"]) for r in recs} == {("tiny.tflite", "litert"), ("tiny.onnx", "onnxruntime")}
    for r in recs:
        assert r["status"] == "ok" and r["p50_ms"] > 0 and r["peak_rss_mb"] > 0, r
        assert r["accuracy"] is None and r["agreement"] is None and r["reference"] is None
        assert r["inputs"].startswith("random inputs") and r["samples"] == RANDOM_SAMPLES
        assert r["file"].startswith("external/") and r["sha256"] == rundir.sha256_file(out / r["file"])
    m = rundir.load_manifest(out)
    ext = m["stages"]["external"]
    assert ext["files"]["tiny.tflite"]["input"]["shape"] == [-1, 8, 8, 1]
    assert ext["inputs"]["random"] and ext["inputs"]["seed"] == 0
    assert "random inputs" in (out / "report.md").read_text()
    # the same command again reuses everything; report re-renders; check answers in one line
    assert cli.main(argv) == 0
    assert json.loads((out / "results.json").read_text())["records"] == recs
    assert cli.main(["--quiet", "report", "--run", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["--quiet", "check", "--run", str(out)]) in (0, 1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 1


def test_keras_reference_and_labelled_data(made_elsewhere, tmp_path, capsys):
    """Parity against the Keras model the files came from, on labelled data: the float files agree
    exactly, the int8-I/O one (fed floats the runtime quantizes) almost; Keras itself is not benched
    (--runtimes), a worker only predicts it."""
    out = tmp_path / "run"
    assert cli.main(["--quiet", "bench", "--model", str(made_elsewhere["tflite"]), "--model", str(made_elsewhere["int8"]),
                     "--model", str(made_elsewhere["onnx"]), "--reference", str(made_elsewhere["keras"]),
                     "--dataset", str(made_elsewhere["data"]), "--runtimes", "litert,onnxruntime", "--out", str(out),
                     *FAST]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[:-1]
    assert lines and all("vs keras-fp32" in ln and "x_test of test.npz" in ln for ln in lines)
    recs = {(r["variant"], json.dumps(r["runtime_options"])): r for r in _records(out)}
    assert {v for v, _ in recs} == {"tiny.tflite", "tiny_int8.tflite", "tiny.onnx"}  # the reference is not timed
    for (variant, _), r in recs.items():
        assert r["status"] == "ok" and r["reference"] == "keras-fp32" and r["samples"] == 64, r
        if variant == "tiny_int8.tflite":
            assert r["agreement"] >= 0.9 and 0 < r["max_abs_diff"] < 0.5, r
        else:  # the labels are the Keras model's own predictions
            assert r["agreement"] == 1.0 and r["accuracy"] == 1.0 and r["max_abs_diff"] < 1e-4, r
    assert "max abs diff" in (out / "report.md").read_text()


def test_another_file_as_reference(made_elsewhere, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--quiet", "bench", "--model", str(made_elsewhere["onnx"]), "--reference",
                     str(made_elsewhere["tflite"]), "--runtimes", "onnxruntime", "--out", str(out), *FAST]) == 0
    assert "vs tiny.tflite" in capsys.readouterr().out
    (r,) = _records(out)
    assert r["reference"] == "tiny.tflite" and r["agreement"] == 1.0 and r["max_abs_diff"] < 1e-4
    assert r["inputs"].startswith("random inputs")


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("kind", ["not-a-model-tflite", "not-a-model-onnx", "truncated-tflite", "truncated-onnx",
                                  "empty"])
def test_a_file_that_is_not_a_model_exits_2(made_elsewhere, tmp_path, capsys, kind):
    what, fmt = kind.rsplit("-", 1) if kind != "empty" else ("empty", "onnx")
    bad = tmp_path / f"bad.{fmt}"
    data = made_elsewhere["tflite" if fmt == "tflite" else "onnx"].read_bytes()
    bad.write_bytes({"not-a-model": b"hello, not a model\n" * 4, "truncated": data[:len(data) // 2],
                     "empty": b""}[what])
    assert cli.main(["--quiet", "bench", "--model", str(bad), "--out", str(tmp_path / "run"), *FAST]) == 2
    err = _err(capsys)
    assert str(bad) in err and ("cannot open it as a model" in err or "not a TFLite model" in err
                                or "empty" in err), err
    assert not (tmp_path / "run" / "results.json").exists()


def test_data_of_another_shape_exits_2(made_elsewhere, tmp_path, capsys):
    data = tmp_path / "other.npz"
    np.savez(data, x=np.zeros((4, 9, 9, 1), np.float32))
    assert cli.main(["--quiet", "bench", "--model", str(made_elsewhere["tflite"]), "--dataset", str(data),
                     "--out", str(tmp_path / "run"), *FAST]) == 2
    err = _err(capsys)
    assert "(9, 9, 1) per sample" in err and "takes (8, 8, 1)" in err and "(N, 8, 8, 1)" in err


def test_other_refusals_exit_2(made_elsewhere, tmp_path, capsys):
    tflite, out = str(made_elsewhere["tflite"]), str(tmp_path / "run")
    assert cli.main(["--quiet", "bench", "--model", str(made_elsewhere["keras"]), "--out", out]) == 2
    assert "reads .onnx and .tflite files" in _err(capsys)
    # a directory of another run is not overwritten
    rundir.update_manifest(tmp_path / "trained", lambda m: rundir.stage(m, "train").update(status="ok"))
    assert cli.main(["--quiet", "bench", "--model", tflite, "--out", str(tmp_path / "trained")]) == 2
    assert "pass a new --out" in _err(capsys)


def test_keras_reference_with_code_is_refused_before_loading(made_elsewhere, tmp_path, capsys):
    import tf_keras as keras

    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Lambda(lambda t: t * 2.0),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    model.save(tmp_path / "lambda.keras")
    assert cli.main(["--quiet", "bench", "--model", str(made_elsewhere["tflite"]), "--reference",
                     str(tmp_path / "lambda.keras"), "--out", str(tmp_path / "run"), *FAST]) == 2
    err = _err(capsys)
    assert "refused to load" in err and "Lambda" in err and "--trust-model" not in err


def test_files_are_opened_only_in_worker_subprocesses(made_elsewhere, tmp_path, monkeypatch):
    """Neither runtime's session nor edgekit's converters may open the file in this process."""
    import edgekit.convert.converters as converters
    import edgekit.runtimes.litert as litert
    import edgekit.runtimes.onnxrt as onnxrt

    def refuse(*_a, **_k):
        raise AssertionError("a file made elsewhere was opened in edgekit's own process")
    for mod, name in ((litert, "open_session"), (onnxrt, "open_session"), (converters, "io_details")):
        monkeypatch.setattr(mod, name, refuse)
    section = prepare_files([made_elsewhere["tflite"], made_elsewhere["onnx"]], tmp_path / "run")
    assert section["files"]["tiny.onnx"]["input"]["shape"] == [-1, 8, 8, 1]


def test_other_files_in_the_same_out_need_force(made_elsewhere, tmp_path):
    out = tmp_path / "run"
    prepare_files([made_elsewhere["tflite"]], out)
    with pytest.raises(Exception, match="pass --force"):
        prepare_files([made_elsewhere["onnx"]], out)
    section = prepare_files([made_elsewhere["onnx"]], out, force=True)
    assert list(section["files"]) == ["tiny.onnx"]


def test_a_worker_crash_is_a_model_error(made_elsewhere, tmp_path, monkeypatch):
    """A file that kills its runtime (a segfault in a parser) fails in the worker, never here."""
    import edgekit.bench.external as external

    monkeypatch.setattr(external, "run_worker", lambda job, folder: [
        {"type": "crash", "runtime": job.runtime, "id": 0, "error": "litert worker exited with code -11"}])
    shutil.copy(made_elsewhere["tflite"], tmp_path / "x.tflite")
    with pytest.raises(ModelError, match="exited with code -11"):
        prepare_files([tmp_path / "x.tflite"], tmp_path / "run")


def test_the_gate_judges_files_another_tool_made_against_the_reference(made_elsewhere, tmp_path, capsys):
    """`edgekit check --run DIR` on a `bench --model` run: each file's top-1 agreement with the
    reference against [thresholds.external] (default 0.99): the float files pass; a profile
    demanding more than a file gives fails it (exit 1), with the reference named."""
    out = tmp_path / "run"
    argv = ["--quiet", "bench", "--model", str(made_elsewhere["tflite"]), "--model", str(made_elsewhere["onnx"]),
            "--reference", str(made_elsewhere["keras"]), "--dataset", str(made_elsewhere["data"]), "--out", str(out),
            *FAST]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["--quiet", "check", "--run", str(out)]) == 0
    rows = json.loads((out / "check.json").read_text())["rows"]
    assert sorted(r["variant"] for r in rows if r["check"] == "min_agreement") == ["tiny", "tiny"] or \
        len([r for r in rows if r["check"] == "min_agreement" and r["passed"]]) == 2, rows
    strict = tmp_path / "strict.toml"
    strict.write_text('variants = ["tflite-fp32"]\n[thresholds.external]\nmin_agreement = 1.01\n')
    assert cli.main(["--quiet", "check", "--run", str(out), "--profile", str(strict)]) == 1
    assert "FAILED: 0 of 2 checks" in capsys.readouterr().out
