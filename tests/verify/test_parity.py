"""Parity numbers against a case worked out by hand, the threshold checks, and a real file."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.core.config import Thresholds
from edgekit.errors import ExportError
from edgekit.verify.parity import (ParityResult, accuracy_drop_points, check_thresholds, compare, compare_file,
                            describe_failures, failed_checks)

# Four samples, three classes.
REF = np.array([[2.0, 1.0, 0.0],    # top-1 0
                [0.0, 3.0, 1.0],    # top-1 1
                [1.0, 0.0, 0.5],    # top-1 0
                [0.0, 0.0, 1.0]])   # top-1 2
OUT = np.array([[1.5, 1.0, 0.0],    # top-1 0  (agrees)  |diff| 0.5 0 0
                [0.0, 2.0, 2.5],    # top-1 2  (differs) |diff| 0 1 1.5
                [0.25, 1.0, 0.5],   # top-1 1  (differs) |diff| 0.75 1 0
                [0.0, 0.0, 1.0]])   # top-1 2  (agrees)  |diff| 0 0 0
LABELS = np.array([0, 2, 1, 1])     # OUT right on 3 of 4, REF right on 1 of 4


def test_compare_matches_hand_computed_numbers():
    r = compare(REF, OUT, LABELS)
    assert r == ParityResult(samples=4, agreement=0.5, max_abs_diff=1.5, mean_abs_diff=pytest.approx(4.75 / 12),
                             accuracy=0.75, reference_accuracy=0.25)
    assert r.mean_abs_diff == pytest.approx(0.3958333333)


def test_compare_without_labels_and_identical_outputs():
    r = compare(REF, REF.astype(np.float32))
    assert (r.agreement, r.max_abs_diff, r.mean_abs_diff) == (1.0, 0.0, 0.0)
    assert r.accuracy is None and r.reference_accuracy is None
    # a tie resolves the same way on both sides: identical tied outputs agree
    tie = np.array([[1.0, 1.0, 0.0]])
    assert compare(tie, tie).agreement == 1.0


def test_compare_rejects_mismatched_shapes_and_labels():
    with pytest.raises(ExportError, match="shape"):
        compare(REF, OUT[:, :2])
    with pytest.raises(ExportError, match="labels"):
        compare(REF, OUT, LABELS[:3])
    with pytest.raises(ExportError, match="empty"):
        compare(np.zeros((0, 3)), np.zeros((0, 3)))


def test_non_finite_outputs_fail_max_abs_diff():
    bad = OUT.copy()
    bad[1, 2] = np.nan
    r = compare(REF, bad, LABELS)
    assert math.isinf(r.max_abs_diff)
    d = r.to_dict()
    assert d["max_abs_diff"] is None and d["mean_abs_diff"] is None
    checks = check_thresholds(Thresholds(max_abs_diff=1.0), d, 10, 10)
    assert checks[0]["passed"] is False


def test_check_thresholds_each_limit():
    parity = compare(REF, OUT, LABELS).to_dict()
    parity["accuracy_drop_points"] = accuracy_drop_points(0.80, parity["accuracy"])  # 80% -> 75%: 5 points
    assert parity["accuracy_drop_points"] == pytest.approx(5.0)
    th = Thresholds(min_agreement=0.6, max_abs_diff=2.0, max_accuracy_drop=5.0, max_size_ratio=0.32,
                    max_size_bytes=25, max_latency_regression=0.1)
    rows = {c["name"]: c for c in check_thresholds(th, parity, size_bytes=30, fp32_size_bytes=100)}
    assert set(rows) == {"min_agreement", "max_abs_diff", "max_accuracy_drop", "max_size_ratio", "max_size_bytes"}
    assert rows["min_agreement"] == {"name": "min_agreement", "limit": 0.6, "value": 0.5, "passed": False}
    assert rows["max_abs_diff"]["passed"] is True and rows["max_abs_diff"]["value"] == 1.5
    assert rows["max_accuracy_drop"]["passed"] is True           # exactly at the limit passes
    assert rows["max_size_ratio"]["value"] == 0.3 and rows["max_size_ratio"]["passed"] is True
    assert rows["max_size_bytes"]["passed"] is False
    assert [c["name"] for c in failed_checks(list(rows.values()))] == ["min_agreement", "max_size_bytes"]
    text = describe_failures(list(rows.values()))
    assert "min_agreement 0.5 (limit >= 0.6)" in text and "max_size_bytes 30 (limit <= 25)" in text


def test_size_ratio_is_judged_on_weight_bytes_and_flash_budget_on_file_bytes():
    """A 15 KiB-style case: 3,000 of 12,000 file bytes are framing; int8 weights are a quarter of
    float. File ratio (1,500 + 3,000) / (6,000 + 3,000) = 0.5 fails 0.32; weight ratio 1,500 / 6,000
    = 0.25 passes, and the row says so and keeps the file ratio beside it."""
    th = Thresholds(max_size_ratio=0.32, max_size_bytes=4000)
    rows = {c["name"]: c for c in check_thresholds(th, {}, 4500, 9000, weight_bytes=1500, fp32_weight_bytes=6000)}
    ratio = rows["max_size_ratio"]
    assert ratio["value"] == 0.25 and ratio["passed"] is True and ratio["file_size_ratio"] == 0.5
    assert "weight bytes 1500 / 6000" in ratio["note"] and "file bytes ratio 0.5" in ratio["note"]
    budget = rows["max_size_bytes"]
    assert budget["value"] == 4500 and budget["passed"] is False and "file bytes" in budget["note"]
    # without weight bytes for both files (an older record): file bytes, and the note says so
    rows = {c["name"]: c for c in check_thresholds(th, {}, 4500, 9000, weight_bytes=1500)}
    assert rows["max_size_ratio"]["value"] == 0.5 and rows["max_size_ratio"]["passed"] is False
    assert "file bytes" in rows["max_size_ratio"]["note"]


def test_unmeasurable_thresholds_are_reported_not_passed():
    parity = compare(REF, OUT).to_dict()          # no labels
    parity["accuracy_drop_points"] = None
    rows = {c["name"]: c for c in check_thresholds(
        Thresholds(max_accuracy_drop=1.0, max_size_ratio=0.5), parity, size_bytes=30, fp32_size_bytes=None)}
    assert rows["max_accuracy_drop"]["passed"] is None and "no labels" in rows["max_accuracy_drop"]["note"]
    assert rows["max_size_ratio"]["passed"] is None and "fp32" in rows["max_size_ratio"]["note"]
    assert failed_checks(list(rows.values())) == []
    assert check_thresholds(Thresholds(), parity, 30, 100) == []


def test_compare_file_runs_a_real_tflite_file(tmp_path):
    """A float TFLite file of a tiny Keras model, made here without edgekit.convert.converters."""
    import tensorflow as tf
    import tf_keras

    rng = np.random.default_rng(0)
    model = tf_keras.Sequential([tf_keras.layers.InputLayer(input_shape=(6, 6, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(8, activation="relu"), tf_keras.layers.Dense(4)])
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    x = rng.random((50, 6, 6, 1), dtype=np.float32)
    y = rng.integers(0, 4, 50)

    r = compare_file(path, model, x, y)
    assert r.samples == 50 and r.agreement == 1.0 and r.max_abs_diff < 1e-5
    assert r.accuracy == r.reference_accuracy

    # against precomputed reference outputs shifted by a known amount, the diff is that amount
    ref = model.predict(x, verbose=0)
    shifted = ref.copy()
    shifted[7, 2] += 0.25
    r2 = compare_file(path, shifted, x)
    assert r2.max_abs_diff == pytest.approx(0.25, abs=1e-5)
    assert r2.mean_abs_diff == pytest.approx(0.25 / (50 * 4), abs=1e-5)
