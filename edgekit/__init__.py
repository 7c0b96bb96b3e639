"""edgekit: train Keras image classifiers, export them for the edge, and measure what you shipped.

TensorFlow 2.21 ships Keras 3, which tensorflow-model-optimization cannot wrap, so edgekit
uses Keras 2 (``tf_keras``). The switch must be set before TensorFlow is first imported,
which is why it lives here, at the top of the package.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Quiet TensorFlow's C++ start-up noise (CUDA probing, oneDNN notices); EDGEKIT_TF_LOG=0 restores it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", os.environ.get("EDGEKIT_TF_LOG", "3"))

__version__ = "0.1.0"

from edgekit.errors import EdgekitError  # noqa: E402  (after the environment is set)

__all__ = ["__version__", "EdgekitError", "train", "export_run", "export_model", "bench_run",
           "render_report", "check_run", "run_all", "load_dataset", "build_model"]


def __getattr__(name: str):
    """Lazy public API: `import edgekit` stays fast and TensorFlow-free until a stage is used."""
    lazy = {
        "train": ("edgekit.train", "train"),
        "export_run": ("edgekit.export", "export_run"),
        "export_model": ("edgekit.export", "export_model"),
        "bench_run": ("edgekit.bench", "bench_run"),
        "render_report": ("edgekit.report", "render_report"),
        "check_run": ("edgekit.check", "check_run"),
        "run_all": ("edgekit.pipeline", "run_all"),
        "load_dataset": ("edgekit.data", "load_dataset"),
        "build_model": ("edgekit.models", "build_model"),
    }
    if name in lazy:
        import importlib
        module, attr = lazy[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
