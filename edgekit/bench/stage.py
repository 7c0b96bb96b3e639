"""`edgekit bench`: accuracy and latency of every exported model on every runtime that runs it.

Models are found only through manifest.json: the trained Keras model ("keras-fp32"), the QAT
Keras model ("keras-qat") and every export variant whose status is ok. Each runtime works in a
worker subprocess of its own (edgekit.bench.worker), one after the other, never two at once:
  - accuracy once per (file, runtime, options) on the whole test set, batched, and top-1
    agreement with the float Keras model on the same images;
  - latency per (file, runtime, options, threads, batch) by edgekit.bench.latency (warm-up, repeat
    blocks, p50/p90/p99...), and the worker's peak resident memory for that session.
Every variant export failed or skipped, and a QAT model it could not make, keeps one record too
(stage "export", status "failed"/"skipped", the export's error), so nothing vanishes from the
results. Every record carries its file's sha256, and results.json names the machine (CPU model,
int8-relevant ISA flags, class): latencies are only comparable between like files on like CPUs.
Writes RUN/results.json (checked against edgekit/results_schema.json first) and RUN/results.csv
(edgekit.core.results), and records a "bench" section in the manifest with a key of the files and
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
from pathlib import Path
from typing import Iterable

import numpy as np

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import machine, rundir
from edgekit.bench.job import BenchJob
from edgekit.bench.plan import (EXTERNAL, ModelFile, TestSet, file_problem, find_model_files, load_test_sets,
                                plan_jobs, references)
from edgekit.bench.assemble import assemble_records, export_failure_records, settings_record
from edgekit.errors import ConfigError, RunDirError
from edgekit.core.timing import FULL, QUICK
from edgekit.core.progress import Progress
from edgekit.core.results import RESULTS_SCHEMA_VERSION, read_results, write_results
from edgekit.runtimes import RUNTIMES, get_runtime

# Names that lived here before the split (edgekit.bench.plan, bench_records) stay importable here.
__all__ = ["BenchJob", "ModelFile", "TestSet", "assemble_records", "bench_key", "bench_run", "export_failure_records",
           "find_model_files", "load_test_sets", "plan_jobs", "run_worker"]

RUNTIME_ORDER = tuple(RUNTIMES)   # the registry's order


# ---------------------------------------------------------------------------------------------
# Public API

def bench_run(run_dir: str | Path, runtimes: Iterable[str] = RUNTIME_ORDER,
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
    if not force and rundir.is_fresh(run_dir, rundir.section(manifest, "bench"), key):
        progress.update("results.json is current for these exports and settings; reused")
        if own_stage:
            progress.done("reused")
        return read_results(run_dir / "results.json")
    tests = load_test_sets(run_dir, manifest, sorted({f.model for f in files}), quick)

    stale = {f: why for f in files if (why := file_problem(f))}
    usable = [f for f in files if f not in stale]
    refs = references(manifest)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        data_paths = {}
        for t in {t.key: t for t in tests.values()}.values():
            data_paths[t.key] = str(Path(tmp) / f"x-{len(data_paths)}.npy")
            np.save(data_paths[t.key], t.x)
        option_sets = {name: RUNTIMES[name].option_grid() for name in runtimes}
        outputs = rundir.make_dir(Path(tmp) / "outputs") if refs else None
        jobs = plan_jobs(usable, tests, data_paths, runtimes, option_sets, threads, batches, timing,
                         refs, outputs and str(outputs))
        events = _run_jobs(jobs, Path(tmp), progress)
        records = assemble_records(files, stale, tests, events, runtimes, option_sets, threads, batches, refs)
    records += export_failure_records(manifest)

    results = {
        "schema_version": RESULTS_SCHEMA_VERSION, "created_utc": rundir.utc_now(),
        "machine": machine.describe(),
        "environment": rundir.versions(RUNTIME_DISTS),
        "settings": settings_record(runtimes, threads, batches, quick, timing, tests),
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
# Settings, and when results are current

def bench_key(manifest: dict, runtimes: tuple[str, ...], threads: tuple[int, ...], batches: tuple[int, ...],
              quick: bool) -> str:
    """Bench results are current when the trained and exported files, the settings and the CPU
    are unchanged: latency belongs to the CPU it was measured on, another machine measures again.
    A user model's recorded parity inputs (its test images) count as an input file too."""
    hashes = []
    for _, rec in sorted(rundir.model_records(manifest, "train").items()):
        hashes += [f["sha256"] for f in rec.get("files", [])]
    for _, rec in sorted(rundir.model_records(manifest, "export").items()):
        for _, v in sorted(rec.get("variants", {}).items()):
            hashes += [f["sha256"] for f in v.get("files", [])]
        if (rec.get("parity_inputs") or {}).get("sha256"):
            hashes.append(rec["parity_inputs"]["sha256"])
    ext = rundir.section(manifest, EXTERNAL)  # files another tool made, their inputs and reference
    hashes += [rec["sha256"] for _, rec in sorted((ext.get("files") or {}).items())]
    if ext:
        hashes += [ext["inputs"]["sha256"], str(ext.get("reference"))]
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


# ---------------------------------------------------------------------------------------------
# Workers (planned by edgekit.bench.plan, each run by edgekit.bench.worker)

def _run_jobs(jobs: list[BenchJob], tmp: Path, progress: Progress) -> list[dict]:
    total = sum(j.timed_settings() for j in jobs) or 1
    done = 0
    events: list[dict] = []
    names = {u.id: u.variant for j in jobs for u in j.units}
    models = {u.id: u.model for j in jobs for u in j.units}
    for n, job in enumerate(jobs):
        what = "reference predictions" if job.reference_only else \
            f"{job.runtime}" + (f" ({job.threads[0]} thread{'s' if job.threads[0] > 1 else ''})"
                                if job.runtime in RUNTIMES and RUNTIMES[job.runtime].runs_sources else "")

        def on_event(ev: dict) -> None:
            nonlocal done
            if ev["type"] == "unit":
                progress.update(f"{what}: {names[ev['id']]}", model=models[ev["id"]], fraction=done / total)
            elif ev["type"] == "timing":
                done += 1
        events += run_worker(job, tmp / f"job{n}", on_event)
    return events


def run_worker(job: BenchJob, folder: Path, on_event=lambda ev: None) -> list[dict]:
    """Run one job in worker subprocesses; every event is tagged with the job's runtime and its
    worker's baseline RSS. A worker that dies mid-file fails that file ("crash" event) and a new
    worker takes the files after it; one that dies before it is ready fails them all."""
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])  # edgekit importable even if not installed
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    remaining = job.units
    events: list[dict] = []
    attempt = 0
    while remaining:
        job_file = folder / f"job-{attempt}.json"
        job_file.write_text(dataclasses.replace(job, units=remaining).to_json())
        err_path = folder / f"stderr-{attempt}.log"
        current, baseline, ready = None, None, False
        with open(err_path, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "edgekit.bench.worker", str(job_file)],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            try:
                for line in proc.stdout:
                    try:
                        ev = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # not an event (cannot happen by design: fd 1 is redirected)
                    ev["runtime"] = job.runtime
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
        why = f"{job.runtime} worker exited with code {rc}{_stderr_tail(err_path)}"
        ids = [u.id for u in remaining]
        if not ready or current is None:
            events += [{"type": "crash", "runtime": job.runtime, "id": i, "error": why} for i in ids]
            break
        events.append({"type": "crash", "runtime": job.runtime, "id": current, "error": why})
        remaining = remaining[ids.index(current) + 1:]
        attempt += 1
    return events


def _stderr_tail(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return f": {lines[-1][:300]}" if lines else ""


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

