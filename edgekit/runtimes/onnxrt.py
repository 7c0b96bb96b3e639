"""ONNX Runtime: CPU provider (or others when installed), thread count, optimization level."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import ModelError
from edgekit.runtimes import float_input

OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_NP = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}
# Providers that compute (Azure, for one, only forwards to a remote endpoint); TensorRT is left
# out: building its engines takes minutes per file, which no bench budget affords.
COMPUTE_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "OpenVINOExecutionProvider",
                     "DmlExecutionProvider", "CoreMLExecutionProvider", "DnnlExecutionProvider")


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def extra_option_sets(grid: list[dict]) -> list[dict]:
    """The default option sets again on each installed non-CPU provider ("other providers when
    installed"); nothing when onnxruntime is missing or has only the CPU provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    installed = [p for p in ort.get_available_providers() if p in COMPUTE_PROVIDERS]
    return [dict(options, provider=p) for p in installed for options in grid]


def session_options(threads: int = 1, graph_optimization: str = "all", optimized_model_path: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[graph_optimization])
    so.log_severity_level = 3
    if optimized_model_path:
        so.optimized_model_filepath = optimized_model_path
    return so


class ORTSession:
    def __init__(self, path: Path, threads: int = 1, graph_optimization: str = "all",
                 provider: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), session_options(threads, graph_optimization),
                                                providers=[provider])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelError(f"{path}: ONNX Runtime cannot load this file ({type(e).__name__}: {e}); "
                             f"re-export it") from e
        self.path, self.threads, self.graph_optimization, self.provider = path, threads, graph_optimization, provider
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = np.dtype(_NP.get(inp.type, np.float32))
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        self.input_quant = None  # edgekit's ONNX files take float input (QDQ inside the graph)
        self.output_quant = None

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(float_input(x, self.path), dtype=self.input_dtype)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = float_input(x, self.path)
        outs = [self.session.run([self.output_name], {self.input_name: self.prepare(x[i:i + batch_size])})[0]
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def bind(self, x_prepared: np.ndarray):
        """IOBinding: inputs bound once, so the timed call is the run alone."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x_prepared)
        binding.bind_output(self.output_name)
        run = self.session.run_with_iobinding
        return lambda: run(binding)


def open_session(path: Path, threads: int = 1, graph_optimization: str = "all",
                 provider: str = "CPUExecutionProvider") -> ORTSession:
    return ORTSession(path, threads=threads, graph_optimization=graph_optimization, provider=provider)
