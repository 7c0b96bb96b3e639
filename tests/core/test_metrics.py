"""Top-1 accuracy, top-1 margins and output error, checked against numbers worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.core.metrics import (SNR_IDENTICAL_DB, as_probabilities, output_error, top1_accuracy,
                                  top1_margin)
from edgekit.errors import ExportError


def test_top1_accuracy():
    assert top1_accuracy([[0.1, 0.9], [0.8, 0.2]], [1, 1]) == 0.5
    assert top1_accuracy([1, 0], [1, 0]) == 1.0
    assert top1_accuracy([[1, 0]], None) is None
    with pytest.raises(ExportError, match="one label per sample"):
        top1_accuracy([[1, 0]], [0, 1])


def test_margin_is_the_gap_of_the_top_two_probabilities():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.1, 0.35, 0.55]])
    np.testing.assert_allclose(top1_margin(probs), [0.5, 0.0, 0.2], atol=1e-12)
    # logits: softmax first. [log 7, log 2, log 1] are the logits of the first row
    np.testing.assert_allclose(top1_margin(np.log([[7.0, 2.0, 1.0]])), [0.5], atol=1e-12)


def test_a_logit_head_and_its_softmax_have_the_same_margins():
    logits = np.random.default_rng(0).normal(0, 3, (50, 10))
    probs = as_probabilities(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(top1_margin(logits), top1_margin(probs), atol=1e-12)
    np.testing.assert_allclose(top1_margin(logits + 5.0), top1_margin(logits), atol=1e-12)  # shift-free


def test_near_uniform_outputs_have_tiny_margins_however_consistent_their_winner():
    """A random network's softmax over 1,000 classes: one class wins on every sample, by ~1e-6."""
    rng = np.random.default_rng(0)
    logits = np.tile(rng.normal(0, 0.01, 1000), (20, 1)) + rng.normal(0, 1e-4, (20, 1000))
    assert np.all(np.argmax(logits, axis=1) == np.argmax(logits[0]))
    assert top1_margin(logits).max() < 1e-4
    assert top1_margin(as_probabilities(logits)).max() < 1e-4


def test_margin_without_a_top_two_is_zero():
    np.testing.assert_array_equal(top1_margin(np.ones((3, 1))), [0, 0, 0])
    np.testing.assert_array_equal(top1_margin([[np.nan, 1.0]]), [0])
    # a conv head's (n, 1, 1, c) output is per sample, flattened
    np.testing.assert_allclose(top1_margin(np.log([[[[7.0, 2.0, 1.0]]]])), [0.5])


def test_output_error_by_hand():
    ref = np.array([[3.0, 4.0], [0.0, 0.0]])          # ||ref|| = 5
    e = output_error(ref, ref * 1.1)                 # error 0.5: relative 0.1, SNR 20 dB, same direction
    assert e.relative_error == pytest.approx(0.1) and e.snr_db == pytest.approx(20.0)
    assert e.cosine == pytest.approx(1.0) and e.max_abs_diff == pytest.approx(0.4)
    assert e.elements == 4
    orth = output_error([[1.0, 0.0]], [[0.0, 1.0]])
    assert orth.cosine == pytest.approx(0.0) and orth.relative_error == pytest.approx(math.sqrt(2))
    assert orth.snr_db == pytest.approx(-10 * math.log10(2))   # error power 2, signal power 1
    anti = output_error([[1.0, 2.0]], [[-1.0, -2.0]])
    assert anti.cosine == pytest.approx(-1.0) and anti.relative_error == pytest.approx(2.0)


def test_snr_and_relative_error_are_one_quantity():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(64, 10))
    for noise in (1e-4, 1e-2, 0.3):
        e = output_error(ref, ref + rng.normal(0, noise, ref.shape))
        assert e.snr_db == pytest.approx(-20 * math.log10(e.relative_error))
        assert e.relative_error == pytest.approx(noise, rel=0.2)   # unit-variance signal


def test_identical_and_non_finite_outputs():
    ref = np.arange(6.0).reshape(2, 3)
    same = output_error(ref, ref)
    assert same.relative_error == 0.0 and same.snr_db == math.inf and same.cosine == 1.0
    assert same.to_dict()["snr_db"] == SNR_IDENTICAL_DB
    bad = output_error(ref, ref * np.array([1.0, np.nan, 1.0]))
    assert bad.snr_db == -math.inf and math.isnan(bad.cosine)
    assert bad.to_dict() == {"elements": 6, "relative_error": None, "snr_db": None, "cosine": None,
                             "max_abs_diff": None}
    with pytest.raises(ExportError, match="shapes"):
        output_error(ref, ref[:1])
