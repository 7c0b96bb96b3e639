"""edgekit: train Keras image classifiers, export them for the edge, and measure what you shipped.

TensorFlow 2.21 ships Keras 3, which tensorflow-model-optimization cannot wrap, so edgekit
uses Keras 2 (``tf_keras``). The switch must be set before TensorFlow is first imported,
which is why it lives here, at the top of the package.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"

from edgekit import tf_logs  # noqa: E402  (after TF_USE_LEGACY_KERAS, before anything imports TensorFlow)

tf_logs.install()

from edgekit.errors import (  # noqa: E402  (after the environment is set)
    ConfigError, DataError, EdgekitError, ExportError, ModelError, RunDirError, UntrustedModelError)

__all__ = ["__version__", "EdgekitError", "DataError", "ConfigError", "ModelError", "ExportError",
           "RunDirError", "UntrustedModelError", "train", "export_run", "export_model", "bench_run",
           "render_report", "check_run", "run_all", "load_dataset", "build_model", "load_profile", "open_file"]

# name -> (module, attribute): imported on first use, so `import edgekit` stays TensorFlow-free
_LAZY = {
    "train": ("edgekit.train", "train"),
    "export_run": ("edgekit.export", "export_run"),
    "export_model": ("edgekit.export", "export_model"),
    "bench_run": ("edgekit.bench", "bench_run"),
    "render_report": ("edgekit.report", "render_report"),
    "check_run": ("edgekit.check", "check_run"),
    "run_all": ("edgekit.pipeline", "run_all"),
    "load_dataset": ("edgekit.data", "load_dataset"),
    "build_model": ("edgekit.models", "build_model"),
    "load_profile": ("edgekit.config", "load_profile"),
    "open_file": ("edgekit.runtimes", "open_file"),
}


def __getattr__(name: str):
    """Lazy public API: `import edgekit` stays fast and TensorFlow-free until a stage is used."""
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    """`dir(edgekit)` and tab completion show the lazy API too, without importing it."""
    return sorted(set(globals()) | set(__all__))
