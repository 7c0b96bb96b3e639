"""Bootstrap confidence intervals, and the latency-regression verdict the CI gate builds on them.

Shared CI machines are noisy: one p50 against another says little. Each bench record keeps the
p50 of every repeat block (`p50_repeats_ms`), so the gate can ask what range of slow-down ratios
the repeats are consistent with, and answer "too noisy to judge" when that range cannot decide.
Everything is seeded: the same numbers give the same interval and the same verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

RESAMPLES = 4000          # bootstrap resamples; the interval ends move < 1% between seeds at this size
CONFIDENCE = 0.95         # two-sided, so each decision (fail / pass) errs at most 2.5% of the time
MIN_REPEATS = 3           # fewer repeat blocks than this on either side: nothing to bootstrap
MAX_SPAN = 2.0            # upper/lower of the interval above this: the repeats disagree 2x, too noisy

# statistic(samples, axis=1) -> one value per resample row (np.median, np.mean, ...)
Statistic = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval."""
    estimate: float
    lower: float
    upper: float
    confidence: float

    @property
    def span(self) -> float:
        """upper / lower: how many times wider the top of the interval is than its bottom."""
        return self.upper / self.lower if self.lower > 0 else float("inf")


def _clean(values: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: need a non-empty list of finite numbers, got {list(values)!r}")
    return a


def _resample(rng: np.random.Generator, a: np.ndarray, resamples: int) -> np.ndarray:
    return a[rng.integers(0, a.size, size=(resamples, a.size))]


def bootstrap_ci(sample: Sequence[float], statistic: Statistic = np.median, confidence: float = CONFIDENCE,
                 resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of `statistic` of one sample."""
    a = _clean(sample, "sample")
    rng = np.random.default_rng(seed)
    stats = statistic(_resample(rng, a, resamples), axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(float(statistic(a)), float(lo), float(hi), confidence)


def bootstrap_ratio_ci(numerator: Sequence[float], denominator: Sequence[float],
                       statistic: Statistic = np.median, confidence: float = CONFIDENCE,
                       resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of statistic(numerator) / statistic(denominator).

    The two samples are resampled independently (two separate runs), each with its own size.
    """
    num = _clean(numerator, "numerator")
    den = _clean(denominator, "denominator")
    if np.any(den <= 0) or np.any(num < 0):
        raise ValueError("ratio of latencies: values must be positive")
    rng = np.random.default_rng(seed)
    ratios = statistic(_resample(rng, num, resamples), axis=1) / statistic(_resample(rng, den, resamples), axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return Interval(float(statistic(num) / statistic(den)), float(lo), float(hi), confidence)


@dataclass(frozen=True)
class RegressionVerdict:
    """"pass", "fail" or "noisy" for one current-vs-baseline latency comparison, and why."""
    verdict: str
    limit: float                 # 1 + max_regression: the largest acceptable p50 ratio
    ratio: Interval | None       # current p50 / baseline p50, None when there was nothing to bootstrap
    reason: str

    @property
    def passed(self) -> bool:
        """Only a clear regression fails; "noisy" is reported but does not fail the gate."""
        return self.verdict != "fail"


def judge_regression(current_ms: Sequence[float], baseline_ms: Sequence[float], max_regression: float,
                     confidence: float = CONFIDENCE, min_repeats: int = MIN_REPEATS,
                     max_span: float = MAX_SPAN, seed: int = 0) -> RegressionVerdict:
    """Judge the p50 ratio current/baseline against 1 + max_regression on repeat-block p50s.

    fail:  the whole interval lies above the limit (clearly slower);
    pass:  the whole interval lies below it;
    noisy: it straddles the limit, is very wide (upper/lower > max_span), or there are too few
           repeats: the data cannot tell, and the gate says so instead of guessing.
    """
    limit = 1.0 + max_regression
    cur = [v for v in (() if current_ms is None else current_ms) if v is not None]
    base = [v for v in (() if baseline_ms is None else baseline_ms) if v is not None]
    if len(cur) < min_repeats or len(base) < min_repeats:
        return RegressionVerdict("noisy", limit, None,
                                 f"too few repeats to judge ({len(cur)} current, {len(base)} baseline; "
                                 f"need {min_repeats})")
    try:
        ci = bootstrap_ratio_ci(cur, base, confidence=confidence, seed=seed)
    except ValueError as e:
        return RegressionVerdict("noisy", limit, None, f"unusable repeats ({e})")
    pct = f"{confidence:.0%} CI"
    desc = f"p50 x{ci.estimate:.3f} ({pct} {ci.lower:.3f}-{ci.upper:.3f})"
    if ci.span > max_span:
        return RegressionVerdict("noisy", limit, ci, f"{desc}: too noisy to judge (interval spans "
                                                     f"{ci.span:.1f}x)")
    if ci.lower > limit:
        return RegressionVerdict("fail", limit, ci, f"{desc}: slower than the x{limit:.2f} limit")
    if ci.upper < limit:
        return RegressionVerdict("pass", limit, ci, f"{desc}: within the x{limit:.2f} limit")
    return RegressionVerdict("noisy", limit, ci, f"{desc}: too noisy to judge (interval straddles "
                                                 f"the x{limit:.2f} limit)")
