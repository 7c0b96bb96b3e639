"""The export records (edgekit.core.export_records): from_json then to_json gives back the very dict
the manifest holds, for a run made by the flat layout (tests/fixtures/run_v0_1) and for a fresh
export, so old run directories load and new ones are written in the same shape."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.core import rundir
from edgekit.core.export_records import Check, QatRecord, Status, VariantRecord

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run_v0_1"


def _same_json(record, recorded: dict) -> None:
    """Equal as dicts, in the same key order, and the same text once dumped (enums as plain strings)."""
    out = record.to_json()
    assert out == recorded
    assert list(out) == list(recorded)
    assert json.dumps(rundir.to_jsonable(out)) == json.dumps(recorded)


def test_fixture_run_records_round_trip():
    variants = rundir.model_record(rundir.load_manifest(FIXTURE_RUN), "export", "cnn")["variants"]
    assert set(variants) == {"tflite-fp32", "onnx-fp32", "tflite-int8-ptq"}
    for name, recorded in variants.items():
        rec = VariantRecord.from_json(recorded)
        assert rec.status is Status.OK and rec.measured, name
        _same_json(rec, recorded)
        for c, raw in zip(rec.checks, recorded["checks"]):
            _same_json(c, raw)


def test_fresh_export_records_round_trip(exported_run):
    cnn = rundir.model_record(rundir.load_manifest(exported_run), "export", "cnn")
    qat = QatRecord.from_json(cnn["qat"])
    assert qat.ok and qat.problem is None and qat.fit is not None
    _same_json(qat, cnn["qat"])
    for name, recorded in cnn["variants"].items():
        _same_json(VariantRecord.from_json(recorded), recorded)


@pytest.mark.parametrize("recorded", [
    # a variant that could not be made: no file, so no emulated_parity key; an ONNX int8 one keeps its encoding
    {"status": "failed", "error": "ConverterError: op not supported", "key": "k1", "format": "onnx",
     "variant_class": "int8-ptq", "reference": "float", "description": "d", "file": None, "files": [],
     "inputs": [], "outputs": [], "parity": None, "kernel_fidelity": None, "audit": None, "checks": [],
     "seconds": 1.25, "onnx_int8_encoding": "u8u8"},
    # skipped for want of data: no encoding either
    {"status": "skipped", "error": "needs calibration data", "key": "k2", "format": "tflite",
     "variant_class": "int8-qat", "reference": "qat", "description": "d", "file": None, "files": [],
     "inputs": [], "outputs": [], "parity": None, "kernel_fidelity": None, "audit": None, "checks": [],
     "seconds": 0.0},
])
def test_records_without_a_file_round_trip(recorded):
    rec = VariantRecord.from_json(recorded)
    assert not rec.measured
    _same_json(rec, recorded)


def test_qat_records_that_did_not_run_round_trip():
    skipped = {"status": "skipped", "error": "QAT needs labels", "file": None, "files": [], "key": "q",
               "accuracy": None, "epochs": 1.0, "learning_rate": 1e-4, "seconds": 0.0}
    rec = QatRecord.from_json(skipped)
    assert not rec.ok and rec.problem == "needs the QAT model: QAT needs labels"
    _same_json(rec, skipped)
    _same_json(QatRecord.from_json(dict(skipped, status="failed")), dict(skipped, status="failed"))


def test_check_keeps_extra_keys_and_omits_an_absent_note():
    ratio = {"name": "max_size_ratio", "limit": 0.32, "value": 0.25, "passed": True, "note": "weight bytes",
             "file_size_ratio": 0.29}
    kernel = {"name": "min_kernel_agreement", "limit": 0.999, "value": 0.9, "passed": False, "note": "n",
              "avoid": None}
    plain = {"name": "min_agreement", "limit": 1.0, "value": 1.0, "passed": True}
    for raw in (ratio, kernel, plain):
        _same_json(Check.from_json(raw), raw)
    assert Check.from_json(ratio).details == {"file_size_ratio": 0.29} and Check.from_json(kernel).failed
