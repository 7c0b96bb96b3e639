"""The latency loop and its statistics: known durations in, known figures out."""
from __future__ import annotations

import gc
import math
import time

import numpy as np
import pytest

from edgekit.bench.latency import benchmark, measure, summarize
from edgekit.core.timing import QUICK, TimingSettings


def test_summarize_known_durations():
    s = summarize([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], batch=4)
    assert s.runs == 10
    assert s.min_ms == 1 and s.mean_ms == 5.5
    assert s.p50_ms == pytest.approx(5.5)
    assert s.p90_ms == pytest.approx(9.1)     # rank 0.9 * 9 = 8.1: 9 + 0.1 * (10 - 9)
    assert s.p99_ms == pytest.approx(9.91)    # rank 8.91
    assert s.std_ms == pytest.approx(math.sqrt(8.25))  # population std of 1..10
    assert s.throughput_ips == pytest.approx(4 * 1000 / 5.5)
    assert s.p50_repeats_ms == (3.0, 8.0)
    assert s.timed_seconds == pytest.approx(0.055)


def test_summarize_one_run_and_to_dict():
    s = summarize([[2.5]])
    assert (s.min_ms, s.p50_ms, s.p99_ms, s.std_ms, s.runs) == (2.5, 2.5, 2.5, 0.0, 1)
    d = s.to_dict()
    assert d["p50_repeats_ms"] == [2.5] and d["throughput_ips"] == pytest.approx(400.0)
    assert set(d) == {"runs", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "std_ms", "throughput_ips",
                      "p50_repeats_ms"}


def test_summarize_percentiles_order_on_skewed_data():
    rng = np.random.default_rng(0)
    blocks = [list(rng.lognormal(0, 1, 200)) for _ in range(4)]
    s = summarize(blocks)
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
    assert s.p50_ms == pytest.approx(float(np.median(np.concatenate(blocks))))
    assert len(s.p50_repeats_ms) == 4


@pytest.mark.parametrize("blocks", [[], [[]], [[1.0], []], [[1.0, float("nan")]], [[-1.0]]])
def test_summarize_rejects_bad_input(blocks):
    with pytest.raises(ValueError):
        summarize(blocks)


def test_settings_are_checked():
    with pytest.raises(ValueError):
        TimingSettings(repeats=0)
    with pytest.raises(ValueError):
        TimingSettings(min_runs=2, repeats=3)
    with pytest.raises(ValueError):
        TimingSettings(min_seconds=2.0, max_seconds=1.0)


def test_measure_counts_warmup_and_blocks():
    calls = []
    settings = TimingSettings(warmup_runs=4, warmup_seconds=0.0, min_runs=9, min_seconds=0.0, max_seconds=1.0,
                              repeats=3)
    blocks = measure(lambda: calls.append(1), settings)
    assert len(blocks) == 3
    assert all(len(b) == 3 for b in blocks)           # ceil(9 / 3) runs per block, no time minimum
    assert len(calls) == 4 + 9                        # warm-up calls are made but not reported


def test_measure_times_the_call():
    blocks = measure(lambda: time.sleep(0.002), TimingSettings(warmup_runs=1, warmup_seconds=0.0, min_runs=6,
                                                               min_seconds=0.0, max_seconds=1.0, repeats=2))
    d = np.concatenate(blocks)
    assert d.min() >= 2.0 and np.median(d) < 20.0    # ms: the sleep, and not much more


def test_measure_runs_at_least_min_seconds():
    settings = TimingSettings(warmup_runs=0, min_runs=3, min_seconds=0.06, max_seconds=1.0, repeats=3)
    t0 = time.perf_counter()
    blocks = measure(lambda: None, settings)
    assert time.perf_counter() - t0 >= 0.06
    assert all(len(b) > 1 for b in blocks)            # a no-op runs many times in 20 ms per block


def test_measure_stops_at_max_seconds():
    settings = TimingSettings(warmup_runs=1, warmup_seconds=0.0, min_runs=1000, min_seconds=0.0, max_seconds=0.15,
                              repeats=3)
    t0 = time.perf_counter()
    blocks = measure(lambda: time.sleep(0.01), settings)
    assert time.perf_counter() - t0 < 1.0
    assert 3 <= sum(len(b) for b in blocks) < 40      # ~0.05 s per block of 10 ms calls


def test_gc_is_off_while_timing_and_restored():
    seen = []
    measure(lambda: seen.append(gc.isenabled()), TimingSettings(warmup_runs=1, min_runs=3, min_seconds=0.0,
                                                                max_seconds=1.0, repeats=3))
    assert seen and not any(seen)
    assert gc.isenabled()


def test_benchmark_returns_stats_with_one_p50_per_repeat():
    s = benchmark(lambda: sum(range(100)), batch=8, settings=QUICK)
    assert s.runs >= QUICK.min_runs and len(s.p50_repeats_ms) == QUICK.repeats
    assert s.throughput_ips == pytest.approx(8 * 1000 / s.mean_ms)
