"""`edgekit check`: the CI gate. Every variant a profile asks for must meet its thresholds.

Judged from the run directory alone: the export stage's parity figures and audit in
manifest.json (with each file's hash re-checked, so the figures still describe the file), the
bench records in results.json, and, with a baseline results.json, latency regressions decided on
a bootstrap interval of the p50 ratio over repeat blocks (edgekit.gate.stats.judge_regression).

Latencies are compared only like with like: the same CPU model and int8 flags (edgekit.core.machine),
the same bench timing settings, the same runtime versions and the same file (sha256). Anything
else is a different experiment, not a regression: those rows are listed as skipped, with what
differs, while accuracy and parity are judged as always.

Writes RUN/check.json (edgekit.core.results.write_gate): the verdict, the profile and every row, which
the report reads.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core import machine, rundir
from edgekit.core.config import Profile, Thresholds, load_profile, profile_from_dict
from edgekit.errors import ConfigError, RunDirError
from edgekit.core.timing import TimingSettings
from edgekit.core.results import CheckRow, Gate, read_results, setting_label, write_gate
from edgekit.runtimes import runtime_dists
from edgekit.core.export_records import VariantRecord
from edgekit.core.variants import float_export
from edgekit.gate.external import SECTION, external_rows
from edgekit.gate.stats import judge_regression
from edgekit.verify.judge import fmt_value as _fmt
from edgekit.verify.judge import gate_row, judge_file

# results.json settings that change what a latency figure means: --quick and the timing loop.
TIMING_SETTINGS = ("quick", *(f.name for f in dataclasses.fields(TimingSettings)))


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    table: str                       # what failed and by how much, then a one-line verdict
    rows: tuple[CheckRow, ...]
    noisy: bool                      # some latency comparison was too noisy to judge
    profile: str = ""


def check_run(run_dir: str | Path, profile: str | Path | Profile | None = None,
              baseline: str | Path | None = None) -> CheckResult:
    """Judge a run directory against a profile: a name, a .toml path or a Profile (default: the
    one its export used); with `baseline`, a results.json of an earlier bench, also latency."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist; pass the --run of a finished export")
    manifest = rundir.load_manifest(run_dir)
    external = bool(rundir.section(manifest, SECTION)) and not rundir.section(manifest, "export")
    export = {} if external else rundir.require_stage(
        run_dir, "export", f"run `edgekit export --run {run_dir}` first (or `edgekit bench --model FILE --out "
                           f"{run_dir}` for files another tool made)")
    if external:   # no export recorded a profile: the one given, else "default"
        prof = profile if isinstance(profile, Profile) else load_profile(str(profile or "default"))
    else:
        prof = _resolve_profile(export, profile, run_dir)
    results = read_results(run_dir / "results.json") if (run_dir / "results.json").exists() else None
    base = None
    if baseline is not None:
        base = _read_baseline(Path(baseline))  # the user's file first: its problems are theirs to fix
        if results is None:
            raise RunDirError(f"{run_dir / 'results.json'} does not exist; run `edgekit bench --run {run_dir}` "
                              "before comparing with a baseline")

    rows: list[CheckRow] = []
    judged: dict[tuple[str, str], Thresholds] = {}   # (model, variant) with a file to judge -> thresholds
    for model, mrec in sorted(export.get("models", {}).items()):
        model_rows, model_judged = _variant_rows(run_dir, model, mrec, prof)
        rows += model_rows
        judged.update(model_judged)
    if external:
        rows, judged = external_rows(manifest, results, prof)
    if not rows:
        rows.append(CheckRow(model="-", variant="-", check="exported", value="nothing", limit="variants", passed=False,
                             note=f"the run has no exported models; run `edgekit export --run {run_dir}`"))
    if results is not None:
        rows += _bench_rows(results, judged)
    latency_note = ""
    if base is not None:
        latency_rows = _latency_rows(results, base, judged)
        rows += latency_rows
        compared = sum(r.compared for r in latency_rows)
        latency_note = f"latency vs {baseline}: {compared} of {len(latency_rows)} measurements compared"
        if latency_rows and all(r.note == NOT_COMPARED + NO_TWIN for r in latency_rows):
            latency_note += " (the baseline has no matching records)"
        elif compared < len(latency_rows):
            latency_note += f", {len(latency_rows) - compared} skipped as unlike (listed above; not failures)"

    passed = all(r.passed for r in rows)
    # check.json: the report reads the verdict from the run directory, never from this module
    write_gate(run_dir, Gate(passed=passed, profile=prof.name, rows=tuple(rows),
                             baseline=None if baseline is None else str(baseline)))
    return CheckResult(passed=passed, table=_table(rows, prof, latency_note), rows=tuple(rows),
                       noisy=any(r.noisy for r in rows), profile=prof.name)


# ---------------------------------------------------------------- inputs

def _resolve_profile(export: dict, given: str | Path | Profile | None, run_dir: Path) -> Profile:
    if isinstance(given, Profile):
        return given
    if given:
        return load_profile(str(given))
    recorded = export.get("profile")
    if not recorded:
        raise ConfigError(f"{run_dir / rundir.MANIFEST} records no export profile; pass --profile NAME")
    try:
        return profile_from_dict(recorded)
    except TypeError as e:
        raise ConfigError(f"the profile recorded in {run_dir / rundir.MANIFEST} is unreadable ({e}); "
                          "pass --profile NAME") from e


def _read_baseline(path: Path) -> dict:
    """The --baseline is the user's file, not one this run wrote: a problem with it says so and
    how to make one (never "delete it and re-run the stage")."""
    how = "pass the results.json that `edgekit bench --run RUN_DIR` writes (RUN_DIR/results.json)"
    if not path.is_file():
        raise RunDirError(f"baseline {path} does not exist; pass the results.json of an earlier "
                          "`edgekit bench` run")
    try:
        json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"--baseline {path} is not valid JSON ({e}); {how}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--baseline {path} cannot be read ({e}); {how}") from e
    try:
        return read_results(path)  # checks it is a results.json of this schema version
    except RunDirError as e:
        raise ConfigError(f"--baseline {e}") from e


# ---------------------------------------------------------------- export figures

def _variant_rows(run_dir: Path, model: str, mrec: dict,
                  prof: Profile) -> tuple[list[CheckRow], dict[tuple[str, str], Thresholds]]:
    """Re-judge every variant the profile asks for by ITS thresholds (not the verdict export
    recorded, which used the export's profile), from the recorded parity figures and file sizes,
    with the judgement export made them with (edgekit.verify.judge.judge_file)."""
    variants = mrec.get("variants", {})
    wanted = prof.variants or tuple(variants)
    rows: list[CheckRow] = []
    judged: dict[tuple[str, str], Thresholds] = {}
    for name in wanted:
        if name not in variants:
            rows.append(CheckRow(model=model, variant=name, check="exported", value="missing", limit="present",
                                 passed=False,
                                 note=f"profile '{prof.name}' asks for it; run `edgekit export --run "
                                      f"{run_dir} --profile {prof.name}`"))
            continue
        v = VariantRecord.from_json(variants[name])
        if not v.measured:  # conversion failed or skipped: nothing to judge
            error = (v.error or "no error recorded").splitlines()[0][:200]
            rows.append(CheckRow(model=model, variant=name, check="export", value=v.status, limit="ok",
                                 passed=False, note=error))
            continue
        # a file export marked failed for missing the export profile's thresholds is judged again here
        th = prof.thresholds_for(name, v.variant_class or "")
        judged[(model, name)] = th
        state, ok, why = _file_state(run_dir, v.file)
        rows.append(CheckRow(model=model, variant=name, check="file", value=state, limit="intact", passed=ok, note=why))
        ref_variant = float_export(str(v.format))
        ref_name = ref_variant.name if ref_variant else "float32"
        ref_file = VariantRecord.from_json(variants[ref_name]).file if ref_name in variants else None
        rows += [gate_row(model, name, c, ref_name) for c in judge_file(th, v, ref_file)]
    return rows, judged


def _file_state(run_dir: Path, rec: dict) -> tuple[str, bool, str]:
    """The file must still be the one the parity figures were measured on: (state, ok, why)."""
    path = rundir.resolve(run_dir, rec["path"])
    if not path.exists():
        return "missing", False, f"{rec['path']} is gone; re-run `edgekit export --force`"
    if rundir.sha256_file(path) != rec.get("sha256"):
        return "changed", False, f"{rec['path']} no longer matches its recorded sha256; re-run `edgekit export --force`"
    return "intact", True, ""


# ---------------------------------------------------------------- bench records

def _setting_key(rec: dict) -> tuple:
    return (rec.get("model"), rec.get("variant"), rec.get("runtime"),
            json.dumps(rec.get("runtime_options") or {}, sort_keys=True), rec.get("threads"), rec.get("batch"))


def _bench_rows(results: dict, judged: dict) -> list[CheckRow]:
    """A judged variant that a runtime failed to run is not deployable there."""
    rows = []
    for rec in results["records"]:
        if rec.get("stage") == "export":  # export's own failure: judged from the manifest, not here
            continue
        if (rec.get("model"), rec.get("variant")) in judged and rec.get("status") != "ok":
            error = (rec.get("error") or "no error recorded").splitlines()[0][:160]
            rows.append(CheckRow(model=rec["model"], variant=rec["variant"], check="bench", value=rec.get("status", "?"),
                                 limit="ok", passed=False,
                                 runtime=setting_label(rec), note=error))
    return rows


NOT_COMPARED = "not compared: "
NO_TWIN = "the baseline has no ok record of this setting"


def _latency_rows(results: dict, baseline: dict, judged: dict) -> list[CheckRow]:
    """One row per current measurement with a latency bound: judged against its baseline twin
    (same model, variant, runtime, options, threads, batch) when the two were measured alike,
    otherwise skipped (compared=False) with what differs in the note."""
    base = {_setting_key(r): r for r in baseline["records"] if r.get("status") == "ok"}
    unlike_runs = _unlike_runs(results, baseline)
    env, base_env = results.get("environment") or {}, baseline.get("environment") or {}
    rows = []
    for rec in results["records"]:
        th = judged.get((rec.get("model"), rec.get("variant")))
        if rec.get("status") != "ok" or th is None or th.max_latency_regression is None:
            continue
        old = base.get(_setting_key(rec))
        # a run-level difference (CPU, settings) alone, in one line: it already rules out every row
        why = NO_TWIN if old is None else unlike_runs or _unlike_records(rec, old, env, base_env)
        if why:
            rows.append(CheckRow(model=rec["model"], variant=rec["variant"], check="latency_p50_ratio", value=None,
                                 limit=1.0 + th.max_latency_regression, passed=True, runtime=setting_label(rec),
                                 note=NOT_COMPARED + why, compared=False))
            continue
        v = judge_regression(rec.get("p50_repeats_ms"), old.get("p50_repeats_ms"), th.max_latency_regression)
        # the ratio is median(current block p50s) / median(baseline block p50s): show those two
        rows.append(CheckRow(model=rec["model"], variant=rec["variant"], check="latency_p50_ratio",
                             value=None if v.ratio is None else v.ratio.estimate, limit=v.limit, passed=v.passed,
                             runtime=setting_label(rec),
                             note=f"{_fmt(_block_median(old))} -> {_fmt(_block_median(rec))} ms "
                                  f"(median of repeat-block p50s); {v.reason}",
                             noisy=v.verdict == "noisy"))
    return rows


def _block_median(rec: dict) -> float | None:
    """The median of a record's repeat-block p50s: what judge_regression's ratio divides."""
    blocks = [v for v in rec.get("p50_repeats_ms") or [] if v is not None]
    return float(np.median(np.asarray(blocks, dtype=np.float64))) if blocks else None


def _unlike_runs(results: dict, baseline: dict) -> str:
    """What makes every latency of the two runs incomparable (CPU, bench settings); '' if nothing.
    Figures read 'this run vs baseline'."""
    reasons = []
    if not baseline.get("machine"):
        reasons.append("baseline does not record its CPU")
    elif not results.get("machine"):
        reasons.append("this run's results do not record its CPU")
    else:
        same, why = machine.same_cpu(results["machine"], baseline["machine"])
        if not same:
            reasons.append(why)
    cur, old = results.get("settings") or {}, baseline.get("settings") or {}
    diffs = [f"{name} {_setting(cur, name)} vs {_setting(old, name)}" for name in TIMING_SETTINGS
             if cur.get(name) != old.get(name)]
    if diffs:
        reasons.append("bench settings differ: " + ", ".join(diffs))
    return "; ".join(reasons)


def _setting(settings: dict, name: str) -> str:
    return "not recorded" if settings.get(name) is None else str(settings[name])


def _unlike_records(rec: dict, old: dict, env: dict, base_env: dict) -> str:
    """What makes this pair of measurements incomparable (runtime version, file); '' if nothing."""
    reasons = []
    versions = [f"{d} {env.get(d) or 'not recorded'} vs {base_env.get(d) or 'not recorded'}"
                for d in runtime_dists(str(rec.get("runtime"))) if env.get(d) != base_env.get(d)]
    if versions:
        reasons.append("runtime versions differ: " + ", ".join(versions))
    new_hash, old_hash = rec.get("sha256"), old.get("sha256")
    if not old_hash:
        reasons.append("baseline does not record the file's sha256")
    elif not new_hash:
        reasons.append("this run does not record the file's sha256")
    elif new_hash != old_hash:
        reasons.append(f"file differs: sha256 {new_hash[:12]} vs {old_hash[:12]}")
    return "; ".join(reasons)


# ---------------------------------------------------------------- the printed table

def _table(rows: list[CheckRow], prof: Profile, latency_note: str) -> str:
    """The rows that are not plainly ok (failed, noisy, not measured), one line per reason latencies
    were skipped as unlike, then the verdict line."""
    shown = [r for r in rows if r.status not in ("ok", "skipped")]
    failed = [r for r in rows if not r.passed]
    noisy = [r for r in rows if r.noisy]
    unmeasured = [r for r in rows if not r.measured]
    skipped = [r for r in rows if r.status == "skipped"]
    lines = []
    if shown:
        header = ("status", "model", "variant", "runtime", "check", "value", "limit", "by how much / why")
        body = [(r.status, r.model, r.variant, r.runtime or "-", r.check, _fmt(r.value), _fmt(r.limit), r.note)
                for r in shown]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
        widths[-1] = 0  # the last column is free text
        for cells in (header, *body):
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
        lines.append("")
    if skipped:
        lines += _skipped_lines(skipped) + [""]
    parts = [f"{sum(r.status == 'ok' for r in rows)} of {len(rows)} checks passed on "
             f"{len({(r.model, r.variant) for r in rows})} variants (profile {prof.name})"]
    if latency_note:
        parts.append(latency_note)
    if noisy:
        parts.append(f"{len(noisy)} too noisy to judge (not failures; re-run the bench on a quieter machine)")
    if unmeasured:
        parts.append(f"{len(unmeasured)} not measured (not failures)")
    lines.append(f"{'PASSED' if not failed else 'FAILED'}: " + "; ".join(parts))
    return "\n".join(lines)


def _skipped_lines(skipped: list[CheckRow]) -> list[str]:
    """One line per reason: what differs, then which measurements it kept from being compared."""
    by_reason: dict[str, dict[tuple[str, str], list[str]]] = {}
    for r in skipped:
        files = by_reason.setdefault(r.note.removeprefix(NOT_COMPARED), {})
        files.setdefault((r.model, r.variant), []).append(r.runtime)
    lines = []
    for why, files in by_reason.items():
        n = sum(len(v) for v in files.values())
        listed = ", ".join(f"{m} {v} ({', '.join(settings)})" for (m, v), settings in files.items())
        lines.append(f"skipped: {why}; latency not compared for {n} measurement{'s' if n != 1 else ''}: {listed}")
    return lines
