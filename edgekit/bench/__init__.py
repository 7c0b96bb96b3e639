"""Stage 3, `edgekit bench`: accuracy and latency of every exported file on every runtime that runs it,
one worker subprocess per runtime (`results.json`, `results.csv`)."""
from edgekit.bench.stage import bench_run

__all__ = ["bench_run"]
