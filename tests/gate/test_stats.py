"""Bootstrap intervals on synthetic samples with known answers, and the regression verdicts."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.gate.stats import bootstrap_ci, bootstrap_ratio_ci, judge_regression


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(123)
    mu, sigma, n, trials = 5.0, 2.0, 40, 200
    covered, widths = 0, []
    for t in range(trials):
        ci = bootstrap_ci(rng.normal(mu, sigma, n), statistic=np.mean, resamples=2000, seed=t)
        covered += ci.lower <= mu <= ci.upper
        widths.append(ci.upper - ci.lower)
    assert 0.88 <= covered / trials <= 0.99
    # the normal-theory width 2 * 1.96 * sigma / sqrt(n) = 1.24
    assert np.mean(widths) == pytest.approx(2 * 1.96 * sigma / np.sqrt(n), rel=0.1)


def test_median_interval_narrows_with_more_data():
    rng = np.random.default_rng(7)
    small = bootstrap_ci(rng.lognormal(0.0, 0.3, 10))
    large = bootstrap_ci(rng.lognormal(0.0, 0.3, 1000))
    # the median of lognormal(0, s) is exactly 1; its standard error at n=1000 is ~0.012
    assert 0.95 < large.lower <= large.estimate <= large.upper < 1.05
    assert (large.upper - large.lower) < (small.upper - small.lower) / 3


def test_ratio_of_medians_recovers_a_known_slowdown():
    rng = np.random.default_rng(0)
    base = rng.lognormal(np.log(2.0), 0.05, 20)     # median 2.0 ms
    cur = rng.lognormal(np.log(2.6), 0.05, 20)      # median 2.6 ms: a 1.3x slowdown
    ci = bootstrap_ratio_ci(cur, base)
    assert ci.lower < 1.3 < ci.upper
    assert 1.2 < ci.lower and ci.upper < 1.4


def test_seeded_bootstrap_is_reproducible_and_seed_dependent():
    x = np.random.default_rng(1).normal(size=15)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)


def test_bad_samples_are_rejected():
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([1.0, 2.0], [0.0, 1.0])


@pytest.mark.parametrize("slowdown, sigma, expected", [
    (1.60, 0.03, "fail"),    # clearly slower than the 1.15 limit
    (1.00, 0.03, "pass"),    # the same speed
    (1.15, 0.03, "noisy"),   # right on the limit: the interval straddles it
    (1.00, 0.60, "noisy"),   # so spread out that the interval is very wide
])
def test_regression_verdicts_on_known_distributions(slowdown, sigma, expected):
    rng = np.random.default_rng(42)
    base = rng.lognormal(np.log(1.0), sigma, 10)
    cur = rng.lognormal(np.log(slowdown), sigma, 10)
    v = judge_regression(cur, base, max_regression=0.15)
    assert v.verdict == expected, v.reason
    assert v.passed == (expected != "fail")
    assert v.limit == pytest.approx(1.15)


def test_too_few_repeats_is_noisy_not_a_failure():
    v = judge_regression([9.0, 9.1], [1.0, 1.0, 1.1], max_regression=0.1)
    assert v.verdict == "noisy" and v.passed and v.ratio is None
    assert "too few repeats" in v.reason
