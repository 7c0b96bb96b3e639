"""`edgekit export`: every variant made, validated and recorded; BYO models of other shapes;
failures recorded without stopping the rest and without leaving files; re-runs reuse work."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.core import rundir
from edgekit.cli import main
from edgekit.core.config import Thresholds
from edgekit.errors import ConfigError, DataError, ModelError, RunDirError
from edgekit.core.progress import Progress

from conftest import copy_run

ALL_VARIANTS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq", "tflite-int8-qat",
                "onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat")
NO_DATA_VARIANTS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "onnx-fp32")


def _export_section(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"]["export"]


def _stored_parity_inputs(run: Path, name: str) -> tuple[dict, dict]:
    """A user model's parity_inputs record and the arrays of its file, after checking that the
    file is where the record says and has the recorded sha256."""
    rec = _export_section(run)["models"][name]["parity_inputs"]
    assert rec["path"] == f"export/{name}/parity_inputs.npz"
    path = run / rec["path"]
    assert rundir.sha256_file(path) == rec["sha256"]
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert arrays["x"].dtype == np.float32 and len(arrays["x"]) == rec["samples"]
    assert ("y" in arrays) == rec["labels"] and set(arrays) <= {"x", "y"}
    if rec["labels"]:
        assert arrays["y"].dtype == np.int64 and len(arrays["y"]) == rec["samples"]
    return rec, arrays


def _quiet_capture():
    import io

    stream = io.StringIO()
    return Progress(stream=stream), stream


# ---------------------------------------------------------------------------------------------
# A training run's models

def test_every_variant_exported_validated_and_runnable(exported_run, synthetic):
    from edgekit.core.data import to_float
    from edgekit.verify.parity import compare_file
    from edgekit.runtimes import open_file

    sec = _export_section(exported_run)
    assert sec["data"]["parity"] == "synthetic test set" and sec["data"]["samples"] == len(synthetic.y_test)
    # a trained network's parity set is its data set's test set: named and hashed, no file of its own
    assert sec["models"]["cnn"]["parity_inputs"] == {
        "dataset": "synthetic", "samples": len(synthetic.y_test), "data_sha256": sec["data"]["data_sha256"],
        "description": "synthetic test set"}
    assert not (exported_run / "export" / "cnn" / "parity_inputs.npz").exists()
    from edgekit.core.machine import describe  # where parity and kernel fidelity were measured

    assert sec["versions"]["cpu_class"] == describe()["cpu_class"] and sec["versions"]["onnxruntime"]
    cnn = sec["models"]["cnn"]
    assert set(cnn["variants"]) == set(ALL_VARIANTS)
    assert cnn["input_shape"] == [28, 28, 1] and cnn["num_classes"] == 10
    assert cnn["qat"]["status"] == "ok" and (exported_run / cnn["qat"]["file"]["path"]).is_file()
    assert cnn["float_accuracy"] > 0.5

    x = to_float(synthetic.x_test[:64])
    for name, v in cnn["variants"].items():
        assert v["file"] is not None, f"{name}: {v['error']}"
        path = exported_run / v["file"]["path"]
        assert path.parent == exported_run / "export" / "cnn"
        assert rundir.sha256_file(path) == v["file"]["sha256"] and path.stat().st_size == v["file"]["size_bytes"]
        assert open_file(path).predict(x).shape == (64, 10)          # runs on its own runtime
        for io in v["inputs"] + v["outputs"]:
            assert {"name", "shape", "dtype", "scale", "zero_point"} <= set(io)
        assert v["inputs"][0]["shape"][1:] == [28, 28, 1]
        p = v["parity"]
        assert p["samples"] == len(synthetic.y_test) and p["float_accuracy"] == cnn["float_accuracy"]
        # status follows the checks: failed exactly when a set threshold is not met
        assert (v["status"] == "failed") == any(c["passed"] is False for c in v["checks"]), name
        if v["variant_class"].startswith("int8"):
            assert v["audit"] is not None and "passed" in v["audit"]
        expected_ref = "qat" if name.endswith("qat") else "float"
        assert v["reference"] == expected_ref
    for name in ("tflite-fp32", "onnx-fp32"):
        v = cnn["variants"][name]
        assert v["status"] == "ok" and v["parity"]["agreement"] == 1.0 and v["parity"]["max_abs_diff"] < 1e-4
        assert {c["name"] for c in v["checks"]} == {"min_agreement", "max_abs_diff"}
    # an int8-I/O file says how to feed it: the [0, 1] input range quantized with its own parameters
    inp = cnn["variants"]["tflite-int8-qat"]["inputs"][0]
    if inp["dtype"] == "int8":
        assert inp["scale"] == pytest.approx(1 / 255, rel=0.05) and inp["zero_point"] == -128
    # the default profile judges size against what each file's route stores (recorded with the file)
    for name in ("tflite-fp16", "tflite-dynamic", "tflite-int8-ptq", "onnx-int8-ptq", "onnx-int8-qat"):
        v = cnn["variants"][name]
        row = {c["name"]: c for c in v["checks"]}["max_expected_size_excess"]
        expected = v["file"]["expected_size"]["expected_weight_bytes"]
        assert row["value"] == pytest.approx(v["file"]["weight_bytes"] / expected - 1, abs=1e-6), name
        assert row["passed"] and row["limit"] == 0.05, (name, row)
    for name, v in cnn["variants"].items():
        assert 0 < v["file"]["weight_bytes"] < v["file"]["size_bytes"], name
        # kernel fidelity: every int8 file, on the whole parity set, judged by min_kernel_agreement
        kf = v["kernel_fidelity"]
        if not v["variant_class"].startswith("int8"):
            assert kf is None and "onnx_int8_encoding" not in v, name
            continue
        assert kf["samples"] == len(synthetic.y_test) and 0.0 <= kf["agreement"] <= 1.0
        assert (kf["runtime"], kf["fast"], kf["reference"]) == (
            ("onnxruntime", "graph_optimization=all", "graph_optimization=disable") if v["format"] == "onnx"
            else ("litert", "xnnpack=on", "xnnpack=off"))
        row = {c["name"]: c for c in v["checks"]}["min_kernel_agreement"]
        assert row["value"] == kf["agreement"] and row["passed"] == (kf["agreement"] >= 0.999)
        assert (kf["avoid"] is None) == row["passed"]
        if v["format"] == "onnx":
            assert v["onnx_int8_encoding"] == "u8u8"       # the default profile's encoding

    # the recorded parity is what an independent run of the file against the QAT model gives
    qv = cnn["variants"]["onnx-int8-qat"]
    xs = to_float(synthetic.x_test)
    again = compare_file(exported_run / qv["file"]["path"], exported_run / cnn["qat"]["file"]["path"], xs,
                         synthetic.y_test)
    assert again.agreement == pytest.approx(qv["parity"]["agreement"], abs=1e-9)
    assert again.max_abs_diff == pytest.approx(qv["parity"]["max_abs_diff"], rel=1e-4, abs=1e-6)

    rows = json.loads((exported_run / "export" / "parity.json").read_text())["rows"]
    assert {(r["model"], r["variant"]) for r in rows} == {("cnn", n) for n in ALL_VARIANTS}
    for r in rows:
        v = cnn["variants"][r["variant"]]
        assert r["weight_bytes"] == v["file"]["weight_bytes"]
        kf = v["kernel_fidelity"] or {}
        assert (r["kernel_agreement"], r["kernel_max_abs_diff"], r["kernel_runtime"]) == (
            kf.get("agreement"), kf.get("max_abs_diff"), kf.get("runtime"))


def test_rerun_skips_fresh_variants_and_redoes_missing_ones(exported_run, tiny_profile, tmp_path):
    from edgekit.export.stage import export_run

    run = copy_run(exported_run, tmp_path / "run")
    before = _export_section(run)["models"]["cnn"]
    gone = run / before["variants"]["onnx-fp32"]["file"]["path"]
    gone.unlink()
    progress, stream = _quiet_capture()
    after = export_run(run, tiny_profile, models=("cnn",), progress=progress)["models"]["cnn"]
    log = stream.getvalue()
    assert "QAT model is current" in log
    for name, v in before["variants"].items():
        if name == "onnx-fp32":
            assert after["variants"][name]["seconds"] != v["seconds"] and gone.is_file()
        elif v["status"] == "ok":
            assert after["variants"][name] == v, name           # untouched record: reused
            assert f"{name} is current" in log
    assert after["qat"] == before["qat"]

    # force redoes a fresh variant
    one = dataclasses.replace(tiny_profile, variants=("tflite-fp32",))
    forced = export_run(run, one, models=("cnn",), force=True, progress=_quiet_capture()[0])["models"]["cnn"]
    assert forced["variants"]["tflite-fp32"]["seconds"] != before["variants"]["tflite-fp32"]["seconds"]
    assert set(forced["variants"]) == {"tflite-fp32"}    # the manifest lists what this profile made


def test_failed_variant_leaves_no_file_and_the_others_go_on(exported_run, tiny_profile, tmp_path, monkeypatch,
                                                            capsys):
    """A converter that writes a corrupt file: the runtime cannot load it, so the variant fails,
    its file (also the good one of the earlier export) is removed, and the next variant is still
    made. A variant below its thresholds is failed too, but keeps its file."""
    from edgekit.convert import converters as convert
    from edgekit.core import variants
    from edgekit.export.stage import export_run

    def corrupt(inputs, path):
        Path(path).write_bytes(b"this is not a flatbuffer")

    # converters register against the rows (edgekit.core.variants.register_converter): swap fp16's
    monkeypatch.setitem(variants._CONVERTERS, "tflite-fp16", convert.checked(corrupt))
    run = copy_run(exported_run, tmp_path / "run")
    folder = run / "export" / "cnn"
    assert (folder / "tflite-fp16.tflite").is_file()
    profile = dataclasses.replace(
        tiny_profile, variants=("tflite-fp16", "tflite-fp32", "tflite-dynamic"),
        thresholds={"tflite-dynamic": Thresholds(max_size_bytes=100)})
    sec = export_run(run, profile, models=("cnn",), force=True, progress=Progress(quiet=True))
    v = sec["models"]["cnn"]["variants"]
    err = capsys.readouterr().err
    assert v["tflite-fp16"]["status"] == "failed" and "LiteRT cannot load" in v["tflite-fp16"]["error"]
    assert v["tflite-fp16"]["file"] is None and v["tflite-fp16"]["files"] == []
    assert "tflite-fp16 FAILED" in err
    assert not (folder / "tflite-fp16.tflite").exists()
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]
    assert v["tflite-fp32"]["status"] == "ok"
    # below its threshold: failed, loudly, file kept and listed
    dyn = v["tflite-dynamic"]
    assert dyn["status"] == "failed" and "max_size_bytes" in dyn["error"] and "tflite-dynamic FAILED" in err
    assert (run / dyn["file"]["path"]).is_file()
    rows = json.loads((run / "export" / "parity.json").read_text())["rows"]
    assert {r["variant"]: r["status"] for r in rows} == {"tflite-fp16": "failed", "tflite-fp32": "ok",
                                                         "tflite-dynamic": "failed"}


def test_parity_json_is_written_once_per_model(exported_run, tiny_profile, tmp_path, monkeypatch):
    """The manifest records each variant as it finishes; parity.json, a summary for people and
    tools, is written once when the model's variants are done, not after every variant."""
    from edgekit.export.stage import export_run

    run = copy_run(exported_run, tmp_path / "run")
    written = []
    real = rundir.atomic_write_json

    def counting(path, data):
        if Path(path).name == "parity.json":
            written.append(data)
        return real(path, data)
    monkeypatch.setattr(rundir, "atomic_write_json", counting)
    two = dataclasses.replace(tiny_profile, variants=("tflite-fp32", "onnx-fp32"))
    export_run(run, two, models=("cnn",), force=True, progress=Progress(quiet=True))
    assert len(written) == 1
    assert {r["variant"] for r in written[0]["rows"]} == {"tflite-fp32", "onnx-fp32"}
    export_run(run, two, models=("cnn",), progress=Progress(quiet=True))   # everything current: still once
    assert len(written) == 2


def test_int8_file_records_parity_on_emulated_cpus(exported_run, tiny_profile, tmp_path):
    """An emulated CPU this machine cannot run (arm64 without its sysroot) is a record with its
    reason and `<threshold>@<cpu>` rows that say "not measured": never a pass, never a crash."""
    from edgekit.export.stage import export_run
    from edgekit.verify import emulation

    if emulation.available("arm64")[0]:
        pytest.skip("arm64 emulation is installed here: this test wants a CPU that cannot run")
    run = copy_run(exported_run, tmp_path / "run")
    profile = dataclasses.replace(tiny_profile, variants=("tflite-fp32", "tflite-int8-ptq"),
                                  parity_cpus=("native", "arm64"))
    v = export_run(run, profile, models=("cnn",), force=True,
                   progress=Progress(quiet=True))["models"]["cnn"]["variants"]["tflite-int8-ptq"]
    assert [(r["cpu"], r["status"]) for r in v["emulated_parity"]] == [("arm64", "skipped")]
    emulated = [c for c in v["checks"] if c["name"].endswith("@arm64")]
    assert emulated and all(c["passed"] is None and "not measured" in c["note"] for c in emulated)
    assert v["status"] == "ok", v["error"]


def test_export_run_errors(tmp_path, trained_run, tiny_profile):
    from edgekit.export.stage import export_run

    with pytest.raises(RunDirError, match="edgekit train"):
        export_run(tmp_path / "empty", tiny_profile)
    with pytest.raises(ConfigError, match="unknown variants \\['tflite-int4'\\]"):
        export_run(trained_run, dataclasses.replace(tiny_profile, variants=("tflite-fp32", "tflite-int4")))
    with pytest.raises(RunDirError, match="resnet"):
        export_run(trained_run, tiny_profile, models=("resnet",))


# ---------------------------------------------------------------------------------------------
# Bring your own model

@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """A 32x32x1, 5-class CNN trained a few steps on learnable synthetic data, plus .npz samples."""
    import tf_keras

    from edgekit.core.data import make_synthetic, to_float

    d = tmp_path_factory.mktemp("byo")
    ds = make_synthetic(n_train=600, n_test=200, num_classes=5, shape=(32, 32), seed=3)
    k = tf_keras
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.InputLayer(input_shape=(32, 32, 1), name="pixels"),
                          k.layers.Conv2D(8, 3, strides=2, activation="relu"),
                          k.layers.Flatten(), k.layers.Dense(5)])
    model.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(to_float(ds.x_train), ds.y_train, epochs=3, batch_size=64, verbose=0)
    model.save(d / "mine.keras")
    np.savez(d / "calib.npz", x=to_float(ds.x_test), y=ds.y_test)
    np.savez(d / "calib_nolabels.npz", x=ds.x_test[..., 0])           # uint8, no channel axis: accepted
    np.savez(d / "wrong.npz", x=np.zeros((10, 28, 28, 1), np.float32))
    (d / "corrupt.keras").write_bytes(b"PK\x03\x04 not really a zip")
    return d


def test_byo_model_with_calibration_via_cli(byo, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--model", str(byo / "mine.keras"), "--calibration-data", str(byo / "calib.npz"),
                 "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    sec = _export_section(out)
    rec = sec["models"]["mine"]
    assert rec["input_shape"] == [32, 32, 1] and rec["num_classes"] == 5 and rec["float_accuracy"] > 0.6
    assert sec["data"]["parity"] == "user sample" and sec["data"]["samples"] == 200
    assert rec["qat"]["status"] == "ok"
    pi, arrays = _stored_parity_inputs(out, "mine")
    assert pi["description"] == "user sample calib.npz" and pi["labels"] is True and pi["samples"] == 200
    with np.load(byo / "calib.npz") as calib:
        assert np.array_equal(arrays["x"], calib["x"]) and np.array_equal(arrays["y"], calib["y"])
    for name in ALL_VARIANTS:
        v = rec["variants"][name]
        assert v["file"] is not None, f"{name}: {v['error']}"
        assert (out / v["file"]["path"]).is_file()
        assert v["inputs"][0]["shape"][1:] == [32, 32, 1] and v["outputs"][0]["shape"][-1] == 5
        assert v["parity"]["accuracy"] is not None and v["parity"]["samples"] == 200
    failed = [n for n, v in rec["variants"].items() if v["status"] != "ok"]
    assert code == (1 if failed else 0), captured.err
    assert (out / "export" / "parity.json").is_file()


def test_user_model_parity_inputs_are_the_ones_parity_ran_on(byo, tmp_path):
    """The stored file is the first parity_samples of the user's sample, and running the variant
    on it again gives the recorded parity; an unchanged re-run keeps the file byte for byte, a
    smaller parity set replaces it (and its sha256)."""
    from edgekit.export.stage import export_model
    from edgekit.verify.parity import compare_file
    from edgekit.runtimes.keras_tf import load_keras_model

    out = tmp_path / "o"
    profile = dataclasses.replace(_default(), variants=("tflite-fp32",), parity_samples=50)
    rec = export_model(byo / "mine.keras", out, profile, calibration=byo / "calib.npz",
                       progress=Progress(quiet=True))["models"]["mine"]
    pi, arrays = _stored_parity_inputs(out, "mine")
    assert pi == rec["parity_inputs"] and pi["samples"] == 50 and pi["labels"] is True
    with np.load(byo / "calib.npz") as calib:
        assert np.array_equal(arrays["x"], calib["x"][:50]) and np.array_equal(arrays["y"], calib["y"][:50])
    v = rec["variants"]["tflite-fp32"]
    again = compare_file(out / v["file"]["path"], load_keras_model(byo / "mine.keras"), arrays["x"], arrays["y"])
    assert v["parity"]["samples"] == 50 and again.accuracy == v["parity"]["accuracy"]
    assert again.max_abs_diff == pytest.approx(v["parity"]["max_abs_diff"], rel=1e-4, abs=1e-6)

    stored = (out / pi["path"]).read_bytes()
    rerun = export_model(byo / "mine.keras", out, profile, calibration=byo / "calib.npz",
                         progress=Progress(quiet=True))["models"]["mine"]
    assert rerun["parity_inputs"] == pi and (out / pi["path"]).read_bytes() == stored
    assert rerun["variants"]["tflite-fp32"] == v                      # still current: reused

    fewer = dataclasses.replace(profile, parity_samples=20)
    export_model(byo / "mine.keras", out, fewer, calibration=byo / "calib.npz", progress=Progress(quiet=True))
    pi20, arrays20 = _stored_parity_inputs(out, "mine")
    assert pi20["samples"] == 20 and pi20["sha256"] != pi["sha256"]
    assert np.array_equal(arrays20["x"], arrays["x"][:20])


def test_small_user_model_is_judged_on_weight_bytes_with_kernel_fidelity(tmp_path):
    """A ~7 KiB model (1,490 parameters): some 1.5-2 KiB of each file is framing that int8 does not
    shrink, so an int8 file is well over 0.32x its fp32 file (the scenario's precondition, asserted),
    while its weights are a quarter of float plus int32 biases and (ONNX) per-channel scales:
    (1,476 int8 weights + 4 x 14 bias bytes + at most 5 x 14 scale and zero-point bytes + a few
    scalars) / (4 x 1,490 float bytes) < 0.28 <= 0.32. Every int8 file gets a kernel-fidelity
    record over the whole parity set, and the encoding is recorded and keyed."""
    import tf_keras as k

    from edgekit.export.stage import export_model

    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.InputLayer(input_shape=(8, 8, 1)), k.layers.Conv2D(4, 3, activation="relu"),
                          k.layers.Flatten(), k.layers.Dense(10)])
    model.save(tmp_path / "small.keras")
    x = np.random.default_rng(0).random((1000, 8, 8, 1), dtype=np.float32)
    np.savez(tmp_path / "c.npz", x=x)            # no labels: agreement and sizes, no accuracy, no QAT
    default = _default()
    ptq = dataclasses.replace(default.thresholds["int8-ptq"], max_size_ratio=0.32)   # a profile's explicit ratio
    profile = dataclasses.replace(default, variants=("tflite-fp32", "onnx-fp32", "tflite-int8-ptq", "onnx-int8-ptq"),
                                  representative_samples=100, thresholds={**default.thresholds, "int8-ptq": ptq})
    rec = export_model(tmp_path / "small.keras", tmp_path / "o", profile, calibration=tmp_path / "c.npz",
                       progress=Progress(quiet=True))["models"]["small"]
    v = rec["variants"]
    for name in ("tflite-int8-ptq", "onnx-int8-ptq"):
        fp32 = v[name.split("-")[0] + "-fp32"]["file"]
        f = v[name]["file"]
        ratio = {c["name"]: c for c in v[name]["checks"]}["max_size_ratio"]
        assert f["size_bytes"] / fp32["size_bytes"] > 0.32, name       # would fail on file bytes
        assert ratio["value"] == round(f["weight_bytes"] / fp32["weight_bytes"], 6) <= 0.32, name
        assert ratio["passed"] is True and "weight bytes" in ratio["note"]
        assert ratio["file_size_ratio"] == round(f["size_bytes"] / fp32["size_bytes"], 6)
        assert v[name]["kernel_fidelity"]["samples"] == 1000
    assert v["onnx-int8-ptq"]["onnx_int8_encoding"] == "u8u8" and "onnx_int8_encoding" not in v["tflite-int8-ptq"]

    # the encoding and the kernel threshold are in the key: changing either redoes the file
    u8s8 = dataclasses.replace(profile, onnx_int8_encoding="u8s8")
    again = export_model(tmp_path / "small.keras", tmp_path / "o", u8s8, calibration=tmp_path / "c.npz",
                         progress=Progress(quiet=True))["models"]["small"]["variants"]
    assert again["onnx-int8-ptq"]["key"] != v["onnx-int8-ptq"]["key"]
    assert again["onnx-int8-ptq"]["onnx_int8_encoding"] == "u8s8"
    assert again["tflite-int8-ptq"] == v["tflite-int8-ptq"]            # untouched: reused
    stricter = dataclasses.replace(u8s8, thresholds=dict(u8s8.thresholds, **{
        "int8-ptq": dataclasses.replace(u8s8.thresholds["int8-ptq"], min_kernel_agreement=1.0)}))
    third = export_model(tmp_path / "small.keras", tmp_path / "o", stricter, calibration=tmp_path / "c.npz",
                         progress=Progress(quiet=True))["models"]["small"]["variants"]
    assert third["tflite-int8-ptq"]["key"] != v["tflite-int8-ptq"]["key"]
    assert {c["name"]: c for c in third["tflite-int8-ptq"]["checks"]}["min_kernel_agreement"]["limit"] == 1.0


def test_byo_model_without_calibration_makes_only_data_free_variants(byo, tmp_path, capsys):
    from edgekit.core.config import load_profile
    from edgekit.export.stage import export_model

    progress, stream = _quiet_capture()
    sec = export_model(byo / "mine.keras", tmp_path / "out", load_profile("default"), progress=progress)
    rec = sec["models"]["mine"]
    assert "no --calibration-data" in stream.getvalue()
    assert sec["data"]["labels"] is False
    # the random inputs parity ran on are stored for bench, not re-derived there
    pi, arrays = _stored_parity_inputs(tmp_path / "out", "mine")
    assert pi["description"] == "random uniform [0, 1) inputs (no --calibration-data given)"
    assert pi["labels"] is False and pi["samples"] == sec["data"]["samples"] == rec["variants"]["tflite-fp32"][
        "parity"]["samples"]
    expected = np.random.default_rng(0).random((pi["samples"], 32, 32, 1), dtype=np.float32)
    assert arrays["x"].shape == expected.shape and np.array_equal(arrays["x"], expected)
    assert rec["float_accuracy"] is None and rec["qat"]["status"] == "skipped"
    for name in NO_DATA_VARIANTS:
        v = rec["variants"][name]
        assert v["status"] == "ok", f"{name}: {v['error']}"
        assert v["parity"]["accuracy"] is None and v["parity"]["samples"] > 0
    for name in set(ALL_VARIANTS) - set(NO_DATA_VARIANTS):
        v = rec["variants"][name]
        assert v["status"] == "skipped" and "calibration" in v["error"] and v["file"] is None
        assert not list((tmp_path / "out" / "export" / "mine").glob(f"{name}.*"))

    # via the CLI: skipped variants are reported, not an error
    code = main(["export", "--model", str(byo / "mine.keras"), "--out", str(tmp_path / "out"),
                 "--profile", "mobile", "--quiet"])
    out = capsys.readouterr().out
    assert "skipped" in out
    assert code == 0
    _stored_parity_inputs(tmp_path / "out", "mine")     # a re-run keeps file and record consistent


def test_byo_without_labels_skips_qat_with_a_reason(byo, tmp_path):
    from edgekit.core.data import to_float
    from edgekit.export.stage import export_model

    profile = dataclasses.replace(_default(), variants=("tflite-int8-ptq", "tflite-int8-qat"),
                                  representative_samples=50)
    rec = export_model(byo / "mine.keras", tmp_path / "o", profile, calibration=byo / "calib_nolabels.npz",
                       progress=Progress(quiet=True))["models"]["mine"]
    assert rec["qat"]["status"] == "skipped" and "labels" in rec["qat"]["error"]
    pi, arrays = _stored_parity_inputs(tmp_path / "o", "mine")
    assert pi["labels"] is False and pi["description"] == "user sample calib_nolabels.npz"
    with np.load(byo / "calib_nolabels.npz") as calib:             # uint8 pixels, no channel axis
        assert np.array_equal(arrays["x"], to_float(calib["x"])[..., None])
    assert rec["variants"]["tflite-int8-qat"]["status"] == "skipped"
    assert "labels" in rec["variants"]["tflite-int8-qat"]["error"]
    ptq = rec["variants"]["tflite-int8-ptq"]
    assert ptq["file"] is not None and ptq["parity"]["accuracy"] is None and ptq["parity"]["agreement"] > 0.5


def test_model_tfmot_cannot_wrap_fails_qat_but_float_variants_export(tmp_path, capsys):
    import tf_keras as k

    from edgekit.export.stage import export_model

    # a nested model is what tfmot still cannot wrap (layers it does not know are left float)
    inner = k.Sequential([k.layers.Flatten(input_shape=(8, 8, 1)), k.layers.Dense(16)], name="my_backbone")
    inp = k.Input((8, 8, 1))
    model = k.Model(inp, k.layers.Dense(3)(inner(inp)), name="ln")
    model.save(tmp_path / "ln.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.random((40, 8, 8, 1), dtype=np.float32), y=rng.integers(0, 3, 40))
    profile = dataclasses.replace(_default(), variants=("tflite-fp32", "onnx-fp32", "tflite-int8-qat"),
                                  representative_samples=20)
    rec = export_model(tmp_path / "ln.keras", tmp_path / "o", profile, calibration=tmp_path / "c.npz",
                       progress=Progress(quiet=True))["models"]["ln"]
    assert rec["qat"]["status"] == "failed" and "my_backbone" in rec["qat"]["error"]
    assert "\n" not in rec["qat"]["error"]
    assert rec["variants"]["tflite-int8-qat"]["status"] == "failed"
    assert "my_backbone" in rec["variants"]["tflite-int8-qat"]["error"]
    assert not (tmp_path / "o" / "export" / "ln" / "qat.h5").exists()
    for name in ("tflite-fp32", "onnx-fp32"):
        assert rec["variants"][name]["status"] == "ok", rec["variants"][name]["error"]
    assert "qat FAILED" in capsys.readouterr().err


def test_byo_corrupt_model_and_wrong_calibration_shape(byo, tmp_path, capsys):
    from edgekit.export.stage import export_model

    with pytest.raises(ModelError, match="cannot load"):
        export_model(byo / "corrupt.keras", tmp_path / "a", _default(), progress=Progress(quiet=True))
    code = main(["export", "--model", str(byo / "corrupt.keras"), "--out", str(tmp_path / "a"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot load" in err  # the user's file is wrong
    assert not (tmp_path / "a").exists()

    with pytest.raises(DataError, match="32, 32, 1"):
        export_model(byo / "mine.keras", tmp_path / "b", _default(), calibration=byo / "wrong.npz",
                     progress=Progress(quiet=True))
    code = main(["export", "--model", str(byo / "mine.keras"), "--calibration-data", str(byo / "wrong.npz"),
                 "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "calibration inputs have shape (28, 28, 1)" in err


def _default():
    from edgekit.core.config import load_profile

    return load_profile("default")
