"""`edgekit bench`: accuracy and latency of every exported model on every runtime that runs it.

Models are found only through manifest.json: the trained Keras model ("keras-fp32"), the QAT
Keras model ("keras-qat") and every export variant whose status is ok. Each runtime works in a
worker subprocess of its own (edgekit.bench_worker), one after the other, never two at once:
  - accuracy once per (file, runtime, options) on the whole test set, batched, and top-1
    agreement with the float Keras model on the same images;
  - latency per (file, runtime, options, threads, batch) by edgekit.latency (warm-up, repeat
    blocks, p50/p90/p99...), and the worker's peak resident memory for that session.
Every variant export failed or skipped, and a QAT model it could not make, keeps one record too
(stage "export", status "failed"/"skipped", the export's error), so nothing vanishes from the
results. Every record carries its file's sha256, and results.json names the machine (CPU model,
int8-relevant ISA flags, class): latencies are only comparable between like files on like CPUs.
Writes RUN/results.json (checked against edgekit/results_schema.json first) and RUN/results.csv
(edgekit.results), and records a "bench" section in the manifest with a key of the files and
settings: a bench whose key and files are unchanged is not run again (force=True runs it).
The report is not rendered here (cli and pipeline run check, then report).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from edgekit import machine, rundir
from edgekit.errors import ConfigError, RunDirError
from edgekit.latency import FULL, QUICK, TimingSettings
from edgekit.progress import Progress
from edgekit.results import RESULTS_SCHEMA_VERSION, STAT_FIELDS, read_results, write_results
from edgekit.runtimes import RUNTIMES, get_runtime

QUICK_SAMPLES = 1000        # --quick: accuracy on the first 1000 test images
# A runtime's first option set (its default: litert xnnpack=on) is judged on the whole test set;
# the others (xnnpack=off, whose kernels are 4x slower) on the first 2000 images, which keeps the
# full bench in budget. Each record's `samples` says which.
SECONDARY_SAMPLES = 2000
PREDICT_BATCH = 256         # batch of the accuracy runs
RUNTIME_ORDER = ("keras", "litert", "onnxruntime")
PEAK_RSS_NOTE = ("peak_rss_mb: VmHWM of the runtime's own worker process, reset (/proc/self/clear_refs, after "
                 "gc and malloc_trim) just before the session is opened and read after its timing at that "
                 "batch (batches run smallest first on one session, the accuracy run after them): the Python "
                 "interpreter, the runtime's libraries, the worker's uint8 test images and whatever earlier "
                 "sessions left resident, plus this session's model, arena and threads. baseline_rss_mb: the "
                 "worker's RSS before any model was opened; peak - baseline ~ what the model costs. Where "
                 "clear_refs cannot be written (not Linux), the peak is the worker's since it started.")


@dataclass(frozen=True)
class ModelFile:
    """One file to bench, as the manifest describes it."""
    model: str
    variant: str          # keras-fp32 | keras-qat | an export variant name
    format: str           # keras | tflite | onnx
    variant_class: str    # float | fp16 | dynamic | int8-ptq | int8-qat | fake-quant (keras-qat)
    path: Path
    rel_path: str         # as recorded in the manifest
    sha256: str | None
    size_bytes: int | None


@dataclass(frozen=True, eq=False)
class TestSet:
    """The images every file of a model is judged on (uint8 pixels, or float inputs)."""
    key: str
    description: str
    x: np.ndarray
    y: np.ndarray | None


# ---------------------------------------------------------------------------------------------
# Public API

def bench_run(run_dir: str | Path, runtimes: Iterable[str] = ("keras", "litert", "onnxruntime"),
              threads: Iterable[int] = (1, 2), batches: Iterable[int] = (1, 32), quick: bool = False,
              progress: Progress | None = None, force: bool = False) -> dict:
    """Bench every model the run's manifest lists; returns the results.json content. Results
    still current for these files, settings and CPU are reused unless `force`."""
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    runtimes, threads, batches = _check_settings(runtimes, threads, batches)
    timing = QUICK if quick else FULL
    if not (run_dir / rundir.MANIFEST).exists():
        raise RunDirError(f"{run_dir} has no {rundir.MANIFEST}; run `edgekit train --out {run_dir}` "
                          f"and `edgekit export --run {run_dir}` first")
    manifest = rundir.load_manifest(run_dir)
    files = find_model_files(run_dir, manifest)
    if not files:
        raise RunDirError(f"{run_dir}: the manifest lists no trained or exported model; "
                          f"run `edgekit export --run {run_dir}` first")
    progress = progress or Progress()
    own_stage = not progress.stage_name
    if own_stage:
        progress.start_stage("bench")
    key = bench_key(manifest, runtimes, threads, batches, quick)
    if not force and rundir.is_fresh(run_dir, manifest.get("stages", {}).get("bench"), key):
        progress.update("results.json is current for these exports and settings; reused")
        if own_stage:
            progress.done("reused")
        return read_results(run_dir / "results.json")
    tests = load_test_sets(run_dir, manifest, sorted({f.model for f in files}), quick)

    stale = {f: why for f in files if (why := _file_problem(f))}
    usable = [f for f in files if f not in stale]
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        data_paths = {}
        for t in {t.key: t for t in tests.values()}.values():
            data_paths[t.key] = str(Path(tmp) / f"x-{len(data_paths)}.npy")
            np.save(data_paths[t.key], t.x)
        option_sets = {name: RUNTIMES[name].option_grid() for name in runtimes}
        jobs = plan_jobs(usable, tests, data_paths, runtimes, option_sets, threads, batches, timing)
        events = _run_jobs(jobs, Path(tmp), progress)
    records = assemble_records(files, stale, tests, events, runtimes, option_sets, threads, batches)
    records += export_failure_records(manifest)

    results = {
        "schema_version": RESULTS_SCHEMA_VERSION, "created_utc": rundir.utc_now(),
        "machine": machine.describe(),
        "environment": rundir.versions(),
        "settings": _settings_record(runtimes, threads, batches, quick, timing, tests),
        "seconds": round(time.monotonic() - t0, 2),
        "records": records,
    }
    write_results(run_dir, results)
    failed = [r for r in records if r["status"] != "ok" and r["stage"] == "bench"]
    for r in failed:
        progress.update(f"FAILED {r['variant']} on {r['runtime']} t{r['threads']} b{r['batch']}: {r['error']}",
                        model=r["model"])
    _record_stage(run_dir, results, len(failed), key)
    if own_stage:
        progress.done(f"{len(records) - len(failed)} measurements ok, {len(failed)} failed")
    return results


# ---------------------------------------------------------------------------------------------
# What to bench, on what data

def bench_key(manifest: dict, runtimes: tuple[str, ...], threads: tuple[int, ...], batches: tuple[int, ...],
              quick: bool) -> str:
    """Bench results are current when the trained and exported files, the settings and the CPU
    are unchanged: latency belongs to the CPU it was measured on, another machine measures again."""
    stages = manifest.get("stages", {})
    hashes = []
    for _, rec in sorted(stages.get("train", {}).get("models", {}).items()):
        hashes += [f["sha256"] for f in rec.get("files", [])]
    for _, rec in sorted(stages.get("export", {}).get("models", {}).items()):
        for _, v in sorted(rec.get("variants", {}).items()):
            hashes += [f["sha256"] for f in v.get("files", [])]
    cpu = machine.describe()
    return rundir.stage_key("bench", {"quick": quick, "cpu_model": cpu["cpu_model"], "int8_flags": cpu["int8_flags"],
                                      "runtimes": list(runtimes), "threads": list(threads),
                                      "batches": list(batches)}, hashes)


def _check_settings(runtimes, threads, batches) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    runtimes = tuple(dict.fromkeys(runtimes))
    for name in runtimes:
        get_runtime(name)  # one-line ConfigError naming the choices
    if not runtimes:
        raise ConfigError(f"no runtimes given; choose from {', '.join(RUNTIMES)}")
    out = []
    for what, values in (("threads", threads), ("batch", batches)):
        values = tuple(dict.fromkeys(values))
        if not values or any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1 for v in values):
            raise ConfigError(f"--{what} needs positive integers like 1,2; got {list(values)}")
        out.append(tuple(sorted(int(v) for v in values)))
    return tuple(r for r in RUNTIME_ORDER if r in runtimes) + tuple(r for r in runtimes if r not in RUNTIME_ORDER), \
        out[0], out[1]


def find_model_files(run_dir: Path, manifest: dict) -> list[ModelFile]:
    """keras-fp32 (the trained model, or the source of `export --model`), keras-qat, and every
    export variant with status ok, in manifest order."""
    stages = manifest.get("stages", {})
    train = stages.get("train", {}).get("models", {})
    export = stages.get("export", {}).get("models", {})
    files: list[ModelFile] = []

    def add(model: str, variant: str, fmt: str, cls: str, rec: dict | None) -> None:
        if rec and rec.get("path"):
            path = rundir.resolve(run_dir, rec["path"])
            size = rundir.size_bytes(path) if path.exists() else rec.get("size_bytes")
            files.append(ModelFile(model, variant, fmt, cls, path, rec["path"], rec.get("sha256"), size))

    for model in dict.fromkeys([*train, *export]):
        t, e = train.get(model), export.get(model, {})
        if t and t.get("status", "ok") == "ok":
            source = next((f for f in t.get("files", []) if f["path"] == t.get("model")), None)
            add(model, "keras-fp32", "keras", "float", source or {"path": t.get("model")})
        elif e.get("source"):
            add(model, "keras-fp32", "keras", "float", e["source"])
        qat = e.get("qat") or {}
        if qat.get("status") == "ok":
            add(model, "keras-qat", "keras", "fake-quant", qat.get("file"))
        for variant, v in e.get("variants", {}).items():
            if v.get("status") == "ok":
                add(model, variant, v.get("format", Path(v["file"]["path"]).suffix.lstrip(".")),
                    v.get("variant_class", "unknown"), v.get("file"))
    return files


def _file_problem(f: ModelFile) -> str | None:
    if not f.path.exists():
        return f"{f.rel_path} is missing although the manifest lists it; re-run the stage that made it"
    if f.sha256 and rundir.sha256_file(f.path) != f.sha256:
        return f"{f.rel_path} no longer matches its recorded sha256; re-run the stage that made it (--force)"
    return None


def load_test_sets(run_dir: Path, manifest: dict, models: list[str], quick: bool) -> dict[str, TestSet]:
    """Per model: the test set of the data it was trained on; for a model exported with
    `export --model`, the user's sample (labels optional) or the export's random inputs."""
    from edgekit.data import load_calibration, load_dataset

    stages = manifest.get("stages", {})
    train = stages.get("train", {})
    export = stages.get("export", {})
    cache: dict[str, TestSet] = {}
    out: dict[str, TestSet] = {}
    for model in models:
        t = train.get("models", {}).get(model)
        if t:
            cfg = t.get("config", {})
            name = cfg.get("dataset") or train.get("dataset", {}).get("name")
            key = json.dumps(["dataset", name, cfg.get("data_dir")])
            if key not in cache:
                ds = load_dataset(name, cfg.get("data_dir"))
                cache[key] = TestSet(key, f"{ds.name} test set", ds.x_test, ds.y_test)
        else:
            data = export.get("data", {})
            shape = tuple(export.get("models", {}).get(model, {}).get("input_shape") or ())
            if data.get("calibration"):
                key = json.dumps(["sample", data["calibration"], shape])
                if key not in cache:
                    x, y = load_calibration(data["calibration"], shape)
                    cache[key] = TestSet(key, f"user sample {Path(data['calibration']).name}", x, y)
            else:  # the same seeded inputs export's parity used: agreement only, no accuracy
                n = int(data.get("samples") or 500)
                key = json.dumps(["random", n, shape])
                if key not in cache:
                    x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
                    cache[key] = TestSet(key, "random uniform [0, 1) inputs (no labels)", x, None)
        ts = cache[key]
        if quick and len(ts.x) > QUICK_SAMPLES:
            ts = TestSet(key + "-quick", ts.description + f", first {QUICK_SAMPLES}", ts.x[:QUICK_SAMPLES],
                         None if ts.y is None else ts.y[:QUICK_SAMPLES])
            cache[ts.key] = ts
        out[model] = ts
    return out


# ---------------------------------------------------------------------------------------------
# Workers

def plan_jobs(files: list[ModelFile], tests: dict[str, TestSet], data_paths: dict[str, str],
              runtimes: tuple[str, ...], option_sets: dict[str, list[dict]], threads: tuple[int, ...],
              batches: tuple[int, ...], timing: TimingSettings) -> list[dict]:
    """One worker per runtime (per thread count for Keras, whose thread pools are fixed at
    first use). Without the keras runtime, a Keras worker still computes the float model's
    predictions, which every agreement figure is measured against."""
    units = [{"id": i, "model": f.model, "variant": f.variant, "path": str(f.path), "data": tests[f.model].key}
             for i, f in enumerate(files)]
    by_id = dict(zip((u["id"] for u in units), files))
    base = {"data": data_paths, "batches": list(batches), "predict_batch": PREDICT_BATCH,
            "timing": dataclasses.asdict(timing)}
    jobs = []
    for name in runtimes:
        rt = RUNTIMES[name]
        mine = [u for u in units if rt.can_run(by_id[u["id"]].path)]
        if not mine:
            continue
        # The accuracy run shares the session timed with the fewest threads: on a shared
        # 2-core machine, more threads than idle cores can make a run 100x slower (spin-waits).
        job = dict(base, runtime=name, units=mine, option_sets=option_sets[name], predict=True,
                   predict_threads=min(threads), threads=list(threads),
                   predict_samples=[None] + [SECONDARY_SAMPLES] * (len(option_sets[name]) - 1))
        if name == "keras":  # one worker per thread count; the accuracy run in the first
            jobs += [dict(job, threads=[t], predict=t == min(threads), predict_threads=t) for t in threads]
        else:
            jobs.append(job)
    if "keras" not in runtimes:
        ref = [u for u in units if by_id[u["id"]].variant == "keras-fp32"]
        if ref:
            jobs.insert(0, dict(base, runtime="keras", units=ref, option_sets=[{}], predict=True,
                                predict_threads=min(threads), threads=[], timing=None, predict_samples=[None],
                                reference_only=True))
    return jobs


def _run_jobs(jobs: list[dict], tmp: Path, progress: Progress) -> list[dict]:
    total = sum(len(j["units"]) * len(j["option_sets"]) * len(j["threads"]) * len(j["batches"])
                for j in jobs if j.get("timing")) or 1
    done = 0
    events: list[dict] = []
    names = {u["id"]: f"{u['variant']}" for j in jobs for u in j["units"]}
    models = {u["id"]: u["model"] for j in jobs for u in j["units"]}
    for n, job in enumerate(jobs):
        what = "reference predictions" if job.get("reference_only") else \
            f"{job['runtime']}" + (f" ({job['threads'][0]} thread{'s' if job['threads'][0] > 1 else ''})"
                                   if job["runtime"] == "keras" else "")

        def on_event(ev: dict) -> None:
            nonlocal done
            if ev["type"] == "unit":
                progress.update(f"{what}: {names[ev['id']]}", model=models[ev["id"]], fraction=done / total)
            elif ev["type"] == "timing":
                done += 1
        events += run_worker(job, tmp / f"job{n}", on_event)
    return events


def run_worker(job: dict, folder: Path, on_event=lambda ev: None) -> list[dict]:
    """Run one job in worker subprocesses; every event is tagged with the job's runtime and its
    worker's baseline RSS. A worker that dies mid-file fails that file ("crash" event) and a new
    worker takes the files after it; one that dies before it is ready fails them all."""
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parent.parent)  # edgekit importable even if not installed
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    remaining = list(job["units"])
    events: list[dict] = []
    attempt = 0
    while remaining:
        job_file = folder / f"job-{attempt}.json"
        job_file.write_text(json.dumps(dict(job, units=remaining)))
        err_path = folder / f"stderr-{attempt}.log"
        current, baseline, ready = None, None, False
        with open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "edgekit.bench_worker", str(job_file)],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            try:
                for line in proc.stdout:
                    try:
                        ev = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # not an event (cannot happen by design: fd 1 is redirected)
                    ev["runtime"] = job["runtime"]
                    if ev["type"] == "ready":
                        ready, baseline = True, ev.get("baseline_rss_mb")
                    elif ev["type"] == "unit":
                        current = ev["id"]
                    ev["baseline_rss_mb"] = baseline
                    events.append(ev)
                    on_event(ev)
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if rc == 0 or any(ev["type"] == "unavailable" for ev in events):
            break
        why = f"{job['runtime']} worker exited with code {rc}{_stderr_tail(err_path)}"
        ids = [u["id"] for u in remaining]
        if not ready or current is None:
            events += [{"type": "crash", "runtime": job["runtime"], "id": i, "error": why} for i in ids]
            break
        events.append({"type": "crash", "runtime": job["runtime"], "id": current, "error": why})
        remaining = remaining[ids.index(current) + 1:]
        attempt += 1
    return events


def _stderr_tail(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return f": {lines[-1][:300]}" if lines else ""


# ---------------------------------------------------------------------------------------------
# Records

def _options_key(options: dict) -> str:
    return json.dumps(options, sort_keys=True)


def assemble_records(files: list[ModelFile], stale: dict[ModelFile, str], tests: dict[str, TestSet],
                     events: list[dict], runtimes: tuple[str, ...], option_sets: dict[str, list[dict]],
                     threads: tuple[int, ...], batches: tuple[int, ...]) -> list[dict]:
    """One record per (file, runtime, options, threads, batch) asked for, measured or not.
    Worker events name files by their index among the usable (not stale) files, as plan_jobs does."""
    preds, timings, crashes, unavailable = {}, {}, {}, {}
    for ev in events:
        t = ev["type"]
        if t == "predictions":
            preds[(ev["runtime"], ev["id"], _options_key(ev["options"]))] = ev
        elif t == "timing":
            timings[(ev["runtime"], ev["id"], _options_key(ev["options"]), ev["threads"], ev["batch"])] = ev
        elif t == "crash":
            crashes[(ev["runtime"], ev["id"])] = ev["error"]
        elif t == "unavailable":
            unavailable[ev["runtime"]] = ev["error"]
    uid = {f: i for i, f in enumerate(f for f in files if f not in stale)}
    reference = {}  # model -> the float Keras model's top-1 classes
    for f in uid:
        ev = preds.get(("keras", uid[f], _options_key({})))
        if f.variant == "keras-fp32" and ev and "classes" in ev:
            reference[f.model] = np.asarray(ev["classes"])

    records = []
    for f in files:
        for name in runtimes:
            if not RUNTIMES[name].can_run(f.path):
                continue
            for options in option_sets[name]:
                okey = _options_key(options)
                for th in threads:
                    for batch in batches:
                        rec = _base_record(f, name, options, th, batch, tests[f.model])
                        if f in stale:
                            rec["error"] = stale[f]
                        elif name in unavailable:
                            rec["error"] = unavailable[name]
                        else:
                            i = uid[f]
                            _fill(rec, preds.get((name, i, okey)), timings.get((name, i, okey, th, batch)),
                                  crashes.get((name, i)), tests[f.model], reference.get(f.model))
                        rec["status"] = "ok" if rec["error"] is None else "failed"
                        records.append(rec)
    return records


def _base_record(f: ModelFile, runtime: str, options: dict, threads, batch, test: TestSet) -> dict:
    rec = {"model": f.model, "variant": f.variant, "format": f.format, "variant_class": f.variant_class,
           "runtime": runtime, "runtime_options": options, "threads": threads, "batch": batch,
           "file": f.rel_path, "size_bytes": f.size_bytes, "accuracy": None, "agreement": None,
           "samples": int(len(test.x))}
    rec.update({k: None for k in STAT_FIELDS})
    rec.update({"peak_rss_mb": None, "baseline_rss_mb": None, "status": "failed", "error": None,
                "stage": "bench", "sha256": f.sha256})
    return rec


def export_failure_records(manifest: dict) -> list[dict]:
    """One record per variant (and QAT model) that export failed or skipped, with its status and
    error, so that it stays in results.json/csv and the report. stage "export": the bench never
    ran it; threads, batch and the figures are null; runtime is the one that runs its format."""
    records = []
    for model, m in manifest.get("stages", {}).get("export", {}).get("models", {}).items():
        entries = [("keras-qat", dict(m["qat"], format="keras", variant_class="fake-quant"))] if m.get("qat") else []
        for variant, v in [*entries, *(m.get("variants") or {}).items()]:
            status = v.get("status") or "failed"
            if status == "ok":
                continue
            file = v.get("file") or {}
            fmt = v["format"]  # export's records always name it (export._blank_record)
            runtime = next((r.name for r in RUNTIMES.values() if f".{fmt}" in r.suffixes), None)
            rec = {"model": model, "variant": variant, "format": fmt,
                   "variant_class": v.get("variant_class") or "unknown", "runtime": runtime,
                   "runtime_options": {}, "threads": None, "batch": None, "file": file.get("path"),
                   "size_bytes": file.get("size_bytes"), "accuracy": None, "agreement": None, "samples": None}
            rec.update({k: None for k in STAT_FIELDS})
            rec.update({"peak_rss_mb": None, "baseline_rss_mb": None,
                        "status": status if status in ("failed", "skipped") else "failed",
                        "error": f"not benched: export {status}: {v.get('error') or 'no reason recorded'}",
                        "stage": "export", "sha256": file.get("sha256")})
            records.append(rec)
    return records


def _fill(rec: dict, pred: dict | None, timing: dict | None, crash: str | None, test: TestSet,
          reference: np.ndarray | None) -> None:
    errors = []
    if pred and "classes" in pred:
        classes = np.asarray(pred["classes"])
        n = rec["samples"] = int(len(classes))  # the first n test images
        if test.y is not None:
            rec["accuracy"] = float(np.mean(classes == test.y[:n]))
        if reference is not None and len(reference) >= n:
            rec["agreement"] = float(np.mean(classes == reference[:n]))
    elif pred:
        errors.append(f"accuracy run failed: {pred['error']}")
    if timing and "stats" in timing:
        rec.update(timing["stats"])
        rec["peak_rss_mb"] = timing.get("peak_rss_mb")
        rec["baseline_rss_mb"] = timing.get("baseline_rss_mb")
    elif timing:
        errors.append(timing["error"])
    if (timing is None or (pred is None)) and not errors:
        errors.append(crash or "not measured: the worker stopped before this setting")
    rec["error"] = "; ".join(errors) if errors else None


def _settings_record(runtimes, threads, batches, quick: bool, timing: TimingSettings,
                     tests: dict[str, TestSet]) -> dict:
    return {"quick": quick, "runtimes": list(runtimes), "threads": list(threads), "batches": list(batches),
            **dataclasses.asdict(timing),
            "samples": {m: int(len(t.x)) for m, t in tests.items()},
            "data": {m: t.description for m, t in tests.items()},
            "accuracy_batch": PREDICT_BATCH,
            "secondary_option_samples": SECONDARY_SAMPLES,
            "accuracy_note": "accuracy and agreement on the whole test set for each runtime's default options "
                             f"(the first set); other option sets on the first {SECONDARY_SAMPLES} images "
                             "(see each record's samples)",
            "percentiles": "linear interpolation between closest ranks over all timed runs; "
                           "p50_repeats_ms: the p50 of each repeat block",
            "peak_rss": PEAK_RSS_NOTE}


# ---------------------------------------------------------------------------------------------
# Files

def _record_stage(run_dir: Path, results: dict, failed: int, key: str) -> None:
    files = [rundir.file_record(run_dir, run_dir / n) for n in ("results.json", "results.csv")]

    def put(m: dict) -> None:
        m.setdefault("stages", {})["bench"] = {
            "status": "ok", "key": key, "files": files, "seconds": results["seconds"], "settings": results["settings"],
            "machine": results["machine"], "records": len(results["records"]), "failed_records": failed,
            "not_benched_records": sum(r.get("stage") == "export" for r in results["records"]),
            "finished_utc": rundir.utc_now()}
    rundir.update_manifest(run_dir, put)

