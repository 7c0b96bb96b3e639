"""The latency loop and its statistics, the way benchmark_model and onnxruntime_perf_test do it.

Warm-up runs first (first invokes pack weights, fault pages in, spin up thread pools), then
`repeats` blocks of timed runs. Each block runs at least `min_runs / repeats` times and at least
`min_seconds / repeats` seconds, and stops at `max_seconds / repeats` even if the run count is
not reached (benchmark_model's num_runs / min_secs / max_secs). Only the call itself is inside
the clock: one `perf_counter_ns()` before and one after, exactly what a bare Python loop around
`invoke()` measures, so the harness adds nothing to the reported times
(bench/bench_harness_overhead.py proves it). The p50 of each block is kept too, so a CI gate can
bootstrap a confidence interval of the p50 on a noisy machine (edgekit.gate.stats).
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edgekit.core.timing import FULL, TimingSettings

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call of one setting; throughput counts images (batch x calls)."""
    runs: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float              # population standard deviation (as benchmark_model reports it)
    throughput_ips: float      # batch * runs / timed seconds = batch / mean
    p50_repeats_ms: tuple[float, ...]
    timed_seconds: float       # sum of the timed calls

    def to_dict(self) -> dict:
        return {"runs": self.runs, "min_ms": self.min_ms, "mean_ms": self.mean_ms, "p50_ms": self.p50_ms,
                "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "std_ms": self.std_ms,
                "throughput_ips": self.throughput_ips, "p50_repeats_ms": list(self.p50_repeats_ms)}


def summarize(blocks_ms: Sequence[Sequence[float]], batch: int = 1) -> LatencyStats:
    """Statistics of timed calls grouped in repeat blocks (milliseconds per call).

    Percentiles interpolate linearly between closest ranks (numpy's default), over all calls
    of all blocks together; p50_repeats_ms has one p50 per block.
    """
    blocks = [np.asarray(b, dtype=np.float64) for b in blocks_ms]
    if not blocks or any(b.size == 0 for b in blocks):
        raise ValueError("summarize needs at least one non-empty block of durations")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    d = np.concatenate(blocks)
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("durations must be finite and non-negative")
    p50, p90, p99 = np.percentile(d, [50, 90, 99])
    mean = float(d.mean())
    return LatencyStats(
        runs=int(d.size), min_ms=float(d.min()), mean_ms=mean, p50_ms=float(p50), p90_ms=float(p90),
        p99_ms=float(p99), std_ms=float(d.std()),
        throughput_ips=float(batch * 1000.0 / mean) if mean > 0 else math.inf,
        p50_repeats_ms=tuple(float(np.median(b)) for b in blocks), timed_seconds=float(d.sum() / 1000.0))


def _timed_block(fn: Callable[[], object], min_runs: int, min_ns: int, max_ns: int) -> list[int]:
    """Durations (ns) of calls to fn until both minimums are met, or max_ns has passed."""
    clock = time.perf_counter_ns
    out: list[int] = []
    append = out.append
    start = clock()
    min_end, max_end = start + min_ns, start + max_ns
    n = 0
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        append(t1 - t0)
        n += 1
        if (n >= min_runs and t1 >= min_end) or t1 >= max_end:
            return out


def measure(fn: Callable[[], object], settings: TimingSettings = FULL) -> list[list[float]]:
    """Warm up, then time `fn` in `settings.repeats` blocks; durations in ms per block.

    The garbage collector is off while timing (as in timeit), so a collection triggered by
    some other allocation cannot land inside a timed call.
    """
    r = settings.repeats
    per_runs = max(1, math.ceil(settings.min_runs / r))
    per_min_ns = int(settings.min_seconds * 1e9 / r)
    per_max_ns = max(per_min_ns, int(settings.max_seconds * 1e9 / r))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if settings.warmup_runs:
            _timed_block(fn, settings.warmup_runs, int(settings.warmup_seconds * 1e9), per_max_ns)
        blocks = [_timed_block(fn, per_runs, per_min_ns, per_max_ns) for _ in range(r)]
    finally:
        if gc_was_enabled:
            gc.enable()
    return [[ns / NS_PER_MS for ns in b] for b in blocks]


def benchmark(fn: Callable[[], object], batch: int = 1, settings: TimingSettings = FULL) -> LatencyStats:
    """measure + summarize: the one call the bench makes per setting."""
    return summarize(measure(fn, settings), batch)
