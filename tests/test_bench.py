"""`edgekit bench` on the tiny exported CNN: every file on every runtime, real workers, few runs."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_run
from edgekit import rundir
from edgekit.bench import (ModelFile, TestSet, assemble_records, bench_run, find_model_files, run_worker,
                           validate_results)
from edgekit.errors import ConfigError, RunDirError

FORMAT_RUNTIME = {"keras": "keras", "tflite": "litert", "onnx": "onnxruntime"}


@pytest.fixture(scope="module")
def benched(exported_run, tmp_path_factory):
    """A quick bench of the exported run, with one file changed after export (must not be benched)."""
    run = copy_run(exported_run, tmp_path_factory.mktemp("bench") / "run")
    with open(run / "export" / "cnn" / "tflite-fp16.tflite", "ab") as f:
        f.write(b"\0")
    results = bench_run(run, threads=(1,), batches=(1, 4), quick=True)
    return run, results


def test_every_file_on_every_runtime(benched):
    run, results = benched
    m = rundir.load_manifest(run)
    variants = m["stages"]["export"]["models"]["cnn"]["variants"]
    want = {("mlp", "keras-fp32"), ("cnn", "keras-fp32"), ("cnn", "keras-qat")}
    want |= {("cnn", v) for v, rec in variants.items() if rec["status"] == "ok"}
    recs = results["records"]
    assert {(r["model"], r["variant"]) for r in recs} == want
    for r in recs:
        assert r["runtime"] == FORMAT_RUNTIME[r["format"]]
    litert = {json.dumps(r["runtime_options"]) for r in recs if r["runtime"] == "litert"}
    assert litert == {'{"xnnpack": true}', '{"xnnpack": false}'}
    # one record per (file, options, threads, batch)
    keys = [(r["model"], r["variant"], json.dumps(r["runtime_options"]), r["threads"], r["batch"]) for r in recs]
    assert len(keys) == len(set(keys))
    assert {(r["threads"], r["batch"]) for r in recs} == {(1, 1), (1, 4)}


def test_measurements_are_sane(benched):
    run, results = benched
    ok = [r for r in results["records"] if r["status"] == "ok"]
    assert len(ok) == len(results["records"]) - 4     # the changed fp16 file: 2 options x 2 batches
    for r in ok:
        assert r["error"] is None
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["runs"] >= results["settings"]["min_runs"]
        assert len(r["p50_repeats_ms"]) == results["settings"]["repeats"]
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / r["mean_ms"])
        assert r["size_bytes"] == (run / r["file"]).stat().st_size
        assert r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
    # isolation: the LiteRT and ONNX Runtime workers never load TensorFlow
    keras_rss = min(r["peak_rss_mb"] for r in ok if r["runtime"] == "keras")
    other_rss = max(r["peak_rss_mb"] for r in ok if r["runtime"] != "keras")
    assert other_rss < keras_rss / 2


def test_accuracy_agrees_with_export_parity(benched):
    """Differential: the bench's accuracy of each file (full synthetic test set, default options)
    equals what export's parity measured on the same images with the same runtime."""
    run, results = benched
    m = rundir.load_manifest(run)
    variants = m["stages"]["export"]["models"]["cnn"]["variants"]
    float_acc = m["stages"]["train"]["models"]["cnn"]["metrics"]["test_accuracy"]
    for r in results["records"]:
        if r["status"] != "ok" or r["model"] != "cnn":
            continue
        assert r["samples"] == 500
        if r["variant"] == "keras-fp32":
            assert r["accuracy"] == pytest.approx(float_acc, abs=1e-6) and r["agreement"] == 1.0
        elif r["variant"] in variants and r["runtime_options"] in ({"xnnpack": True}, {"graph_optimization": "all"}):
            parity = variants[r["variant"]]["parity"]
            assert r["accuracy"] == pytest.approx(parity["accuracy"], abs=1e-6), r["variant"]
            if variants[r["variant"]]["reference"] == "float":
                assert r["agreement"] == pytest.approx(parity["agreement"], abs=1e-6), r["variant"]
        else:  # xnnpack off, and keras-qat: close to the rest
            assert r["accuracy"] == pytest.approx(float_acc, abs=0.05) and r["agreement"] >= 0.9


def test_changed_file_is_reported_not_benched(benched):
    _, results = benched
    bad = [r for r in results["records"] if r["variant"] == "tflite-fp16"]
    assert bad and all(r["status"] == "failed" and "sha256" in r["error"] and r["p50_ms"] is None for r in bad)


def test_files_schema_and_manifest(benched):
    run, results = benched
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk["records"] == json.loads(json.dumps(results["records"]))
    validate_results(on_disk)
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert len(rows) == len(results["records"])
    assert rows[0]["p50_repeats_ms"].count(";") == results["settings"]["repeats"] - 1
    section = rundir.load_manifest(run)["stages"]["bench"]
    assert section["status"] == "ok" and rundir.outputs_intact(run, section["files"])
    assert [f["path"] for f in section["files"]] == ["results.json", "results.csv"]
    assert section["settings"]["quick"] is True and section["seconds"] > 0
    if (Path(__file__).parent.parent / "edgekit" / "report.py").exists():
        assert (run / "report.md").exists() and section["report_files"]


def _broken(results: dict, change) -> dict:
    r = copy.deepcopy(json.loads(json.dumps(results)))
    change(r)
    return r


@pytest.mark.parametrize("change", [
    lambda r: r["records"][0].pop("p50_ms"),
    lambda r: r["records"][0].update(status="done"),
    lambda r: r["records"][0].update(p50_ms=-1.0),
    lambda r: r["records"][0].update(error="boom"),                       # ok with an error
    lambda r: r["records"][0].update(p50_repeats_ms=None),                # ok without repeats
    lambda r: r.update(schema_version=2),
    lambda r: r["settings"].pop("repeats"),
])
def test_schema_rejects_broken_results(benched, change):
    _, results = benched
    ok_first = dict(results, records=sorted(results["records"], key=lambda r: r["status"] != "ok"))
    validate_results(ok_first)
    with pytest.raises(RunDirError, match="results_schema.json"):
        validate_results(_broken(ok_first, change))


def test_failed_record_needs_an_error(benched):
    _, results = benched
    failed = next(r for r in results["records"] if r["status"] == "failed")
    validate_results(dict(results, records=[failed]))
    with pytest.raises(RunDirError):
        validate_results(dict(results, records=[dict(failed, error=None)]))


def test_one_runtime_still_measures_agreement(exported_run, tmp_path):
    """Without the keras runtime a reference-only Keras worker still supplies the float model's
    predictions: ONNX records carry an agreement, and no keras record is written."""
    run = copy_run(exported_run, tmp_path / "run")
    results = bench_run(run, runtimes=("onnxruntime",), threads=(1,), batches=(1,), quick=True)
    recs = results["records"]
    assert recs and {r["runtime"] for r in recs} == {"onnxruntime"}
    assert all(r["status"] == "ok" and r["agreement"] is not None for r in recs)
    fp32 = next(r for r in recs if r["variant"] == "onnx-fp32")
    assert fp32["agreement"] == 1.0 and results["settings"]["runtimes"] == ["onnxruntime"]


def test_assemble_records_from_events():
    """Accuracy/agreement from the workers' classes; a crash fails the settings it took down."""
    f32 = ModelFile("m", "keras-fp32", "keras", "float", Path("m.keras"), "m.keras", None, 10)
    i8 = ModelFile("m", "tflite-int8-qat", "tflite", "int8-qat", Path("m.tflite"), "m.tflite", None, 5)
    test = TestSet("k", "test", np.zeros(4), np.array([0, 1, 2, 3]))
    stats = {"runs": 3, "min_ms": 1.0, "mean_ms": 2.0, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 3.0, "std_ms": 0.8,
             "throughput_ips": 500.0, "p50_repeats_ms": [2.0]}
    events = [
        {"type": "predictions", "runtime": "keras", "id": 0, "options": {}, "classes": [0, 1, 2, 0]},
        {"type": "timing", "runtime": "keras", "id": 0, "options": {}, "threads": 1, "batch": 1, "stats": stats,
         "peak_rss_mb": 600.0, "baseline_rss_mb": 500.0},
        {"type": "predictions", "runtime": "litert", "id": 1, "options": {"xnnpack": True}, "classes": [0, 1, 0, 0]},
        {"type": "timing", "runtime": "litert", "id": 1, "options": {"xnnpack": True}, "threads": 1, "batch": 1,
         "stats": stats, "peak_rss_mb": 40.0, "baseline_rss_mb": 30.0},
        {"type": "crash", "runtime": "litert", "id": 1, "error": "litert worker exited with code -11"},
    ]
    recs = assemble_records([f32, i8], {}, {"m": test}, events, ("keras", "litert"),
                            {"keras": [{}], "litert": [{"xnnpack": True}, {"xnnpack": False}]}, (1,), (1,))
    by = {(r["variant"], json.dumps(r["runtime_options"])): r for r in recs}
    k = by[("keras-fp32", "{}")]
    assert k["status"] == "ok" and k["accuracy"] == 0.75 and k["agreement"] == 1.0 and k["p50_ms"] == 2.0
    on = by[("tflite-int8-qat", '{"xnnpack": true}')]
    assert on["status"] == "ok" and on["accuracy"] == 0.5 and on["agreement"] == 0.75
    off = by[("tflite-int8-qat", '{"xnnpack": false}')]
    assert off["status"] == "failed" and "exited with code -11" in off["error"]


def test_worker_that_cannot_start_fails_its_files(tmp_path):
    job = {"runtime": "litert", "units": [{"id": 0, "path": "a.tflite", "data": "x"},
                                          {"id": 1, "path": "b.tflite", "data": "x"}],
           "data": {"x": str(tmp_path / "missing.npy")}, "option_sets": [{"xnnpack": True}], "threads": [1],
           "batches": [1], "predict": True, "predict_threads": 1, "predict_batch": 8, "predict_samples": [None],
           "timing": None}
    events = run_worker(job, tmp_path / "w")
    crashes = [e for e in events if e["type"] == "crash"]
    assert [e["id"] for e in crashes] == [0, 1]
    assert "exited with code 1" in crashes[0]["error"] and "missing.npy" in crashes[0]["error"]


def test_find_model_files_uses_only_ok_variants(exported_run):
    m = copy.deepcopy(rundir.load_manifest(exported_run))
    m["stages"]["export"]["models"]["cnn"]["variants"]["onnx-fp32"]["status"] = "failed"
    m["stages"]["export"]["models"]["cnn"]["qat"]["status"] = "failed"
    names = {(f.model, f.variant) for f in find_model_files(exported_run, m)}
    assert ("cnn", "onnx-fp32") not in names and ("cnn", "keras-qat") not in names
    assert {("mlp", "keras-fp32"), ("cnn", "keras-fp32"), ("cnn", "tflite-int8-qat")} <= names


@pytest.mark.parametrize("kwargs, error", [
    ({"runtimes": ("tvm",)}, ConfigError),
    ({"threads": (0,)}, ConfigError),
    ({"batches": ()}, ConfigError),
])
def test_bad_settings_raise_one_line_errors(exported_run, kwargs, error):
    with pytest.raises(error) as e:
        bench_run(exported_run, **kwargs)
    assert "\n" not in str(e.value)


def test_cli_on_a_folder_without_manifest(tmp_path, capsys):
    from edgekit.cli import main

    assert main(["bench", "--run", str(tmp_path / "nothing"), "--quick"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgekit: error:") and "edgekit export" in err and "\n" not in err
