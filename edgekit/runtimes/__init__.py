"""Runtimes that execute exported models, one registry.

Every runtime opens a file into a `Session` with the same small surface:
- `prepare(x)` float32 inputs in the model's [0, 1] convention -> what the model's input takes
  (int8-I/O models are fed values quantized with the file's own scale and zero point); integer
  arrays (uint8 pixels 0..255) are refused (`float_input`), not silently fed as other values;
- `predict(x, batch_size)` -> float32 outputs (logits), dequantized, batched where allowed;
- `bind(x_prepared)` -> a zero-argument callable doing one inference with inputs already set,
  the only thing a latency loop should time (as benchmark_model / onnxruntime_perf_test do).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import ConfigError


@dataclass(frozen=True)
class KernelPaths:
    """A runtime's fast kernel path (its default options) and a reference path that follows the
    file's graph op by op; edgekit.verify.fidelity checks an int8 file agrees on both."""
    fast: dict            # options for the fast path: what users get by default
    fast_label: str
    reference: dict       # options for the path that follows the file's graph
    reference_label: str
    avoid: str            # what to tell a deployer when the fast path disagrees ({cpu_class} filled in)


@dataclass(frozen=True)
class Runtime:
    name: str
    suffixes: tuple[str, ...]        # file kinds it runs
    module: str                      # module with open(path, threads=..., **options) -> Session
    options: dict = field(default_factory=dict)  # option name -> values the bench sweeps by default
    description: str = ""
    dists: tuple[str, ...] = ()      # distributions whose versions decide its kernels (first: shown in reports)
    marker: str = "D"                # its marker in the report's plots
    kernels: KernelPaths | None = None  # fast vs reference kernels, if it has both
    runs_sources: bool = False       # runs the Keras models: the bench's accuracy reference

    def open(self, path: str | Path, threads: int = 1, **options):
        """A Session on this runtime; an option it does not take (a typo) is an error, not ignored."""
        open_session = importlib.import_module(self.module).open_session
        valid = self.option_names()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f"{self.name}: unknown runtime option{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
        return open_session(Path(path), threads=threads, **options)

    def option_names(self) -> tuple[str, ...]:
        """The keyword options `open` takes: its module's open_session parameters after path and threads."""
        import inspect

        params = inspect.signature(importlib.import_module(self.module).open_session).parameters.values()
        return tuple(p.name for p in params if p.name not in ("path", "threads")
                     and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def available(self) -> bool:
        return importlib.import_module(self.module).available()

    def can_run(self, path: str | Path) -> bool:
        p = Path(path)
        return p.suffix in self.suffixes or (p.is_dir() and ".savedmodel" in self.suffixes)

    def option_grid(self) -> list[dict]:
        """Every combination of option values the bench runs (one dict per combination), plus
        whatever the runtime module adds for what is installed (e.g. ONNX Runtime GPU providers)."""
        import itertools

        names = list(self.options)
        grid = [dict(zip(names, values)) for values in itertools.product(*(self.options[n] for n in names))]
        extra = getattr(importlib.import_module(self.module), "extra_option_sets", None)
        return grid + (extra(grid) if extra else [])


RUNTIMES: dict[str, Runtime] = {r.name: r for r in [   # the order the bench runs and reports them
    Runtime("keras", (".keras", ".h5"), "edgekit.runtimes.keras_tf", {},
            "TensorFlow running the source Keras model through a compiled tf.function",
            dists=("tensorflow", "tf-keras"), marker="o", runs_sources=True),
    Runtime("litert", (".tflite",), "edgekit.runtimes.litert", {"xnnpack": (True, False)},
            "LiteRT interpreter (ai_edge_litert), XNNPACK delegate on or off", dists=("ai-edge-litert",), marker="s",
            kernels=KernelPaths({"xnnpack": True}, "xnnpack=on", {"xnnpack": False}, "xnnpack=off",
                                "the XNNPACK delegate on this CPU ({cpu_class}): run with the builtin kernels")),
    Runtime("onnxruntime", (".onnx",), "edgekit.runtimes.onnxrt", {"graph_optimization": ("all",)},
            "ONNX Runtime, CPU provider (other providers when installed)", dists=("onnxruntime",), marker="^",
            kernels=KernelPaths({"graph_optimization": "all"}, "graph_optimization=all",
                                {"graph_optimization": "disable"}, "graph_optimization=disable",
                                "ONNX Runtime graph optimizations (ORT_ENABLE_ALL) on this CPU ({cpu_class}): "
                                "run with ORT_DISABLE_ALL")),
]}

# Every runtime's distributions: what the stages pass to edgekit.core.rundir.versions().
RUNTIME_DISTS: tuple[str, ...] = tuple(dict.fromkeys(d for rt in RUNTIMES.values() for d in rt.dists))


def runtime_dists(name: str) -> tuple[str, ...]:
    """The distributions whose versions decide this runtime's results; an unregistered name (a
    test's "numpy") is its own distribution."""
    rt = RUNTIMES.get(name)
    return rt.dists if rt and rt.dists else (name,)


def source_runtime() -> Runtime:
    """The runtime that runs the Keras models: the bench's accuracy reference."""
    return next(rt for rt in RUNTIMES.values() if rt.runs_sources)


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError as e:
        raise ConfigError(f"unknown runtime '{name}'; choose one of {', '.join(RUNTIMES)}") from e


def runtime_for(path: str | Path) -> Runtime:
    """The runtime that runs this file kind (each file kind has exactly one here)."""
    for rt in RUNTIMES.values():
        if rt.can_run(path):
            return rt
    raise ConfigError(f"{path}: no runtime runs '{Path(path).suffix}' files; "
                      f"supported: {', '.join(s for r in RUNTIMES.values() for s in r.suffixes)}")


def open_file(path: str | Path, threads: int = 1, **options):
    """Open any exported model on its runtime."""
    return runtime_for(path).open(path, threads=threads, **options)


def float_input(x, path: str | Path = "model"):
    """`x` as a float array, or a one-line error: every edgekit model takes floats in [0, 1].
    Integer pixels (0..255) would reach a float model as values 255x too large, and an int8-I/O
    model's input quantization would saturate them: other logits, silently."""
    import numpy as np

    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise ConfigError(f"{path}: input dtype {a.dtype} refused; pass float32 in [0, 1] "
                          f"(e.g. uint8 pixels / 255)")
    return a


def quantize(x, scale: float, zero_point: int, dtype):
    """float -> integer with the tensor's own parameters (round half away from zero, saturate)."""
    import numpy as np

    info = np.iinfo(dtype)
    v = np.asarray(x, np.float32) / np.float32(scale)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + zero_point  # np.round would round half to even
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale: float, zero_point: int):
    import numpy as np

    return (np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)
