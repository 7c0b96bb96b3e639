"""`edgekit run`: train, export, bench, report and gate, in one run directory.

Each stage skips the work its manifest records as finished with the same key and intact files,
so an interrupted run (Ctrl-C, a killed process) picks up where it stopped when run again.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.core import rundir
from edgekit.core.resources import stage_resources
from edgekit.core.library_log import stage_log
from edgekit.core.config import NETWORK_NAMES, Profile, TrainConfig, load_profile
from edgekit.core.progress import Progress
from edgekit.core.variants import Role, keras_variant

# --quick: enough of everything to show the whole pipeline in a couple of minutes.
QUICK_TRAIN_LIMIT = 6000       # training images
QUICK_EPOCHS = 1
QUICK_PARITY_SAMPLES = 1000    # test images for parity
QUICK_REPRESENTATIVE = 100     # calibration images
QUICK_QAT_EPOCHS = 0.2         # of the (limited) training set


@dataclass(frozen=True)
class Summary:
    table: str           # what `edgekit run` prints at the end
    report_html: Path
    passed: bool         # the gate's verdict
    seconds: float


def quick_profile(profile: Profile) -> Profile:
    return dataclasses.replace(
        profile, parity_samples=QUICK_PARITY_SAMPLES,
        representative_samples=min(profile.representative_samples, QUICK_REPRESENTATIVE),
        qat_epochs=min(profile.qat_epochs, QUICK_QAT_EPOCHS))


def run_all(out: str | Path = "runs/latest", dataset: str = "fashion-mnist", data_dir: str | None = None,
            profile: str | Profile = "default", models: tuple[str, ...] = NETWORK_NAMES, quick: bool = False,
            epochs: int | None = None, force: bool = False, progress: Progress | None = None,
            library_logs: bool = True) -> Summary:
    """The main job. Returns the summary; the gate's verdict is `Summary.passed`. Library output
    of each stage goes to out/logs/<stage>.log (edgekit.core.library_log); library_logs=False
    leaves it where the libraries write it (`edgekit --debug run`)."""
    from edgekit.bench import bench_run
    from edgekit.gate import check_run
    from edgekit.export import export_run
    from edgekit.report import render_report
    from edgekit.train import train

    t0 = time.monotonic()
    progress = progress or Progress()
    out = Path(out)
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if quick:
        prof = quick_profile(prof)
    cfg = TrainConfig(dataset=dataset, data_dir=data_dir, epochs=(epochs or QUICK_EPOCHS) if quick else epochs,
                      limit=QUICK_TRAIN_LIMIT if quick else None)

    stage_seconds: dict[str, float] = {}

    def logged(name: str):
        return stage_log(out, name, debug=not library_logs)

    def timed(name: str, fn) -> None:
        with logged(name), stage_resources(out, name):
            progress.start_stage(name)
            t = time.monotonic()
            fn()
            stage_seconds[name] = round(time.monotonic() - t, 2)
            progress.done()

    timed("train", lambda: train(out, cfg, models=tuple(models), force=force, progress=progress))
    timed("export", lambda: export_run(out, prof, models=tuple(models), force=force, progress=progress))

    timed("bench", lambda: bench_run(out, quick=quick, force=force, progress=progress))

    with logged("check"):
        progress.start_stage("check")
        result = check_run(out)  # writes check.json, which the report reads
        progress.done("passed" if result.passed else "FAILED")
    with logged("report"):
        html = render_report(out)
    seconds = time.monotonic() - t0

    def record_run(m: dict) -> None:  # wall time of this invocation (reused stages take ~0 s)
        rundir.stage(m, "run").update({"quick": quick, "stage_seconds": stage_seconds,
                                       "total_seconds": round(seconds, 2), "gate_passed": result.passed,
                                       "finished_utc": rundir.utc_now()})
    rundir.update_manifest(out, record_run)
    table = summary_table(out, result) + "\n\n" + result.table
    rundir.atomic_write_text(out / "summary.txt", table + "\n")
    return Summary(table=table, report_html=html, passed=result.passed, seconds=seconds)


def check_and_report(run_dir: str | Path, progress: Progress | None = None) -> Path:
    """The gate with the export's own profile (check.json), then the report that shows it; a run
    the gate cannot judge (no export profile, an unreadable record) still gets its report, which
    says why the gate was not evaluated. Returns report.html."""
    from edgekit.gate import check_run
    from edgekit.errors import EdgekitError
    from edgekit.report import render_report
    from edgekit.core.results import GATE_FILE

    run_dir = Path(run_dir)
    if (run_dir / rundir.MANIFEST).exists() and \
            rundir.section(rundir.load_manifest(run_dir), "export").get("profile"):
        try:
            check_run(run_dir)
        except EdgekitError as e:
            (run_dir / GATE_FILE).unlink(missing_ok=True)  # no verdict rather than an older one
            if progress is not None:
                progress.update(f"gate not evaluated: {e}")
    return render_report(run_dir)


def summary_table(run_dir: str | Path, gate=None) -> str:
    """One line per model and variant: accuracy, agreement, size, batch-1 single-thread p50; then
    the CPU it was measured on and, per network, whether int8 beat fp32 there (with `gate`, a
    CheckResult, the fastest file that passes it)."""
    from edgekit.report.views import format_speed_lines, machine_of, speed_findings, speed_sentence
    from edgekit.core.results import runtime_label

    run_dir = Path(run_dir)
    m = rundir.load_manifest(run_dir)
    results = rundir.read_json(run_dir / "results.json") if (run_dir / "results.json").exists() else {"records": []}
    best: dict[tuple[str, str], dict] = {}
    for r in results.get("records", []):
        if r.get("status") != "ok" or r.get("batch") != 1 or r.get("threads") != 1:
            continue
        k = (r["model"], r["variant"])
        if k not in best or r["p50_ms"] < best[k]["p50_ms"]:
            best[k] = r
    lines = [f"{'model':8} {'variant':16} {'status':8} {'accuracy':>8} {'agree':>7} {'size KiB':>9} "
             f"{'p50 ms':>8}  fastest runtime (batch 1, 1 thread)"]
    for net, trec in rundir.model_records(m, "train").items():
        erec = rundir.model_record(m, "export", net)
        # the Keras row on the same test images as the variants' parity (a subset under --quick)
        keras_acc = erec.get("float_accuracy", trec.get("metrics", {}).get("test_accuracy"))
        rows = [(keras_variant(Role.SOURCE).name, "ok", keras_acc, 1.0, trec["files"][0]["size_bytes"])]
        for vname, v in erec.get("variants", {}).items():
            p = v.get("parity") or {}
            rows.append((vname, v.get("status", "?"), p.get("accuracy"), p.get("agreement"),
                         (v.get("file") or {}).get("size_bytes")))
        for vname, status, acc, agree, size in rows:
            r = best.get((net, vname))
            fastest = runtime_label(r) if r else ""
            lines.append(f"{net:8} {vname:16} {status:8} {_fmt(acc, '.4f'):>8} {_fmt(agree, '.4f'):>7} "
                         f"{_fmt(size / 1024 if size else None, '.1f'):>9} "
                         f"{_fmt(r['p50_ms'] if r else None, '.3f'):>8}  {fastest}".rstrip())
    data = rundir.section(m, "export").get("data") or {}
    if data.get("samples"):
        lines.append(f"accuracy and agreement on {data['samples']} images ({data.get('parity', 'test set')})")
    cpu = machine_of(results)
    cpu_text = f"{cpu.get('cpu_model') or 'unknown CPU'} ({cpu.get('cpu_class') or '?'}; int8 flags: " \
               f"{', '.join(cpu.get('int8_flags') or []) or 'none recorded'})"
    if results.get("records"):
        lines.append(f"latency measured on {cpu_text}")
    passing = None
    if gate is not None:
        failing = {(r.model, r.variant) for r in gate.rows if not r.passed}
        passing = {(r["model"], r["variant"]) for r in results.get("records", [])} - failing
    ok = [r for r in results.get("records", []) if r.get("status") == "ok"]
    for finding in speed_findings(ok, (1, 1), passing):
        lines.append(speed_sentence(finding, cpu.get("cpu_class") or "?").replace("`", ""))
    lines += format_speed_lines(ok, (1, 1))
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
