"""The gate for files another tool made (`edgekit bench --model ... --reference MODEL`): each file
ran on its runtime, and against the reference its top-1 agreement and output difference meet the
profile's `[thresholds.external]` (a CI job validating a conversion it did not make)."""
from __future__ import annotations

from edgekit.core import rundir
from edgekit.core.config import EXTERNAL_THRESHOLDS, Profile, Thresholds
from edgekit.core.results import CheckRow, setting_label

SECTION = "external"   # the manifest section `edgekit bench --model` writes (edgekit.bench.external)


def external_rows(manifest: dict, results: dict | None, profile: Profile) -> tuple[list[CheckRow], dict]:
    """Rows for every file of the external section, and {(model, file): thresholds} for the latency
    comparison with a baseline."""
    sec = rundir.section(manifest, SECTION)
    th = profile.thresholds.get(EXTERNAL_THRESHOLDS) or Thresholds()
    model, reference = sec.get("model", "-"), sec.get("reference")
    records = (results or {}).get("records", [])
    rows: list[CheckRow] = []
    judged = {}
    for name in sec.get("files", {}):
        if name == reference:
            continue
        judged[(model, name)] = th
        mine = [r for r in records if r.get("model") == model and r.get("variant") == name]
        if not mine:
            rows.append(CheckRow(model=model, variant=name, check="bench", value="missing", limit="ok", passed=False,
                                 note="no bench record; run `edgekit bench --model ...` again"))
            continue
        # a record that failed to run is a row of the gate's bench check (edgekit.gate.check)
        judged_run = next((r for r in mine if r.get("agreement") is not None), None)
        if reference is None or judged_run is None:
            continue
        inputs = judged_run.get("inputs") or ""
        if th.min_agreement is not None:
            v = judged_run["agreement"]
            rows.append(CheckRow(model=model, variant=name, check="min_agreement", value=v, limit=th.min_agreement,
                                 passed=v >= th.min_agreement, runtime=setting_label(judged_run),
                                 note=f"against {reference} on {judged_run.get('samples')} inputs ({inputs})"[:200]))
        diff = judged_run.get("max_abs_diff")
        if th.max_abs_diff is not None and diff is not None:
            rows.append(CheckRow(model=model, variant=name, check="max_abs_diff", value=diff, limit=th.max_abs_diff,
                                 passed=diff <= th.max_abs_diff, runtime=setting_label(judged_run),
                                 note=f"against {reference}"))
    return rows, judged
