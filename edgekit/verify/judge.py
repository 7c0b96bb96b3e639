"""The one judgement of an exported file against a profile's thresholds, and how it reads as a gate row.

Export judges a file when it makes it (and records the checks in the manifest); the gate judges
it again from those recorded figures, by the profile it is given. Both call `judge_file`, so a
file gets the same rows, int8 audit included, with the same wording in both places; `gate_row`
turns a row into the gate's CheckRow (by how much it missed, or why it was not measured).
"""
from __future__ import annotations

from edgekit.core.config import Thresholds
from edgekit.core.export_records import Check, VariantRecord
from edgekit.core.results import CheckRow
from edgekit.core.variants import is_int8_class
from edgekit.verify.expected_size import expected_size_row
from edgekit.verify.output_error import judge_parity_rows
from edgekit.verify.parity import check_thresholds
from edgekit.verify.parity import describe_failures as describe_threshold_failures

INT8_AUDIT = "int8_audit"
UNITS = {"max_accuracy_drop": " points", "max_size_bytes": " bytes", "min_snr_db": " dB"}


def judge_file(thresholds: Thresholds, rec: VariantRecord, fp32_file: dict | None,
               max_near_tie_share: float | None = None) -> tuple[Check, ...]:
    """Every threshold the profile sets, then (int8 files) the int8 audit, judged on `rec`'s
    recorded figures. `fp32_file` is the file record the size ratio divides by (None: no such file).
    Where most reference outputs are near ties (`max_near_tie_share`), top-1 agreement proves
    nothing and the output error (SNR) is judged instead (edgekit.verify.output_error); the size,
    where the profile asks, against what the file's route stores (edgekit.verify.expected_size)."""
    file, fp32 = rec.file or {}, fp32_file or {}
    rows = check_thresholds(thresholds, rec.parity, file.get("size_bytes"), fp32.get("size_bytes"),
                            weight_bytes=file.get("weight_bytes"), fp32_weight_bytes=fp32.get("weight_bytes"),
                            kernel_fidelity=rec.kernel_fidelity,
                            emulated_parity=None if rec.emulated_parity is None else list(rec.emulated_parity))
    rows = judge_parity_rows(rows, rec.parity, thresholds, str(rec.variant_class), max_near_tie_share)
    if thresholds.max_expected_size_excess is not None and rec.file:
        rows.append(expected_size_row(thresholds.max_expected_size_excess, file.get("weight_bytes"),
                                      file.get("expected_size")))
    checks = [Check.from_json(r) for r in rows]
    if is_int8_class(rec.variant_class):
        checks.append(audit_check(rec.audit))
    return tuple(checks)


def audit_check(audit: dict | None) -> Check:
    """An int8 file must store int8 weights and run integer kernels (edgekit.verify.audit); a file
    with no audit recorded fails (value None: missing)."""
    if not audit:
        return Check(name=INT8_AUDIT, limit=True, value=None, passed=False, note="no audit recorded")
    passed = bool(audit.get("passed"))
    note = audit.get("reason") or ("the int8 audit passed" if passed else "the int8 audit did not pass")
    return Check(name=INT8_AUDIT, limit=True, value=passed, passed=passed, note=note)


def describe_failures(checks: tuple[Check, ...] | list[Check]) -> str:
    """'min_agreement 0.9812 (limit >= 0.995); int8_audit failed: only 0.0% of MACs ...' for the
    error field of a variant below its thresholds."""
    parts = []
    for c in checks:
        if not c.failed:
            continue
        if c.name == INT8_AUDIT:
            parts.append(f"{INT8_AUDIT} {'missing' if c.value is None else 'failed'}: {c.note}")
        else:
            parts.append(describe_threshold_failures([c.to_json()]))
    return "; ".join(parts)


def gate_row(model: str, variant: str, c: Check, ref_name: str) -> CheckRow:
    """A judged row as the gate shows it: with by how much it missed, or why it was not measured."""
    if c.name == INT8_AUDIT:
        state = "missing" if c.value is None else ("passed" if c.passed else "failed")
        return CheckRow(model=model, variant=variant, check=c.name, value=state, limit="passed",
                        passed=bool(c.passed), note="" if c.passed else (c.note or ""))
    if c.passed is None:
        return CheckRow(model=model, variant=variant, check=c.name, value=None, limit=c.limit, passed=True,
                        note=c.note or "not measured", measured=False)
    note = c.note or ""
    if not c.passed and c.value is not None:
        gap = (c.limit - c.value) if c.name.startswith("min_") else (c.value - c.limit)
        note = f"{'short' if c.name.startswith('min_') else 'over'} by {fmt_value(gap)}{UNITS.get(c.name, '')}"
        if c.name == "max_size_ratio":
            note += f" (vs {ref_name})"
        if c.details.get("avoid"):
            note += f"; avoid {c.details['avoid']}"
    return CheckRow(model=model, variant=variant, check=c.name, value=c.value, limit=c.limit,
                    passed=bool(c.passed), note=note)


def fmt_value(value) -> str:
    """A figure in a table or note: 4 significant digits for floats, '-' for nothing."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
