"""Stage 3, `edgekit bench`: accuracy and latency of every exported file (or, `bench_files`, of any
.tflite/.onnx file) on every runtime that runs it, one worker subprocess per runtime (`results.json`)."""
from edgekit.bench.external import bench_files, summary_lines
from edgekit.bench.stage import bench_run

__all__ = ["bench_files", "bench_run", "summary_lines"]
