"""edgekit: train Keras image classifiers, export them for the edge, and measure what you shipped.

TensorFlow 2.21 ships Keras 3, which tensorflow-model-optimization cannot wrap, so edgekit
uses Keras 2 (``tf_keras``). The switch must be set before TensorFlow is first imported,
which is why it lives here, at the top of the package.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edgekit.core.version import __version__  # noqa: E402

from edgekit.core import tf_logs  # noqa: E402  (after TF_USE_LEGACY_KERAS, before anything imports TensorFlow)

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
    "check_run": ("edgekit.gate", "check_run"),
    "run_all": ("edgekit.pipeline", "run_all"),
    "load_dataset": ("edgekit.core.data", "load_dataset"),
    "build_model": ("edgekit.core.networks", "build_model"),
    "load_profile": ("edgekit.core.config", "load_profile"),
    "open_file": ("edgekit.runtimes", "open_file"),
}


def __getattr__(name: str):
    """Lazy public API: `import edgekit` stays fast and TensorFlow-free until a stage is used."""
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


# Import paths the README documented before the package layout (0.1): they still import, with a
# DeprecationWarning naming the new path, and go away in 0.3.
MOVED_MODULES = {
    "edgekit.config": "edgekit.core.config",
    "edgekit.variants": "edgekit.core.variants",
    "edgekit.models": "edgekit.core.networks",
    "edgekit.data": "edgekit.core.data",
    "edgekit.rundir": "edgekit.core.rundir",
    "edgekit.results": "edgekit.core.results",
    "edgekit.check": "edgekit.gate",
}


class _MovedModuleFinder:
    """Resolves an old module path to the module that now lives at the new one (the same object)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in MOVED_MODULES:
            return None
        import importlib.util
        return importlib.util.spec_from_loader(name, _MovedModuleFinder)

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module) -> None:
        import importlib
        import sys
        import warnings
        new = MOVED_MODULES[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; the old path goes away in edgekit 0.3",
                      DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


import sys as _sys  # noqa: E402

if not any(f is _MovedModuleFinder for f in _sys.meta_path):
    _sys.meta_path.append(_MovedModuleFinder)


def __dir__() -> list[str]:
    """`dir(edgekit)` and tab completion show the lazy API too, without importing it."""
    return sorted(set(globals()) | set(__all__))
