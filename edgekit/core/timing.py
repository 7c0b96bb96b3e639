"""How long the bench times each setting: the settings the bench measures with and the gate reads back
(edgekit.bench.latency runs the loop)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimingSettings:
    warmup_runs: int = 5          # untimed runs before the first block
    warmup_seconds: float = 0.05  # ... and at least this long
    min_runs: int = 50            # timed runs over all blocks, at least
    min_seconds: float = 0.3      # timed seconds over all blocks, at least
    max_seconds: float = 1.0      # stop here even if min_runs is not reached (slow models)
    repeats: int = 5              # blocks; the p50 of each goes into p50_repeats_ms

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.min_runs < self.repeats or self.warmup_runs < 0:
            raise ValueError(f"timing settings need repeats >= 1, min_runs >= repeats, warmup_runs >= 0: {self}")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(f"timing settings need 0 <= min_seconds <= max_seconds: {self}")


# The full bench: ~0.35 s per (file, options, threads, batch) on a fast model, ~1.2 s at most.
FULL = TimingSettings()
# --quick: enough runs for a p50 and three repeat blocks, ~0.05 s per setting, 0.2 s at most.
QUICK = TimingSettings(warmup_runs=2, warmup_seconds=0.01, min_runs=9, min_seconds=0.03, max_seconds=0.15,
                       repeats=3)
