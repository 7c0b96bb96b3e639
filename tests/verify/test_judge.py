"""The one judgement of a file (edgekit.verify.judge): the rows export records and the rows the
gate shows come from the same function, the int8 audit included, with the same wording."""
from __future__ import annotations

import dataclasses

from edgekit.core.config import Thresholds
from edgekit.core.export_records import Status, VariantRecord
from edgekit.core.variants import Format, Reference, VariantClass
from edgekit.verify.judge import describe_failures, gate_row, judge_file

REASON = "only 0.0% of MACs run in integer kernels (float ops: MatMul)"
FILE = {"path": "export/m/tflite-int8-ptq.tflite", "size_bytes": 300, "sha256": "0" * 64, "weight_bytes": 250}
FP32 = {"path": "export/m/tflite-fp32.tflite", "size_bytes": 1000, "sha256": "1" * 64, "weight_bytes": 1000}
PARITY = {"samples": 10, "agreement": 1.0, "max_abs_diff": 0.1, "mean_abs_diff": 0.01, "accuracy": 1.0,
          "reference_accuracy": 1.0, "float_accuracy": 1.0, "accuracy_drop_points": 0.0}


def _int8(audit: dict | None) -> VariantRecord:
    return VariantRecord(status=Status.OK, error=None, key="k", format=Format.TFLITE,
                         variant_class=VariantClass.INT8_PTQ, reference=Reference.FLOAT, file=FILE, files=(FILE,),
                         parity=PARITY, audit=audit)


def test_int8_audit_failure_reads_the_same_in_the_record_and_the_gate():
    th = Thresholds(max_accuracy_drop=1.0, max_size_ratio=0.32)
    checks = judge_file(th, _int8({"passed": False, "reason": REASON}), FP32)
    assert [c.name for c in checks] == ["max_accuracy_drop", "max_size_ratio", "int8_audit"]
    audit = checks[-1]
    # the manifest's shape of the row (value and limit booleans), as export always wrote it
    assert audit.to_json() == {"name": "int8_audit", "limit": True, "value": False, "passed": False, "note": REASON}
    assert describe_failures(checks) == f"int8_audit failed: {REASON}"
    row = gate_row("m", "tflite-int8-ptq", audit, "tflite-fp32")
    assert (row.check, row.value, row.limit, row.passed, row.note) == ("int8_audit", "failed", "passed", False, REASON)


def test_int8_audit_missing_or_passed():
    th = Thresholds()
    missing, = judge_file(th, _int8(None), FP32)
    assert missing.failed and missing.value is None
    assert describe_failures([missing]) == "int8_audit missing: no audit recorded"
    row = gate_row("m", "v", missing, "tflite-fp32")
    assert (row.value, row.passed, row.note) == ("missing", False, "no audit recorded")
    passed, = judge_file(th, _int8({"passed": True, "reason": "int8 weights, integer kernels"}), FP32)
    assert passed.to_json()["note"] == "int8 weights, integer kernels"
    assert gate_row("m", "v", passed, "tflite-fp32").note == ""       # an ok row needs no why in the gate
    # a float file gets no audit row
    fp32 = dataclasses.replace(_int8(None), variant_class=VariantClass.FLOAT, file=FP32)
    assert judge_file(th, fp32, None) == ()


def test_gate_row_says_by_how_much_a_threshold_was_missed():
    th = Thresholds(max_size_ratio=0.2, min_agreement=1.0)
    rec = dataclasses.replace(_int8({"passed": True, "reason": "ok"}), parity=dict(PARITY, agreement=0.9))
    checks = {c.name: c for c in judge_file(th, rec, FP32)}
    ratio = gate_row("m", "v", checks["max_size_ratio"], "tflite-fp32")
    assert not ratio.passed and ratio.note == "over by 0.05 (vs tflite-fp32)"
    agreement = gate_row("m", "v", checks["min_agreement"], "tflite-fp32")
    assert agreement.note == "short by 0.1" and agreement.value == 0.9
    unmeasured = judge_file(th, rec, None)[1]
    assert unmeasured.passed is None
    row = gate_row("m", "v", unmeasured, "tflite-fp32")
    assert row.passed and not row.measured and row.status == "n/a" and "no fp32 file" in row.note
