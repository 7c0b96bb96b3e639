"""The run's results files, in one place: results.json (the bench's records), results.csv, and
check.json (the gate's rows). Bench writes the first two, check the third; report, check and the
pipeline read them here, so a stage never imports another stage to learn what it produced.

Also the one label format for a measured setting ("litert xnnpack=on t1 b1").
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

from edgekit.core import rundir
from edgekit.errors import RunDirError

# 1 still: later additions (machine, per-record sha256 and stage, export-stage records with null
# runtime settings, status "skipped") are optional fields a version-1 reader can ignore, and files
# written before them stay valid (check reads a missing "machine" as an unknown CPU).
RESULTS_SCHEMA_VERSION = 1
GATE_SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
CSV_FILE = "results.csv"
GATE_FILE = "check.json"
SCHEMA_FILE = Path(__file__).with_name("results_schema.json")
STAT_FIELDS = ("runs", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "std_ms", "throughput_ips",
               "p50_repeats_ms")
CSV_FIELDS = ("model", "variant", "format", "variant_class", "runtime", "runtime_options", "threads", "batch",
              "file", "size_bytes", "accuracy", "agreement", "samples", *STAT_FIELDS, "peak_rss_mb",
              "baseline_rss_mb", "status", "error", "stage", "sha256")


# ---------------------------------------------------------------- results.json / results.csv

def load_results(run_dir: Path) -> dict:
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        raise RunDirError(f"{path} does not exist; run `edgekit bench --run {run_dir}` first")
    return read_results(path)


def read_results(path: Path) -> dict:
    """A results.json of this schema version, or a one-line error saying to re-run the bench."""
    data = rundir.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise RunDirError(f"{path} is not an edgekit results.json (no 'records' list); "
                          "use the results.json that `edgekit bench` writes")
    if data.get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise RunDirError(f"{path} has schema_version {data.get('schema_version')}, expected "
                          f"{RESULTS_SCHEMA_VERSION}; re-run `edgekit bench` with this edgekit")
    return data


def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def validate_results(results: dict) -> None:
    """Raise RunDirError (one line: where and what) unless `results` matches results_schema.json."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(rundir.to_jsonable(results)))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RunDirError(f"results do not match edgekit/results_schema.json at {where}: "
                          f"{error.message.splitlines()[0][:300]}; this is an edgekit bug, please report it")


def write_results(run_dir: Path, results: dict) -> None:
    """results.json (validated first: an invalid one is never written) and results.csv."""
    validate_results(results)
    rundir.atomic_write_json(Path(run_dir) / RESULTS_FILE, results)
    rundir.atomic_write_text(Path(run_dir) / CSV_FILE, results_csv(results["records"]))


def results_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        row = dict(r)
        row["runtime_options"] = ";".join(f"{k}={v}" for k, v in sorted((r.get("runtime_options") or {}).items()))
        row["p50_repeats_ms"] = ";".join(f"{v:.6g}" for v in r.get("p50_repeats_ms") or [])
        w.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS})
    return buf.getvalue()


# ---------------------------------------------------------------- labels

def runtime_label(rec: dict) -> str:
    """'litert xnnpack=on': a runtime and its options (no threads or batch)."""
    opts = []
    for k, v in sorted((rec.get("runtime_options") or {}).items()):
        opts.append(f"{k}={'on' if v else 'off'}" if isinstance(v, bool) else f"{k}={v}")
    return " ".join([str(rec.get("runtime") or "?"), *opts])


def setting_label(rec: dict) -> str:
    """'litert xnnpack=on t1 b1': the one label of a measured setting, in every table and plot.
    A record the bench never ran (export failed) has no threads or batch, and shows none."""
    parts = [runtime_label(rec)]
    if rec.get("threads") is not None:
        parts.append(f"t{rec['threads']}")
    if rec.get("batch") is not None:
        parts.append(f"b{rec['batch']}")
    return " ".join(parts)


# ---------------------------------------------------------------- check.json

@dataclass(frozen=True, kw_only=True)
class CheckRow:
    """One judged figure: what, of which model/variant (and runtime setting), against which limit."""
    model: str
    variant: str
    check: str                       # exported, export, file, a threshold name, int8_audit, bench, latency_p50_ratio
    value: float | str | None
    limit: float | str | None
    passed: bool
    runtime: str = ""                # latency/bench rows: "litert xnnpack=on t1 b1"
    note: str = ""                   # by how much, or why
    noisy: bool = False              # a latency comparison the data could not decide (not a failure)
    measured: bool = True            # False: the figure could not be measured (no labels...), not a failure
    compared: bool = True            # False: a latency the baseline has no like measurement for (note: why)

    @property
    def status(self) -> str:
        if not self.passed:
            return "FAIL"
        if not self.compared:
            return "skipped"
        return "noisy" if self.noisy else ("n/a" if not self.measured else "ok")


@dataclass(frozen=True)
class Gate:
    """check.json: the gate's verdict on a run, as `edgekit check` last judged it."""
    passed: bool
    profile: str
    rows: tuple[CheckRow, ...]
    baseline: str | None = None
    inputs_key: str = ""             # gate_inputs_key() when it was judged: a stale verdict is not shown


def gate_inputs_key(run_dir: Path) -> str:
    """What the gate's verdict depends on: the manifest's export section and results.json."""
    run_dir = Path(run_dir)
    export = rundir.section(rundir.load_manifest(run_dir), "export")
    results = run_dir / RESULTS_FILE
    return rundir.stage_key("check", export, [rundir.sha256_file(results) if results.exists() else ""])


def write_gate(run_dir: Path, gate: Gate) -> Path:
    """check.json, atomically, keyed to the inputs it judged."""
    record = {"schema_version": GATE_SCHEMA_VERSION, "created_utc": rundir.utc_now(),
              **dataclasses.asdict(gate), "inputs_key": gate_inputs_key(run_dir)}
    return rundir.atomic_write_json(Path(run_dir) / GATE_FILE, record)


def read_gate(run_dir: Path) -> Gate | None:
    """The gate's last verdict on this run, or None when there is none or its inputs changed since
    (a re-export or re-bench makes it stale: run `edgekit check` again)."""
    path = Path(run_dir) / GATE_FILE
    if not path.exists():
        return None
    data = rundir.read_json(path)
    if not isinstance(data, dict) or data.get("schema_version") != GATE_SCHEMA_VERSION:
        raise RunDirError(f"{path} is not a check.json of this edgekit; re-run `edgekit check --run {run_dir}`")
    if data.get("inputs_key") != gate_inputs_key(run_dir):
        return None
    fields = {f.name for f in dataclasses.fields(CheckRow)}
    rows = tuple(CheckRow(**{k: v for k, v in r.items() if k in fields}) for r in data.get("rows") or [])
    return Gate(passed=bool(data.get("passed")), profile=str(data.get("profile") or ""), rows=rows,
                baseline=data.get("baseline"), inputs_key=data["inputs_key"])
