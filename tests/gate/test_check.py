"""The CI gate on real run directories: a good run passes; broken variants, failed exports,
missing variants and clear latency regressions fail with the row named; noisy timings say so.

`build_run` makes a small run directory without TensorFlow: a linear classifier fitted on seeded
synthetic data is "exported" as float32, float16 and int8 (integer matmul) weight files; parity,
audit and latency are measured on them here, and written in the manifest/results.json shapes of
CONTRACTS.md. test_report.py renders reports from the same runs.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import machine, rundir
from edgekit.gate.check import CheckResult, check_run
from edgekit.cli import main
from edgekit.core.config import load_profile, profile_to_dict
from edgekit.errors import RunDirError

FEATURES, CLASSES = 196, 10
VARIANTS = {  # name -> (format, class)
    "tflite-fp32": ("tflite", "float"), "tflite-fp16": ("tflite", "fp16"),
    "tflite-int8-ptq": ("tflite", "int8-ptq"),
    "onnx-fp32": ("onnx", "float"), "onnx-int8-ptq": ("onnx", "int8-ptq"),
}
PROFILE_TOML = """
description = "test: the variants build_run makes"
variants = ["tflite-fp32", "tflite-fp16", "tflite-int8-ptq", "onnx-fp32", "onnx-int8-ptq"]
[thresholds.float]
min_agreement = 1.0
max_abs_diff = 1e-4
[thresholds.fp16]
min_agreement = 0.99
max_size_ratio = 0.55
[thresholds.int8-ptq]
max_accuracy_drop = 1.0
max_size_ratio = 0.32
max_latency_regression = 0.15
"""
BATCHES = (1, 32)


# ------------------------------------------------------------------ a small real run directory

def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (CLASSES, FEATURES))
    def sample(n):
        y = rng.integers(0, CLASSES, n)
        return (means[y] + rng.normal(0.0, 4.2, (n, FEATURES))).astype(np.float32), y
    return sample(3000), sample(2000)


def _fit(x, y):
    """Ridge regression onto one-hot targets: a float model with ~90% test accuracy."""
    xb = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    t = np.eye(CLASSES)[y]
    wb = np.linalg.solve(xb.T @ xb + 10.0 * np.eye(FEATURES + 1), xb.T @ t)
    return wb[:-1].astype(np.float32), wb[-1].astype(np.float32)


def _variant(w, b, cls: str, x_cal, broken: str | None):
    """(predict, file bytes, audit) of one variant of the linear model."""
    if cls == "float":
        return (lambda x: x @ w + b), w.tobytes() + b.tobytes(), None
    if cls == "fp16":
        w16 = w.astype(np.float16)
        return (lambda x: x @ w16.astype(np.float32) + b), w16.tobytes() + b.tobytes(), None
    levels = 1 if broken == "coarse" else 127        # "coarse": weights rounded to -1, 0, +1 steps
    w_scale = (np.abs(w).max(axis=0) / levels).astype(np.float32)
    wq = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
    x_scale = np.float32(np.abs(x_cal).max() / 127)
    blob = wq.tobytes() + w_scale.tobytes() + b.tobytes() + x_scale.tobytes()
    if broken == "float_compute":                    # int8 storage, float kernels: what the audit catches
        wd = wq.astype(np.float32) * w_scale
        return (lambda x: x @ wd + b), blob, {
            "weight_dtypes": {"int8": 1, "float32": 1}, "integer_mac_fraction": 0.0, "passed": False,
            "reason": "only 0.0% of MACs run in integer kernels (float ops: MatMul)"}
    wq32 = wq.astype(np.int32)

    def predict(x):
        xq = np.clip(np.round(x / x_scale), -127, 127).astype(np.int32)
        return (xq @ wq32).astype(np.float32) * (x_scale * w_scale) + b
    return predict, blob, {"weight_dtypes": {"int8": 1, "float32": 1}, "integer_mac_fraction": 1.0, "passed": True}


def time_blocks(fn: Callable[[], object], repeats: int = 7, runs: int = 25) -> tuple[list[float], list[float]]:
    """Every run's ms and the p50 of each repeat block, after a short warm-up."""
    for _ in range(3):
        fn()
    all_ms, p50s = [], []
    for _ in range(repeats):
        block = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            block.append((time.perf_counter() - t) * 1e3)
        all_ms += block
        p50s.append(float(np.median(block)))
    return all_ms, p50s


def bench_record(model, variant, fmt, cls, batch, size, acc, agree, n, all_ms, p50s, sha256=None) -> dict:
    ms = np.asarray(all_ms)
    p50 = float(np.median(ms))
    return {"model": model, "variant": variant, "format": fmt, "variant_class": cls, "runtime": "numpy",
            "runtime_options": {}, "threads": 1, "batch": batch, "size_bytes": size, "accuracy": acc,
            "agreement": agree, "samples": n, "runs": len(ms), "min_ms": float(ms.min()),
            "mean_ms": float(ms.mean()), "p50_ms": p50, "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "std_ms": float(ms.std()),
            "throughput_ips": batch * 1e3 / p50, "p50_repeats_ms": p50s, "peak_rss_mb": None,
            "status": "ok", "error": None, "stage": "bench", "sha256": sha256}


def build_run(dest: Path, broken: dict[str, str] | None = None, seed: int = 0) -> Path:
    """A run directory with manifest.json (export stage) and results.json, measured here.

    broken: variant -> "coarse" (int8 weights on 3 levels: accuracy drops) or "float_compute"
    (int8 weights, float matmul: the int8 audit fails).
    """
    broken = broken or {}
    (x_tr, y_tr), (x_te, y_te) = _data(seed)
    w, b = _fit(x_tr, y_tr)
    profile_path = dest.parent / f"{dest.name}-profile.toml"
    dest.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(PROFILE_TOML)
    profile = load_profile(str(profile_path))

    model = "lin"
    src = dest / "train" / model / "model.weights"
    rundir.atomic_write_bytes(src, w.tobytes() + b.tobytes())
    ref = x_te @ w + b
    float_acc = float(np.mean(ref.argmax(1) == y_te))
    records = []
    for batch in BATCHES:
        xb = x_te[:batch]
        all_ms, p50s = time_blocks(lambda: xb @ w + b)
        records.append(bench_record(model, "keras-fp32", "keras", "float", batch, src.stat().st_size, float_acc,
                                    1.0, len(y_te), all_ms, p50s, rundir.sha256_file(src)))
    variants = {}
    for name, (fmt, cls) in VARIANTS.items():
        predict, blob, audit = _variant(w, b, cls, x_tr[:500], broken.get(name))
        path = dest / "export" / model / f"{name}.{fmt}"
        rundir.atomic_write_bytes(path, blob)
        out = predict(x_te)
        acc = float(np.mean(out.argmax(1) == y_te))
        diff = np.abs(out - ref)
        rec = rundir.file_record(dest, path)
        variants[name] = {
            "status": "ok", "error": None, "key": rundir.stage_key("export", name, [rec["sha256"]]),
            "format": fmt, "variant_class": cls, "reference": "float", "file": rec, "files": [rec],
            "inputs": [{"name": "x", "shape": [None, FEATURES], "dtype": "float32", "scale": None,
                        "zero_point": None}],
            "outputs": [{"name": "logits", "shape": [None, CLASSES], "dtype": "float32", "scale": None,
                         "zero_point": None}],
            "parity": {"samples": len(y_te), "agreement": float(np.mean(out.argmax(1) == ref.argmax(1))),
                       "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "accuracy": acc,
                       "reference_accuracy": float_acc, "float_accuracy": float_acc,
                       "accuracy_drop_points": 100.0 * (float_acc - acc)},
            "checks": [], "seconds": 0.0}
        if audit is not None:
            variants[name]["audit"] = audit
        for batch in BATCHES:
            xb = x_te[:batch]
            all_ms, p50s = time_blocks(lambda: predict(xb))
            records.append(bench_record(model, name, fmt, cls, batch, rec["size_bytes"], acc,
                                        variants[name]["parity"]["agreement"], len(y_te), all_ms, p50s,
                                        rec["sha256"]))

    manifest = rundir.empty_manifest()
    manifest["stages"] = {
        "train": {"models": {model: {"status": "ok", "model": f"train/{model}/model.weights",
                                     "files": [rundir.file_record(dest, src)], "params": w.size + b.size,
                                     "metrics": {"test_accuracy": float_acc, "epochs_run": 1}, "seconds": 0.1}}},
        "export": {"profile": profile_to_dict(profile),
                   "data": {"parity": "synthetic", "samples": len(y_te), "calibration_samples": 500},
                   "models": {model: {"source": rundir.file_record(dest, src), "input_shape": [FEATURES],
                                      "num_classes": CLASSES, "float_accuracy": float_acc, "variants": variants}}}}
    rundir.atomic_write_json(dest / rundir.MANIFEST, manifest)
    rundir.atomic_write_json(dest / "results.json", {
        "schema_version": 1, "created_utc": rundir.utc_now(), "machine": machine.describe(),
        "environment": rundir.versions(RUNTIME_DISTS),
        "settings": {"quick": True, "threads": [1], "batches": list(BATCHES), "warmup_runs": 3,
                     "min_runs": 25, "min_seconds": 0, "repeats": 7},
        "records": records})
    return dest


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("check") / "good")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rows(result: CheckResult, **match) -> list:
    return [r for r in result.rows if all(getattr(r, k) == v for k, v in match.items())]


def _edit_json(path: Path, mutate) -> None:
    data = json.loads(path.read_text())
    mutate(data)
    rundir.atomic_write_json(path, data)


# ------------------------------------------------------------------ verdicts on export figures

def test_good_run_passes(good_run, capsys):
    result = check_run(good_run)
    assert result.passed, result.table
    assert not result.noisy and result.profile == "good-profile"
    assert result.table.startswith("PASSED")
    checks = {(r.variant, r.check) for r in result.rows}
    for v in VARIANTS:
        assert (v, "file") in checks
    assert {("tflite-fp32", "min_agreement"), ("onnx-fp32", "max_abs_diff"), ("tflite-fp16", "max_size_ratio"),
            ("tflite-int8-ptq", "max_accuracy_drop"), ("onnx-int8-ptq", "max_size_ratio"),
            ("onnx-int8-ptq", "int8_audit")} <= checks
    ratio = _rows(result, variant="tflite-int8-ptq", check="max_size_ratio")[0].value
    assert 0.2 < ratio < 0.32  # int8 weights are a quarter of float32, plus scales
    assert main(["check", "--run", str(good_run)]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_replaced_file_fails_with_its_row_named(good_run, tmp_path, capsys):
    run = _copy(good_run, tmp_path / "run")
    f = run / "export" / "lin" / "tflite-int8-ptq.tflite"
    f.write_bytes(f.read_bytes()[:-100])  # truncated after export measured it
    assert main(["check", "--run", str(run)]) == 1
    out = capsys.readouterr().out
    failing = [line.split() for line in out.splitlines() if line.startswith("FAIL ")]
    assert [f[:7] for f in failing] == [["FAIL", "lin", "tflite-int8-ptq", "-", "file", "changed", "intact"]]
    assert "no longer matches its recorded sha256" in out
    assert out.strip().splitlines()[-1].startswith("FAILED")


def test_coarse_int8_variant_fails_on_accuracy_drop(tmp_path):
    run = build_run(tmp_path / "coarse", broken={"onnx-int8-ptq": "coarse"})
    result = check_run(run)
    assert not result.passed
    bad = [r for r in result.rows if not r.passed]
    assert [(r.variant, r.check) for r in bad] == [("onnx-int8-ptq", "max_accuracy_drop")]
    assert bad[0].value > 1.0 and bad[0].limit == 1.0
    assert bad[0].note == f"over by {bad[0].value - 1.0:.4g} points"
    assert "onnx-int8-ptq" in result.table and "max_accuracy_drop" in result.table


def test_int8_variant_without_integer_kernels_fails_its_audit(tmp_path):
    run = build_run(tmp_path / "fc", broken={"tflite-int8-ptq": "float_compute"})
    result = check_run(run)
    bad = [(r.variant, r.check, r.value, r.note) for r in result.rows if not r.passed]
    assert bad == [("tflite-int8-ptq", "int8_audit", "failed",
                    "only 0.0% of MACs run in integer kernels (float ops: MatMul)")]


def test_impossible_profile_threshold_fails_every_variant_it_covers(good_run, tmp_path, capsys):
    strict = tmp_path / "strict.toml"
    strict.write_text('variants = ["tflite-int8-ptq", "onnx-int8-ptq"]\n'
                      '[thresholds.int8-ptq]\nmax_size_bytes = 100\n')
    result = check_run(good_run, profile=str(strict))
    assert not result.passed and result.profile == "strict"
    bad = {(r.variant, r.check) for r in result.rows if not r.passed}
    assert bad == {("tflite-int8-ptq", "max_size_bytes"), ("onnx-int8-ptq", "max_size_bytes")}
    size = _rows(result, variant="onnx-int8-ptq", check="max_size_bytes")[0].value
    assert f"over by {size - 100} bytes" in result.table
    assert main(["check", "--run", str(good_run), "--profile", str(strict)]) == 1


def test_failed_and_missing_variants_fail(good_run, tmp_path):
    run = _copy(good_run, tmp_path / "run")

    def break_export(m):
        variants = m["stages"]["export"]["models"]["lin"]["variants"]
        # a conversion that failed: no file, no parity; only the error
        variants["tflite-fp16"].update(status="failed", file=None, files=[], parity=None,
                                       error="ConverterError: op not supported\ntraceback...")
        del variants["onnx-fp32"]
    _edit_json(run / rundir.MANIFEST, break_export)
    result = check_run(run)
    bad = {(r.variant, r.check, r.value) for r in result.rows if not r.passed}
    assert bad == {("tflite-fp16", "export", "failed"), ("onnx-fp32", "exported", "missing")}
    assert "ConverterError: op not supported" in result.table and "traceback" not in result.table
    # onnx-int8-ptq lost its size reference: shown as not measured, neither passed silently nor failed
    ratio = _rows(result, variant="onnx-int8-ptq", check="max_size_ratio")[0]
    assert ratio.status == "n/a" and "no fp32 file" in ratio.note
    assert "n/a" in result.table and "1 not measured (not failures)" in result.table


def test_variant_export_failed_on_thresholds_is_judged_again_by_the_profile_given(good_run, tmp_path):
    """export keeps a file that missed its profile's thresholds, marked failed; the gate re-judges it."""
    run = build_run(tmp_path / "coarse", broken={"onnx-int8-ptq": "coarse"})

    def mark_failed(m):
        v = m["stages"]["export"]["models"]["lin"]["variants"]["onnx-int8-ptq"]
        v.update(status="failed", error="below the profile's thresholds: max_accuracy_drop ...")
    _edit_json(run / rundir.MANIFEST, mark_failed)
    strict = check_run(run)
    assert [(r.variant, r.check) for r in strict.rows if not r.passed] == [("onnx-int8-ptq", "max_accuracy_drop")]
    lenient = tmp_path / "lenient.toml"
    lenient.write_text('variants = ["onnx-fp32", "onnx-int8-ptq"]\n[thresholds.int8-ptq]\nmax_accuracy_drop = 50\n')
    assert check_run(run, profile=str(lenient)).passed


def test_failed_bench_record_fails(good_run, tmp_path):
    run = _copy(good_run, tmp_path / "run")

    def fail_one(res):
        rec = next(r for r in res["records"] if r["variant"] == "onnx-fp32" and r["batch"] == 32)
        rec.update(status="failed", error="RuntimeError: session crashed")
    _edit_json(run / "results.json", fail_one)
    result = check_run(run)
    bad = [r for r in result.rows if not r.passed]
    assert [(r.variant, r.check, r.runtime) for r in bad] == [("onnx-fp32", "bench", "numpy t1 b32")]


def test_run_directory_errors_are_one_line(tmp_path, good_run):
    with pytest.raises(RunDirError, match="does not exist"):
        check_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="edgekit export"):
        check_run(tmp_path / "empty")
    run = _copy(good_run, tmp_path / "nobench")
    (run / "results.json").unlink()
    assert check_run(run).passed  # export figures alone can be judged
    with pytest.raises(RunDirError, match="edgekit bench"):
        check_run(run, baseline=str(good_run / "results.json"))
    with pytest.raises(RunDirError, match="baseline .* does not exist"):
        check_run(good_run, baseline=str(tmp_path / "old.json"))
    assert main(["check", "--run", str(tmp_path / "empty")]) == 2  # the user's path is wrong (exit-code table)


# ------------------------------------------------------------------ latency against a baseline

def _with_repeats(good_run: Path, tmp_path: Path, repeats) -> tuple[Path, Path]:
    """A copy of the run plus a baseline results.json; repeats(record, index) gives the int8 records'
    (baseline, current) repeat-block p50s. Every other figure stays as measured."""
    run = _copy(good_run, tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    baseline = json.loads(json.dumps(results))
    for i, (old, new) in enumerate(zip(baseline["records"], results["records"])):
        if new["variant_class"] == "int8-ptq":
            old["p50_repeats_ms"], new["p50_repeats_ms"] = (list(map(float, r)) for r in repeats(new, i))
            for rec in (old, new):
                rec["p50_ms"] = float(np.median(rec["p50_repeats_ms"]))
    rundir.atomic_write_json(run / "results.json", results)
    rundir.atomic_write_json(tmp_path / "baseline.json", baseline)
    return run, tmp_path / "baseline.json"


def _known(factor: float, sigma: float, n: int = 10):
    """Repeat p50s drawn from lognormals around the record's measured p50: current = factor x baseline."""
    def draw(rec, i):
        rng = np.random.default_rng(i)
        return (rng.lognormal(np.log(rec["p50_ms"]), sigma, n), rng.lognormal(np.log(rec["p50_ms"] * factor), sigma, n))
    return draw


@pytest.mark.parametrize("factor, sigma, verdict", [
    (1.0, 0.03, "pass"),     # the same speed
    (1.6, 0.03, "fail"),     # clearly slower than the 15% bound
    (1.0, 0.50, "noisy"),    # repeats disagree by 2x: nothing can be said
    (1.15, 0.03, "noisy"),   # right on the bound: the interval straddles it
])
def test_latency_verdicts_against_baseline(good_run, tmp_path, capsys, factor, sigma, verdict):
    run, base = _with_repeats(good_run, tmp_path, _known(factor, sigma))
    result = check_run(run, baseline=str(base))
    lat = _rows(result, check="latency_p50_ratio")
    # two int8 variants x two batch sizes; the float variants' class has no latency bound
    assert sorted((r.variant, r.runtime) for r in lat) == [
        ("onnx-int8-ptq", "numpy t1 b1"), ("onnx-int8-ptq", "numpy t1 b32"),
        ("tflite-int8-ptq", "numpy t1 b1"), ("tflite-int8-ptq", "numpy t1 b32")]
    assert all(r.limit == pytest.approx(1.15) for r in lat)
    assert "4 of 4 measurements compared" in result.table
    code = main(["check", "--run", str(run), "--baseline", str(base)])
    out = capsys.readouterr().out
    if verdict == "pass":
        assert all(r.passed and not r.noisy and 0.9 < r.value < 1.1 for r in lat), result.table
        assert result.passed and not result.noisy and code == 0
    elif verdict == "fail":
        assert all(not r.passed and "slower than the x1.15 limit" in r.note for r in lat), result.table
        assert not result.passed and code == 1
        assert "FAIL    lin    tflite-int8-ptq  numpy t1 b32  latency_p50_ratio" in out
    else:
        assert all(r.passed and r.noisy and "too noisy to judge" in r.note for r in lat), result.table
        assert result.passed and result.noisy and code == 0  # reported, not a failure
        assert "4 too noisy to judge" in out and out.strip().splitlines()[-1].startswith("PASSED")


def test_baseline_without_matching_records_compares_nothing(good_run, tmp_path):
    run, base = _with_repeats(good_run, tmp_path, _known(1.0, 0.03))
    _edit_json(base, lambda res: [r.update(threads=4) for r in res["records"]])
    result = check_run(run, baseline=str(base))
    lat = _rows(result, check="latency_p50_ratio")
    assert result.passed and len(lat) == 4 and not any(r.compared for r in lat)
    assert all(r.note == "not compared: the baseline has no ok record of this setting" for r in lat)
    assert "0 of 4 measurements compared (the baseline has no matching records)" in result.table


# ------------------------------------------------------------------ like with like

def _compared_and_skipped(result: CheckResult) -> tuple[list, list]:
    lat = _rows(result, check="latency_p50_ratio")
    return [r for r in lat if r.compared], [r for r in lat if not r.compared]


def _skip_lines(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("skipped: ")]


def test_ratio_shown_is_the_ratio_of_the_figures_shown(good_run, tmp_path):
    """The note's two ms figures are the medians of the repeat-block p50s, the figures the ratio
    divides, not the pooled p50s (which differ from them: every record here has both)."""
    run, base = _with_repeats(good_run, tmp_path, _known(1.3, 0.03))
    # pooled p50 != block median, as in a real run: the note must not show the pooled one
    _edit_json(run / "results.json", lambda res: [r.update(p50_ms=r["p50_ms"] * 0.9) for r in res["records"]])
    compared, skipped = _compared_and_skipped(check_run(run, baseline=str(base)))
    assert len(compared) == 4 and not skipped
    cur = {(r["variant"], r["batch"]): r for r in json.loads((run / "results.json").read_text())["records"]}
    for r in compared:
        old_ms, new_ms = (float(x) for x in r.note.split(" ms ")[0].split(" -> "))
        shown_ratio = float(r.note.split("p50 x")[1].split()[0])
        # both figures are printed to 4 significant digits (relative rounding <= 5e-4 each), so
        # their quotient is within ~1e-3 relative of the exact ratio; the ratio itself to 3 decimals
        assert new_ms / old_ms == pytest.approx(r.value, rel=1.5e-3), r.note
        assert shown_ratio == pytest.approx(r.value, abs=5e-4 + 1e-12)
        rec = cur[(r.variant, int(r.runtime.split(" b")[1]))]
        assert new_ms == pytest.approx(float(np.median(rec["p50_repeats_ms"])), rel=5e-4)
        assert new_ms != pytest.approx(rec["p50_ms"], rel=0.02)  # the pooled figure is 10% lower


def _unlike_run(good_run, tmp_path, change_baseline, factor: float = 1.6):
    """Current = 1.6x slower than the baseline in every int8 repeat block (a clear regression when
    compared), then one field of the baseline changed."""
    run, base = _with_repeats(good_run, tmp_path, _known(factor, 0.03))
    _edit_json(base, change_baseline)
    return run, base


def _check_skipped_everything(run, base, why: str) -> CheckResult:
    result = check_run(run, baseline=str(base))
    compared, skipped = _compared_and_skipped(result)
    assert not compared and len(skipped) == 4
    assert all(r.note == "not compared: " + why and r.status == "skipped" and r.passed for r in skipped)
    # one line says what differs and lists what it kept from being compared
    lines = _skip_lines(result.table)
    assert len(lines) == 1 and lines[0].startswith(f"skipped: {why}; latency not compared for 4 measurements: ")
    assert "lin onnx-int8-ptq (numpy t1 b1, numpy t1 b32)" in lines[0]
    assert "0 of 4 measurements compared, 4 skipped as unlike" in result.table
    # accuracy and parity are still judged: the 1.6x slower latency does not fail, the rest passes
    assert result.passed and _rows(result, variant="onnx-int8-ptq", check="max_accuracy_drop")[0].passed
    return result


def test_same_cpu_and_settings_compare_and_catch_the_regression(good_run, tmp_path):
    run, base = _unlike_run(good_run, tmp_path, lambda res: None)
    result = check_run(run, baseline=str(base))
    compared, skipped = _compared_and_skipped(result)
    assert len(compared) == 4 and not skipped and not _skip_lines(result.table)
    assert not result.passed and all(r.status == "FAIL" for r in compared)


def test_baseline_on_other_cpu_flags_is_not_compared(good_run, tmp_path, capsys):
    here = machine.describe()["int8_flags"]
    other = [f for f in here if f != "avx512_vnni"] if "avx512_vnni" in here else [*here, "avx512_vnni"]
    run, base = _unlike_run(good_run, tmp_path, lambda res: res["machine"].update(int8_flags=other))
    why = f"CPU flags differ: {','.join(here)} vs {','.join(other)}"
    _check_skipped_everything(run, base, why)
    assert main(["check", "--run", str(run), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert f"skipped: {why}; latency not compared for 4 measurements" in out


def test_baseline_on_another_cpu_model_is_not_compared(good_run, tmp_path):
    run, base = _unlike_run(good_run, tmp_path, lambda res: res["machine"].update(cpu_model="Other CPU 9000"))
    _check_skipped_everything(run, base, f"CPU differs: {machine.describe()['cpu_model']} vs Other CPU 9000")


def test_baseline_without_machine_is_not_compared(good_run, tmp_path):
    run, base = _unlike_run(good_run, tmp_path, lambda res: res.pop("machine"))
    result = _check_skipped_everything(run, base, "baseline does not record its CPU")
    assert "skipped: baseline does not record its CPU; latency not compared" in result.table


def test_quick_baseline_against_full_settings_is_not_compared(good_run, tmp_path):
    """A --quick baseline against a full bench: every timing setting that differs is named."""
    from edgekit.core.timing import FULL

    full = dict(dataclasses.asdict(FULL), quick=False)
    run, base = _unlike_run(good_run, tmp_path, lambda res: None)
    current = json.loads((run / "results.json").read_text())["settings"]
    _edit_json(run / "results.json", lambda res: res["settings"].update(full))
    old = json.loads(base.read_text())["settings"]
    diffs = [f"{k} {full[k]} vs {old[k] if old.get(k) is not None else 'not recorded'}"
             for k in ("quick", "warmup_runs", "warmup_seconds", "min_runs", "min_seconds", "max_seconds", "repeats")
             if full[k] != old.get(k)]
    assert current == old and "quick True vs False" not in diffs and "quick False vs True" in diffs
    _check_skipped_everything(run, base, "bench settings differ: " + ", ".join(diffs))


def test_other_runtime_version_is_not_compared(good_run, tmp_path):
    # build_run's records run on "numpy", so numpy's version is the runtime version compared
    now = rundir.versions()["numpy"]
    run, base = _unlike_run(good_run, tmp_path, lambda res: res["environment"].update(numpy="1.0.0"))
    _check_skipped_everything(run, base, f"runtime versions differ: numpy {now} vs 1.0.0")


def test_other_file_hash_skips_only_that_file(good_run, tmp_path):
    def other_file(res):
        for r in res["records"]:
            if r["variant"] == "tflite-int8-ptq":
                r["sha256"] = "0" * 64
    run, base = _unlike_run(good_run, tmp_path, other_file)
    result = check_run(run, baseline=str(base))
    compared, skipped = _compared_and_skipped(result)
    assert {r.variant for r in compared} == {"onnx-int8-ptq"} and len(compared) == 2
    assert {r.variant for r in skipped} == {"tflite-int8-ptq"} and len(skipped) == 2
    new = _rows(result, variant="tflite-int8-ptq", check="file")[0]
    assert new.passed
    lines = _skip_lines(result.table)
    assert len(lines) == 1 and lines[0].startswith("skipped: file differs: sha256 ")
    assert lines[0].endswith("vs 000000000000; latency not compared for 2 measurements: "
                             "lin tflite-int8-ptq (numpy t1 b1, numpy t1 b32)")
    assert all(len(r["sha256"]) == 64 for r in json.loads((run / "results.json").read_text())["records"])
    assert not result.passed  # the onnx file is compared, and its 1.6x slow-down still fails
    assert "2 of 4 measurements compared, 2 skipped as unlike" in result.table


def test_export_failures_in_results_are_not_bench_failures(good_run, tmp_path):
    """A stage-export record (the bench never ran the variant) is judged from the manifest only."""
    run = _copy(good_run, tmp_path / "run")

    def add(res):
        res["records"].append(dict(res["records"][-1], status="failed", stage="export", threads=None, batch=None,
                                   error="not benched: export failed: ConverterError"))
    _edit_json(run / "results.json", add)
    result = check_run(run)
    assert result.passed and not _rows(result, check="bench")


def _interleaved(fn_base, fn_cur, repeats: int = 20, runs: int = 40) -> tuple[list[float], list[float]]:
    """Repeat-block p50s of two functions, blocks alternating so machine load hits both alike."""
    base, cur = [], []
    for _ in range(repeats):
        base += time_blocks(fn_base, repeats=1, runs=runs)[1]
        cur += time_blocks(fn_cur, repeats=1, runs=runs)[1]
    return base, cur


def test_real_timings_a_3x_slower_run_never_passes_and_the_same_never_fails(good_run, tmp_path):
    """Timed here, on whatever load this machine has: the verdict may be "noisy", never the wrong one."""
    x = np.random.default_rng(0).normal(size=(32, FEATURES)).astype(np.float32)
    w = np.random.default_rng(1).integers(-127, 128, (FEATURES, CLASSES)).astype(np.int32)

    def work():
        return (np.round(x * 40).astype(np.int32) @ w).astype(np.float32)

    def slow():
        return work(), work(), work()
    for fn, bad in ((work, "fail"), (slow, "pass")):
        run, base = _with_repeats(good_run, tmp_path / bad, lambda rec, i: _interleaved(work, fn))
        lat = _rows(check_run(run, baseline=str(base)), check="latency_p50_ratio")
        assert len(lat) == 4
        for r in lat:
            assert r.status != {"fail": "FAIL", "pass": "ok"}[bad], r.note
            if fn is slow and r.value is not None:
                assert r.value > 2.0, r.note


# ------------------------------------------------------------------ a real export (conftest's exported_run)

def test_real_export_passes_its_own_profile(exported_run, capsys):
    result = check_run(exported_run)
    assert result.passed, result.table
    assert result.profile == "default"
    judged = {r.variant for r in result.rows}
    assert judged == {"tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq", "tflite-int8-qat",
                      "onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat"}
    assert len(_rows(result, check="int8_audit")) == 4 and all(r.passed for r in _rows(result, check="int8_audit"))
    assert main(["check", "--run", str(exported_run)]) == 0
    assert capsys.readouterr().out.startswith("PASSED")


def test_real_export_with_a_swapped_file_fails_naming_it(exported_run, tmp_path, capsys):
    """Someone copies the float model over the int8 one: the hash no longer matches what parity measured."""
    from conftest import copy_run

    run = copy_run(exported_run, tmp_path / "run")
    shutil.copyfile(run / "export" / "cnn" / "tflite-fp32.tflite", run / "export" / "cnn" / "tflite-int8-qat.tflite")
    assert main(["check", "--run", str(run)]) == 1
    out = capsys.readouterr().out
    failing = [line.split() for line in out.splitlines() if line.startswith("FAIL ")]
    assert [f[:5] for f in failing] == [["FAIL", "cnn", "tflite-int8-qat", "-", "file"]]


def test_int8_audit_failure_reads_the_same_in_export_and_in_the_gate(exported_run, tiny_profile, tmp_path,
                                                                    monkeypatch):
    """One judgement (edgekit.verify.judge): the failing audit export records is the row the gate
    shows, with the same words, and export's error names it the same way."""
    from conftest import copy_run

    from edgekit.core.progress import Progress
    from edgekit.export.stage import export_run
    from edgekit.verify import audit

    reason = "only 12.5% of MACs run in integer kernels (float ops: FULLY_CONNECTED)"
    real = audit.audit_int8
    monkeypatch.setattr(audit, "audit_int8", lambda path: dict(real(path), passed=False, reason=reason))
    run = copy_run(exported_run, tmp_path / "run")
    profile = dataclasses.replace(tiny_profile, variants=("tflite-fp32", "tflite-int8-ptq"))
    sec = export_run(run, profile, models=("cnn",), force=True, progress=Progress(quiet=True))
    v = sec["models"]["cnn"]["variants"]["tflite-int8-ptq"]
    exported = {c["name"]: c for c in v["checks"]}["int8_audit"]
    assert exported == {"name": "int8_audit", "limit": True, "value": False, "passed": False, "note": reason}
    assert v["status"] == "failed" and v["error"] == f"below the profile's thresholds: int8_audit failed: {reason}"
    assert (run / v["file"]["path"]).is_file()                      # below its thresholds: file kept

    result = check_run(run)
    bad = [(r.variant, r.check, r.value, r.note) for r in result.rows if not r.passed]
    assert bad == [("tflite-int8-ptq", "int8_audit", "failed", exported["note"])]


def test_check_result_is_frozen(good_run):
    result = check_run(good_run)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = False  # type: ignore[misc]
