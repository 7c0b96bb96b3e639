"""Parity judged by output error when most samples are near ties, by top-1 agreement otherwise."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekit.core.config import Thresholds, load_profile
from edgekit.errors import ConfigError
from edgekit.verify.agreement import compare
from edgekit.verify.output_error import (DEFAULT_MIN_SNR_DB, NEAR_TIE_BAND, judge_parity_rows, margin_free,
                                         margins, parity_error_record)
from edgekit.verify.parity import check_thresholds


def _rows(th: Thresholds, ref: np.ndarray, out: np.ndarray, variant_class: str, max_share: float = 0.5):
    parity = {**compare(ref, out).to_dict(), **parity_error_record(ref, out, max_share)}
    return parity, judge_parity_rows(check_thresholds(th, parity, None, None), parity, th, variant_class)


def _near_uniform(n: int = 200, classes: int = 100, seed: int = 0) -> np.ndarray:
    """A random network's logits: nearly the same for every input, top two apart by ~1e-4."""
    rng = np.random.default_rng(seed)
    return np.tile(rng.normal(0, 0.01, classes), (n, 1)) + rng.normal(0, 0.003, (n, classes))


def _decisive(n: int = 200, classes: int = 10, seed: int = 0) -> np.ndarray:
    """A trained classifier's logits: one class ahead by several nats on every sample."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), rng.integers(0, classes, n)] += 6.0
    return logits


def test_a_margin_free_models_parity_is_judged_by_output_error():
    """Near-uniform outputs with fp16-sized noise: top-1 flips on many samples (agreement far below
    any min_agreement), yet the file computes the same function: judged by SNR, it passes."""
    ref = _near_uniform()
    out = ref + np.random.default_rng(1).normal(0, 1e-3, ref.shape) * np.abs(ref).mean()
    th = Thresholds(min_agreement=0.999)
    parity, rows = _rows(th, ref, out, "fp16")
    assert parity["judged_by"] == "output_error" and parity["margins"]["near_tie_share"] > 0.9
    assert parity["agreement"] < 0.999                    # what the old check would have failed
    agreement = next(r for r in rows if r["name"] == "min_agreement")
    assert agreement["passed"] is None and "near ties" in agreement["note"]
    snr = next(r for r in rows if r["name"] == "min_snr_db")
    assert snr["limit"] == DEFAULT_MIN_SNR_DB["fp16"] and snr["passed"] is True
    assert "in place of top-1 agreement" in snr["note"]


def test_a_margin_free_file_that_computes_something_else_fails_by_output_error():
    """Agreement 1.0 (every output keeps the winning class), but the outputs are 30% off."""
    ref = _near_uniform()
    out = ref * 1.3
    th = Thresholds(min_agreement=0.99)
    parity, rows = _rows(th, ref, out, "int8-ptq")
    assert parity["agreement"] == 1.0 and parity["judged_by"] == "output_error"
    snr = next(r for r in rows if r["name"] == "min_snr_db")
    assert snr["passed"] is False and snr["value"] == pytest.approx(-20 * np.log10(0.3))


def test_a_model_with_clear_margins_is_judged_by_top1_agreement_as_today():
    ref = _decisive()
    out = ref + np.random.default_rng(1).normal(0, 0.05, ref.shape)
    th = Thresholds(min_agreement=0.999)
    parity, rows = _rows(th, ref, out, "int8-ptq")
    assert parity["judged_by"] == "top1_agreement" and parity["margins"]["near_tie_share"] < 0.05
    assert rows == check_thresholds(th, parity, None, None)     # unchanged: no SNR row
    assert rows[0]["name"] == "min_agreement" and rows[0]["passed"] is True
    # a min_snr_db the profile sets is judged always, on top of agreement
    th2 = dataclasses.replace(th, min_snr_db=50.0)
    _, rows2 = _rows(th2, ref, out, "int8-ptq")
    assert [r["name"] for r in rows2] == ["min_agreement", "min_snr_db"]
    assert rows2[1]["passed"] is False and "class default" not in rows2[1]["note"]


def test_the_near_tie_share_threshold_on_both_sides():
    """60% near ties: margin-free under max_near_tie_share 0.5, judged by agreement under 0.7."""
    n = 100
    ref = _decisive(n)
    ties = np.arange(n) < 60
    ref[ties] = 0.0
    ref[ties, 0], ref[ties, 1] = 1e-3, 0.0                # top two within 1e-3 / 10 in probability
    m = margins(ref)
    assert m.near_tie_share == pytest.approx(0.6) and m.near_tie_band == NEAR_TIE_BAND
    assert margin_free(m, 0.5) and not margin_free(m, 0.7) and not margin_free(m, 0.6)
    assert parity_error_record(ref, ref, 0.5)["judged_by"] == "output_error"
    assert parity_error_record(ref, ref, 0.7)["judged_by"] == "top1_agreement"
    # the gate judges by its own profile's share, from the recorded margins
    out = ref.copy()
    out[:, 1] += 2e-3                                      # flips the 60 near ties, nothing else
    th = Thresholds(min_agreement=0.99)
    parity, rows = _rows(th, ref, out, "float", max_share=0.5)
    assert parity["agreement"] == pytest.approx(0.4) and [r["passed"] for r in rows] == [None, True]
    strict = judge_parity_rows(check_thresholds(th, parity, None, None), parity, th, "float", 0.7)
    assert [r["name"] for r in strict] == ["min_agreement"] and strict[0]["passed"] is False


def test_records_without_judged_by_keep_their_rows():
    """A run exported before this existed: its parity records have no output error."""
    th = Thresholds(min_agreement=0.99, min_snr_db=20.0)
    parity = {"samples": 10, "agreement": 1.0, "max_abs_diff": 0.0}
    rows = check_thresholds(th, parity, None, None)
    assert judge_parity_rows(rows, parity, th, "int8-ptq") == rows


def test_non_finite_outputs_fail_by_output_error():
    ref = _near_uniform(20)
    out = ref.copy()
    out[0, 0] = np.nan
    _, rows = _rows(Thresholds(min_agreement=0.99), ref, out, "float")
    snr = next(r for r in rows if r["name"] == "min_snr_db")
    assert snr["passed"] is False and snr["value"] is None and "not finite" in snr["note"]


def test_a_random_mobile_network_is_margin_free_and_its_fp16_file_passes_by_snr(tmp_path):
    """The issue's case, small: the stock mobile blocks with random weights and a softmax head.
    Every sample is a near tie; the fp16 file is judged by SNR and passes the class default."""
    from conftest import build_tiny_mobile, mobile_calibration
    from edgekit.convert.converters import ConversionInputs, make_tflite_fp16
    from edgekit.verify.parity import predict_file, predict_keras

    model = build_tiny_mobile(softmax=True)
    x = mobile_calibration(32)
    path = tmp_path / "fp16.tflite"
    make_tflite_fp16.convert(ConversionInputs(float_model=model, qat_model=None, representative=None), path)
    ref, out = predict_keras(model, x), predict_file(path, x)
    rec = parity_error_record(ref, out, 0.5)
    assert rec["judged_by"] == "output_error" and rec["margins"]["near_tie_share"] == 1.0
    assert rec["output_error"]["snr_db"] >= DEFAULT_MIN_SNR_DB["fp16"]


def _profile(tmp_path, text: str):
    p = tmp_path / "p.toml"
    p.write_text('variants = ["tflite-fp16"]\n' + text)
    return load_profile(str(p))


def test_profile_keys(tmp_path):
    prof = _profile(tmp_path, "max_near_tie_share = 0.7\n[thresholds.fp16]\nmin_snr_db = 35\n"
                              "max_expected_size_excess = 0.05\n")
    assert prof.max_near_tie_share == 0.7
    assert prof.thresholds_for("tflite-fp16", "fp16") == Thresholds(min_snr_db=35, max_expected_size_excess=0.05)
    assert load_profile("default").max_near_tie_share == 0.5
    with pytest.raises(ConfigError, match="max_near_tie_share"):
        _profile(tmp_path, "max_near_tie_share = 1.5\n")
    with pytest.raises(ConfigError, match="wrong type"):
        _profile(tmp_path, 'max_near_tie_share = "most"\n')
    with pytest.raises(ConfigError, match="max_expected_size_excess"):
        _profile(tmp_path, "[thresholds.fp16]\nmax_expected_size_excess = -0.1\n")
