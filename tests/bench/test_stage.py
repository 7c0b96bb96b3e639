"""`edgekit bench` on the tiny exported CNN: every file on every runtime, real workers, few runs."""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_run
from edgekit.core import machine, rundir
from edgekit.bench.stage import (BenchJob, ModelFile, TestSet, assemble_records, bench_key, bench_run, find_model_files,
                           run_worker)
from edgekit.bench.job import BenchUnit
from edgekit.core.timing import QUICK
from edgekit.core.progress import Progress
from edgekit.core.results import validate_results
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
    recs = [r for r in results["records"] if r["stage"] == "bench"]
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


def test_results_name_the_machine_and_each_file_hash(benched):
    """Where the figures were measured (CPU model, int8 ISA flags, class) and of which exact file."""
    run, results = benched
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk["machine"] == machine.describe() == rundir.load_manifest(run)["stages"]["bench"]["machine"]
    assert on_disk["environment"]["cpu_class"] == on_disk["machine"]["cpu_class"]
    changed = "export/cnn/tflite-fp16.tflite"  # the fixture appended a byte after export hashed it
    for r in results["records"]:
        assert r["stage"] == "bench" and len(r["sha256"]) == 64
        assert (r["sha256"] == rundir.sha256_file(run / r["file"])) == (r["file"] != changed), r["file"]
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert {row["sha256"] for row in rows} == {r["sha256"] for r in results["records"]}


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
    # the report is not the bench's job (cli and pipeline run check, then report)
    assert not (run / "report.md").exists() and "report_files" not in section


def test_unchanged_bench_is_reused_and_changed_settings_are_not(benched):
    """`edgekit bench` alone skips finished work: same files, settings and CPU -> the results on disk."""
    run, results = benched
    before = (run / "results.json").read_bytes()
    again = bench_run(run, threads=(1,), batches=(1, 4), quick=True)
    assert again["created_utc"] == results["created_utc"] and (run / "results.json").read_bytes() == before
    m = rundir.load_manifest(run)
    key = bench_key(m, ("keras", "litert", "onnxruntime"), (1,), (1, 4), True)
    assert m["stages"]["bench"]["key"] == key
    every = ("keras", "litert", "onnxruntime")
    changed = {bench_key(m, ("onnxruntime",), (1,), (1, 4), True), bench_key(m, every, (1, 2), (1, 4), True),
               bench_key(m, every, (1,), (1,), True), bench_key(m, every, (1,), (1, 4), False)}
    assert key not in changed and len(changed) == 4


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
    lambda r: r["records"][0].update(threads=None),                       # measured, but at no thread count
    lambda r: r["records"][0].update(stage="export"),                     # ok, yet never benched
    lambda r: r["machine"].pop("int8_flags"),
])
def test_schema_rejects_broken_results(benched, change):
    _, results = benched
    ok_first = dict(results, records=sorted(results["records"], key=lambda r: r["status"] != "ok"))
    validate_results(ok_first)
    with pytest.raises(RunDirError, match="results_schema.json"):
        validate_results(_broken(ok_first, change))


def test_results_written_before_machine_and_hashes_stay_valid(benched):
    """schema_version stays 1: machine, stage and sha256 are optional, so older files still validate."""
    _, results = benched
    old = {k: v for k, v in json.loads(json.dumps(results)).items() if k != "machine"}
    for r in old["records"]:
        del r["stage"], r["sha256"]
    validate_results(old)


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
    units = (BenchUnit(0, "m", "a", "a.tflite", "x"), BenchUnit(1, "m", "b", "b.tflite", "x"))
    job = BenchJob(runtime="litert", units=units,
                   data={"x": str(tmp_path / "missing.npy")}, option_sets=({"xnnpack": True},), threads=(1,),
                   batches=(1,), timing=None, predict=True, predict_threads=1, predict_samples=(None,),
                   predict_batch=8)
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

    assert main(["bench", "--run", str(tmp_path / "nothing"), "--quick"]) == 2  # the user's path is wrong
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgekit: error:") and "edgekit export" in err and "\n" not in err


def _load_targets():
    import importlib.util

    spec = importlib.util.spec_from_file_location("targets", Path(__file__).resolve().parents[2] / "bench" / "targets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_failed_and_skipped_variants_keep_a_record(exported_run, tmp_path):
    """Variants export failed or skipped stay in results.json/csv with status and reason; the gate
    judges them from the manifest (not as bench failures); check compares this real bench output
    with itself, and not with a baseline from other CPU flags; targets.py names the CPU class."""
    from edgekit.gate.check import check_run
    from edgekit.export.stage import NO_CALIBRATION

    run = copy_run(exported_run, tmp_path / "run")
    failed_error = "RuntimeError: tf2onnx could not convert the graph"

    def export_failures(m):  # the shapes export writes (export._blank_record / _qat)
        v = m["stages"]["export"]["models"]["cnn"]["variants"]
        v["onnx-int8-qat"].update(status="failed", error=failed_error, file=None, files=[], parity=None, audit=None)
        v["tflite-int8-ptq"].update(status="skipped", error=NO_CALIBRATION, file=None, files=[], parity=None,
                                    audit=None)
    rundir.update_manifest(run, export_failures)
    results = bench_run(run, runtimes=("onnxruntime",), threads=(1,), batches=(1,), quick=True)
    validate_results(results)
    kept = {r["variant"]: r for r in results["records"] if r["stage"] == "export"}
    assert set(kept) == {"onnx-int8-qat", "tflite-int8-ptq"}
    assert kept["onnx-int8-qat"]["status"] == "failed" and kept["onnx-int8-qat"]["runtime"] == "onnxruntime"
    assert kept["onnx-int8-qat"]["error"] == f"not benched: export failed: {failed_error}"
    assert kept["tflite-int8-ptq"]["status"] == "skipped" and kept["tflite-int8-ptq"]["runtime"] == "litert"
    assert kept["tflite-int8-ptq"]["error"] == f"not benched: export skipped: {NO_CALIBRATION}"
    assert all(r["threads"] is None and r["p50_ms"] is None and r["file"] is None for r in kept.values())
    on_disk = json.loads((run / "results.json").read_text())
    assert [r for r in on_disk["records"] if r["stage"] == "export"] == list(kept.values())
    rows = {row["variant"]: row for row in csv.DictReader((run / "results.csv").open()) if row["stage"] == "export"}
    assert {v: (row["status"], row["error"], row["threads"]) for v, row in rows.items()} == {
        v: (r["status"], r["error"], "") for v, r in kept.items()}
    section = rundir.load_manifest(run)["stages"]["bench"]
    assert section["not_benched_records"] == 2 and section["failed_records"] == 0

    # the gate: export rows fail for the two variants; no "bench" row for them
    result = check_run(run, baseline=str(run / "results.json"))
    assert {(r.variant, r.check) for r in result.rows if not r.passed} == {
        ("onnx-int8-qat", "export"), ("tflite-int8-ptq", "export")}
    lat = [r for r in result.rows if r.check == "latency_p50_ratio"]
    # the one int8 file benched here (onnx-int8-ptq, t1 b1), against its own measurement: ratio 1
    assert [(r.variant, r.compared, r.value) for r in lat] == [("onnx-int8-ptq", True, 1.0)]
    other = dict(on_disk, machine=dict(on_disk["machine"], int8_flags=["sse4_1", "avx2"]))
    rundir.atomic_write_json(tmp_path / "other-cpu.json", other)
    result = check_run(run, baseline=str(tmp_path / "other-cpu.json"))
    lat = [r for r in result.rows if r.check == "latency_p50_ratio"]
    assert [(r.variant, r.compared) for r in lat] == [("onnx-int8-ptq", False)]
    assert (f"skipped: CPU flags differ: {','.join(on_disk['machine']['int8_flags'])} vs sse4_1,avx2; latency not "
            "compared for 1 measurement: cnn onnx-int8-ptq (onnxruntime graph_optimization=all t1 b1)") in result.table

    # targets.py: int8 vs fp32 is a target only with int8 dot products; the run time names the class
    targets = _load_targets()
    rundir.update_manifest(run, lambda m: rundir.stage(m, "run").update(quick=False,
                                                                        total_seconds=results["seconds"]))
    for cls, judged in (("x86-avx512-vnni", True), ("x86-avx2", False), ("arm64-dotprod", True), ("arm64", False)):
        rundir.atomic_write_json(run / "results.json", dict(on_disk, machine=dict(on_disk["machine"], cpu_class=cls)))
        rows = {r["target"]: r for r in targets.collect(run)}
        int8 = rows[f"cnn fastest int8 / fastest fp32 p50 (batch 1, 1 thread) on {cls}"]
        assert "onnx-int8-ptq onnxruntime" in int8["value"] and "onnx-fp32 onnxruntime" in int8["value"]
        if judged:
            assert int8["limit"] == "<= 1.0" and isinstance(int8["met"], bool)
        else:
            assert int8["limit"] == f"not a target on {cls} (no int8 dot product)" and int8["met"] is None
        total = rows[f"edgekit run end to end, seconds, on {cls}"]
        assert total["limit"] == "< 1800" and total["met"] is (results["seconds"] < 1800)
    assert targets.main(["--run", str(run), "--out", str(tmp_path / "targets.json")]) in (0, 1)
    assert json.loads((tmp_path / "targets.json").read_text())["rows"]


def test_bench_job_crosses_the_process_boundary_whole():
    """The JSON a worker reads gives back the very job planned: every field, typed."""
    unit = BenchUnit(3, "cnn", "tflite-fp32", "/r/export/cnn/tflite-fp32.tflite", "k")
    job = BenchJob(runtime="litert", units=(unit,),
                   data={"k": "/tmp/x-0.npy"}, option_sets=({"xnnpack": True}, {"xnnpack": False}), threads=(1, 2),
                   batches=(1, 32), timing=QUICK, predict=True, predict_threads=1, predict_samples=(None, 2000),
                   predict_batch=256)
    text = job.to_json()
    assert BenchJob.from_json(text) == job
    assert set(json.loads(text)) == {f.name for f in dataclasses.fields(BenchJob)}
    assert BenchJob.from_json(text).timing == QUICK and job.timed_settings() == 1 * 2 * 2 * 2
    reference = dataclasses.replace(job, timing=None, threads=(), reference_only=True)
    assert BenchJob.from_json(reference.to_json()) == reference and reference.timed_settings() == 0
    with pytest.raises(TypeError):  # a key the worker does not know is an error, not ignored
        BenchJob.from_json(json.dumps(dict(json.loads(text), predict_thread=1)))


PARITY_SAMPLES = 300


@pytest.fixture
def user_model_run(exported_run, synthetic, tmp_path):
    """A run directory as `export --model mine.keras --calibration-data FILE` leaves it (no train
    record), built by hand per export's contract: the user's model, one ONNX variant, and the
    parity inputs export ran on in export/mine/parity_inputs.npz, recorded with their sha256.
    The recorded calibration file does not exist: bench must not need it."""
    from edgekit.core.data import to_float

    run = tmp_path / "run"
    (run / "export" / "mine").mkdir(parents=True)
    shutil.copy(exported_run / "train" / "cnn" / "model.keras", run / "mine.keras")
    shutil.copy(exported_run / "export" / "cnn" / "onnx-fp32.onnx", run / "export" / "mine" / "onnx-fp32.onnx")
    x = to_float(synthetic.x_test[:PARITY_SAMPLES])
    y = synthetic.y_test[:PARITY_SAMPLES].astype(np.int64)
    np.savez(run / "export" / "mine" / "parity_inputs.npz", x=x, y=y)
    cnn = rundir.model_record(rundir.load_manifest(exported_run), "export", "cnn")

    def put(m: dict) -> None:
        onnx = dict(cnn["variants"]["onnx-fp32"], file=rundir.file_record(run, run / "export/mine/onnx-fp32.onnx"))
        rundir.stage(m, "export").update(
            data={"parity": "user sample", "samples": PARITY_SAMPLES, "labels": True,
                  "calibration": str(tmp_path / "gone.npz"), "calibration_samples": 100},
            models={"mine": {
                "source": rundir.file_record(run, run / "mine.keras"), "input_shape": [28, 28, 1],
                "num_classes": 10, "variants": {"onnx-fp32": onnx},
                "parity_inputs": {"path": "export/mine/parity_inputs.npz",
                                  "sha256": rundir.sha256_file(run / "export/mine/parity_inputs.npz"),
                                  "samples": PARITY_SAMPLES, "labels": True, "description": "user sample calib.npz"}}})
    rundir.update_manifest(run, put)
    return run, x, y


def test_user_model_is_benched_on_the_recorded_parity_inputs(user_model_run):
    """Accuracy on the recorded images and labels (not regenerated inputs, not the calibration
    file): the float model's accuracy computed here on the same arrays, agreement 1 for fp32 ONNX."""
    from edgekit.runtimes import get_runtime

    run, x, y = user_model_run
    results = bench_run(run, runtimes=("onnxruntime",), threads=(1,), batches=(1,), quick=True,
                        progress=Progress(quiet=True))
    session = get_runtime("keras").open(run / "mine.keras")
    want = float(np.mean(session.predict(x, batch_size=64).argmax(axis=1) == y))
    recs = results["records"]
    assert recs and all(r["status"] == "ok" and r["model"] == "mine" for r in recs)
    for r in recs:
        assert r["samples"] == PARITY_SAMPLES and r["accuracy"] == pytest.approx(want, abs=1e-6)
        assert r["agreement"] == 1.0
    assert results["settings"]["data"] == {"mine": "user sample calib.npz"}
    assert results["settings"]["samples"] == {"mine": PARITY_SAMPLES}


def test_force_measures_again_and_without_it_results_are_reused(user_model_run):
    run = user_model_run[0]
    settings = dict(runtimes=("onnxruntime",), threads=(1,), batches=(1,), quick=True)

    def bench(**kw) -> str:
        out = io.StringIO()
        bench_run(run, **settings, progress=Progress(stream=out), **kw)
        return out.getvalue()
    assert "measurements ok" in bench()
    rundir.update_manifest(run, lambda m: rundir.stage(m, "bench").update(marker="from the first bench"))
    before = (run / "results.json").read_bytes()
    log = bench()
    assert "reused" in log and "measurements ok" not in log
    assert (run / "results.json").read_bytes() == before
    assert rundir.section(rundir.load_manifest(run), "bench")["marker"] == "from the first bench"
    log = bench(force=True)
    assert "reused" not in log and "measurements ok" in log
    section = rundir.section(rundir.load_manifest(run), "bench")
    assert "marker" not in section and rundir.is_fresh(run, section, section["key"])  # a new record of new files
    assert json.loads((run / "results.json").read_text())["records"]


def test_cli_bench_force_reaches_bench_run(user_model_run, capsys):
    """`edgekit bench --force` measures again where `edgekit bench` reuses."""
    from edgekit.cli import main

    run = user_model_run[0]
    args = ["bench", "--run", str(run), "--runtimes", "onnxruntime", "--threads", "1", "--batch-sizes", "1", "--quick"]
    main(args)
    assert "measurements ok" in capsys.readouterr().err
    main(args)
    assert "reused" in capsys.readouterr().err
    main(args + ["--force"])
    err = capsys.readouterr().err
    assert "reused" not in err and "measurements ok" in err


def _break(run: Path, change) -> None:
    rundir.update_manifest(run, lambda m: change(rundir.model_record(m, "export", "mine")))


@pytest.mark.parametrize("change, named", [
    (lambda rec: rec.pop("parity_inputs"), "export/mine/parity_inputs.npz"),
    (lambda rec: rec.update(parity_inputs={"samples": 300, "description": "x"}), "export/mine/parity_inputs.npz"),
    (lambda rec: rec["parity_inputs"].update(path="export/mine/elsewhere.npz"), "elsewhere.npz"),
    (lambda rec: rec["parity_inputs"].update(sha256="0" * 64), "parity_inputs.npz no longer matches"),
], ids=["no-record", "no-path", "no-file", "sha256"])
def test_missing_or_changed_parity_inputs_are_one_line_errors(user_model_run, change, named):
    run = user_model_run[0]
    _break(run, change)
    with pytest.raises(RunDirError) as e:
        bench_run(run, runtimes=("onnxruntime",), threads=(1,), batches=(1,), quick=True, progress=Progress(quiet=True))
    msg = str(e.value)
    assert named in msg and "re-run `edgekit export`" in msg and "\n" not in msg
