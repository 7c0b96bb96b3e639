"""Scan a model file for code before anything deserializes it.

A Keras model is a program: a `Lambda` layer stores Python bytecode that runs on load, a class
from outside tf_keras makes the `.keras` loader import that class's module, and a SavedModel
graph can hold ops that write files or call back into Python. Nothing here loads the model:
HDF5 attributes, the `.keras` zip's config.json and saved_model.pb are read as JSON and protobuf.

Two scanners, each for what it does best:
- `modelscan` (Protect AI): its deny-list (Lambda layers in HDF5, `.keras` and keras_metadata.pb;
  ReadFile/WriteFile and ops TensorFlow does not know in saved_model.pb).
- edgekit's own walk: modelscan looks at top-level layers only (a Lambda inside a nested
  Sequential passes it) and picks a format by file extension (an HDF5 file named `model.bin`
  passes it, yet tf_keras loads it as HDF5 and runs its Lambda; both measured with modelscan 0.8.8).
  So edgekit detects the format by content, walks every object of the model config (in a
  SavedModel: every JSON of keras_metadata.pb and of saved_model.pb's object graph), allows
  only tf_keras and tfmot classes, only pure math/array TensorFlow functions in op layers
  (TFOpLambda names any `tf.*` symbol, tf.print included, and the loader resolves it), only the
  Python built-ins tf_keras resolves as its own activations/losses/initializers, and lists
  graph ops that call Python or touch files (edgekit.security.savedmodel).
  A Keras 3 file (its metadata says keras_version 3.x; Keras 3 loads it, edgekit.runtimes.keras_tf)
  is walked against Keras 3's own names instead: a class must resolve the way its loader resolves
  it (a public `keras.*` symbol, or a Keras-saveable class of an already imported `keras.src`
  module), never one of its non-modeling APIs; `__keras_tensor__` (shape, dtype, layer history)
  is data.
"""
from __future__ import annotations

import functools
import json
import logging
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from edgekit.security import savedmodel as scan_savedmodel
from edgekit.errors import ModelError, UntrustedModelError
from edgekit.security.findings import PYTHON_CALLBACK_OPS, Finding

# Module prefixes whose classes tf_keras deserializes from its own code (the `.keras` loader
# imports any other module a config names: that import is the custom-object risk).
TRUSTED_MODULES = ("keras", "tf_keras", "tensorflow_model_optimization")
# `.keras` value markers that carry data only; "__lambda__" (Python bytecode) is not among them.
VALUE_MARKERS = frozenset({"__tensor__", "__numpy__", "__tuple__", "__bytes__", "__typespec__",
                           "__ellipsis__", "__slice__", "TensorShape", "TypeSpec", "CompositeTensor"})
# TFOpLambda / SlicingOpLambda store a `tf.*` symbol name that the loader resolves and calls on
# every predict; any public symbol resolves (tf.print to a file, tf.io.*, tf.config.*), so only
# pure math/array functions pass. compat.v1./compat.v2. names are checked without that prefix.
PURE_TF_PREFIXES = ("math.", "nn.", "image.", "linalg.", "signal.", "bitwise.", "__operators__.",
                    "keras.activations.", "reduce_")
PURE_TF_NAMES = frozenset(
    "reshape concat stack unstack transpose cast clip_by_value clip_by_norm expand_dims squeeze gather "
    "gather_nd split pad tile identity add multiply subtract divide truediv realdiv floordiv matmul "
    "maximum minimum abs sqrt exp square pow negative sign round floor ceil sigmoid tanh einsum "
    "tensordot broadcast_to slice strided_slice boolean_mask reverse roll zeros_like ones_like zeros "
    "ones fill shape size rank where one_hot argmax argmin sort argsort cumsum range norm equal "
    "not_equal greater greater_equal less less_equal logical_and logical_or logical_not repeat "
    "stop_gradient ensure_shape space_to_depth depth_to_space space_to_batch_nd batch_to_space "
    "convert_to_tensor".split())
# ClassMethod / InstanceProperty / InstanceMethod: what tf_keras itself creates them for.
RAGGED_CLASS_METHODS = frozenset(
    "from_value_rowids from_row_splits from_row_lengths from_row_starts from_row_limits "
    "from_uniform_row_length from_nested_value_rowids from_nested_row_splits from_nested_row_lengths "
    "from_tensor from_sparse".split())
TENSOR_ATTRIBUTES = frozenset(
    "values flat_values row_splits nested_row_splits value_rowids nested_value_rowids nrows row_starts "
    "row_limits row_lengths nested_row_lengths bounding_shape with_values with_flat_values "
    "with_row_splits_dtype merge_dims to_tensor to_sparse indices dense_shape".split())
@dataclass(frozen=True)
class ScanReport:
    """What the scan found in one model file; empty `findings` means nothing to refuse."""
    path: str
    format: str                      # keras | h5 | savedmodel
    findings: tuple[Finding, ...]
    seconds: float
    scanners: dict                   # scanner name -> version

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "clean": self.clean,
                "findings": [f.to_dict() for f in self.findings], "seconds": self.seconds,
                "scanners": self.scanners}


def scan_model(path: str | Path) -> ScanReport:
    """Scan a .keras / HDF5 file or a SavedModel folder without deserializing any of it."""
    import modelscan.modelscan  # noqa: F401  (imports TensorFlow: paid once, not timed as the scan)

    path = Path(path)
    t0 = time.perf_counter()
    fmt = model_format(path)
    by_modelscan = list(_modelscan(path))
    own_ops: list[Finding] = []
    if fmt == "savedmodel":
        own_ops = scan_savedmodel.graph_op_findings(path)
        own = [f for config, where in scan_savedmodel.metadata_configs(path)
               for f in _config_findings(config, where)]
    else:
        own = _config_findings(_keras_config(path, fmt), str(path), keras3=keras_major_version(path) >= 3)
    # the walk names each Lambda modelscan counts (and the nested ones it misses): keep those
    if any(f.kind == "lambda-layer" for f in own) and any(f.kind == "lambda-layer" for f in by_modelscan):
        by_modelscan = [f for f in by_modelscan if f.kind != "lambda-layer"]
        own = [replace(f, found_by="edgekit+modelscan") if f.kind == "lambda-layer" else f for f in own]
    found = by_modelscan + own_ops + own
    unique = tuple(dict.fromkeys(found))
    return ScanReport(path=str(path), format=fmt, findings=unique,
                      seconds=round(time.perf_counter() - t0, 4), scanners=_scanner_versions())


def check_model(path: str | Path, trust_model: bool = False) -> ScanReport:
    """Scan, and refuse a model with findings unless the user said they trust it."""
    report = scan_model(path)
    if report.findings and not trust_model:
        raise UntrustedModelError(refusal(report))
    return report


def refusal(report: ScanReport, shown: int = 3) -> str:
    """One line: the file, what was found and its risk, and how to accept it knowingly."""
    items = [f"{_label(f)} ({f.risk})" for f in report.findings[:shown]]
    more = len(report.findings) - shown
    return (f"{report.path}: refused to load: it holds {'; '.join(items)}"
            + (f"; and {more} more" if more > 0 else "")
            + ". Only if you trust its author, pass --trust-model (trust_model=True in export_model): "
              "the export then runs in a subprocess without your secrets and the findings are "
              "recorded in the manifest")


def model_format(path: Path) -> str:
    """The format tf_keras would load the path as, by content (its own order of checks)."""
    import h5py

    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise ModelError(f"{path}: cannot load as a Keras model: a folder without saved_model.pb; give a "
                         f"SavedModel folder, a .keras file or an .h5 file")
    if path.suffix == ".keras" and zipfile.is_zipfile(path):
        return "keras"
    if h5py.is_hdf5(path):
        return "h5"
    raise ModelError(f"{path}: cannot load as a Keras model: neither a .keras archive (zip), an HDF5 file "
                     f"nor a SavedModel folder; save it with model.save('model.keras') from tf_keras")


def keras_major_version(path: str | Path) -> int:
    """The major Keras version a .keras / HDF5 file was saved by (its metadata.json or the HDF5
    `keras_version` attribute); 2 when it does not say (tf_keras files and SavedModels)."""
    import h5py

    path = Path(path)
    version = None
    try:
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if "metadata.json" in z.namelist():
                    version = json.loads(z.read("metadata.json")).get("keras_version")
        elif path.is_file() and h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return 2  # unreadable: the loader (and the scan's own read of the config) will say why
    version = version.decode() if isinstance(version, bytes) else version
    major = str(version or "2").split(".")[0]
    return int(major) if major.isdigit() else 2


def _label(f: Finding) -> str:
    if f.kind == "lambda-layer":
        return f"Lambda layer {f.name}" if f.name != "Lambda" else f"a Lambda layer in {Path(f.where).name}"
    if f.kind == "custom-object":
        return f"custom class {f.name}"
    if f.kind in ("tf-function", "builtin-function"):
        return f.name
    if f.kind == "scan-error":
        return f"scan error '{f.name}'"
    return f"{f.name} op in {Path(f.where).name}"


# ---------------------------------------------------------------------------------------------
# modelscan

def _modelscan(path: Path) -> Iterator[Finding]:
    from modelscan.modelscan import ModelScan

    # modelscan reports through logging.error; without a handler Python would print them
    logging.getLogger("modelscan").addHandler(logging.NullHandler())
    report = ModelScan().scan(path)
    for issue in report.get("issues", []):
        op = issue.get("operator", "?")
        kind = ("lambda-layer" if op == "Lambda" else "file-op" if op in ("ReadFile", "WriteFile")
                else "python-callback-op" if op in PYTHON_CALLBACK_OPS else "unknown-op")
        yield Finding(kind, op, str(path / issue["source"]) if path.is_dir() else str(path), "modelscan")
    for error in report.get("errors", []):
        yield Finding("scan-error", str(error.get("description") or error)[:200], str(path), "modelscan")


@functools.lru_cache(maxsize=1)
def _scanner_versions() -> dict:
    from importlib import metadata

    return {"modelscan": metadata.version("modelscan"), "edgekit": "config-walk+graph-ops/2"}


# ---------------------------------------------------------------------------------------------
# Keras configs (.keras, HDF5)

def _keras_config(path: Path, fmt: str) -> dict:
    """The model config as JSON, read as data (never through a Keras loader)."""
    import h5py

    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as z:
                raw = z.read("config.json")
        else:
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelError(f"{path}: an HDF5 file without a model config (weights only?); "
                                 f"save the whole model with model.save(...)")
        config = json.loads(raw)
    except (KeyError, OSError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelError(f"{path}: cannot read the model config ({type(e).__name__}: {e}); "
                         f"save the model again with model.save('model.keras')") from e
    if not isinstance(config, dict):
        raise ModelError(f"{path}: the model config is not a JSON object; save the model again")
    config.pop("compile_config", None)  # edgekit loads with compile=False: never deserialized
    return config


def _config_findings(config: dict, where: str, keras3: bool = False) -> list[Finding]:
    try:
        objects = list(_objects(config, None))
    except RecursionError as e:
        raise ModelError(f"{where}: the model config is nested too deeply to scan; refusing to load it") from e
    known = frozenset() if keras3 else _known_classes()
    found = []
    for obj, layer in objects:
        cls, module = obj.get("class_name"), obj.get("module")
        label = f"'{layer}' ({cls})" if layer and layer != cls else f"'{cls}'"
        if cls == "Lambda" or cls == "__lambda__":
            found.append(Finding("lambda-layer", f"'{layer or cls}'", where, "edgekit"))
        elif cls in VALUE_MARKERS and (module is None or cls == "__typespec__" and _typespec_module(module)):
            continue
        elif keras3:
            if not (cls == "__keras_tensor__" and module is None) and not _keras3_resolves(obj):
                found.append(Finding("custom-object", label + (f" from module '{module}'" if module else ""),
                                     where, "edgekit"))
        elif cls == "function" and module == "builtins":
            fn = obj.get("config")
            if not (isinstance(fn, str) and _keras_builtin_function(fn)):
                found.append(Finding("builtin-function", f"built-in function {fn!r} in layer '{layer}'",
                                     where, "edgekit"))
        elif isinstance(module, str) and not _trusted_module(module, cls):
            found.append(Finding("custom-object", f"{label} from module '{module}'", where, "edgekit"))
        elif cls not in known and not (cls == "function" and module is None):
            found.append(Finding("custom-object", label, where, "edgekit"))
        elif (called := _impure_tf_call(obj)) is not None:
            found.append(Finding("tf-function", f"{called} in layer '{layer}' ({cls})", where, "edgekit"))
    return found


def pure_tf_symbol(name: str) -> bool:
    """True for a `tf.*` symbol name (as TFOpLambda stores it) on the pure math/array list."""
    for prefix in ("compat.v1.", "compat.v2."):
        name = name[len(prefix):] if name.startswith(prefix) else name
    return name.startswith(PURE_TF_PREFIXES) or name in PURE_TF_NAMES


def _impure_tf_call(obj: dict) -> str | None:
    """What an op layer (TFOpLambda and kin) calls on load, if that is not a pure op; else None."""
    cls, cfg = obj.get("class_name"), obj.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        fn = cfg.get("function")
        return None if isinstance(fn, str) and pure_tf_symbol(fn) else f"tf.{fn}"
    if cls == "ClassMethod":
        sym, method = cfg.get("cls_symbol"), cfg.get("method_name")
        return None if sym == "RaggedTensor" and method in RAGGED_CLASS_METHODS else f"tf.{sym}.{method}"
    if cls in ("InstanceProperty", "InstanceMethod"):
        attr = cfg.get("attr_name")
        return None if attr in TENSOR_ATTRIBUTES else f"<input tensor>.{attr}"
    return None


def _keras_builtin_function(name: str) -> bool:
    """The lookup tf_keras makes first for a `builtins` function (its activations, losses, ...);
    any other name falls through to `getattr(builtins, name)`: exit, eval, open."""
    from tensorflow.python.util import tf_export
    from tf_keras.src.saving.serialization_lib import BUILTIN_MODULES

    return any(tf_export.get_symbol_from_name(f"keras.{m}.{name}") is not None for m in BUILTIN_MODULES)


def _keras3_resolves(obj: dict) -> bool:
    """True when Keras 3's loader finds the object among its own modeling symbols (what
    keras.src.saving.serialization_lib._retrieve_class_or_fn accepts before importing anything)."""
    import sys

    from keras.src.api_export import get_symbol_from_name
    from keras.src.saving.keras_saveable import KerasSaveable
    from keras.src.saving.serialization_lib import BUILTIN_MODULES, NON_MODELING_APIS

    cls, module, cfg = obj.get("class_name"), obj.get("module"), obj.get("config")
    if not isinstance(module, str) or not isinstance(cls, str):
        return False
    if cls == "function":
        if not isinstance(cfg, str):
            return False
        names = [f"keras.{m}.{cfg}" for m in BUILTIN_MODULES] if module == "builtins" else [f"{module}.{cfg}"]
        return any(n not in NON_MODELING_APIS and callable(get_symbol_from_name(n)) for n in names)
    if not _trusted_module(module, cls) or module.startswith("tf_keras") or module.startswith("tensorflow_"):
        return False
    name = f"{module}.{cls}"
    if name in NON_MODELING_APIS:
        return False
    if isinstance(get_symbol_from_name(name), type):  # a public class (layer, initializer, dtype policy)
        return True
    # else Keras imports `module` and takes a KerasSaveable from it: here only modules already imported
    found = vars(sys.modules[module]).get(cls) if module.startswith("keras.src.") and module in sys.modules else None
    return isinstance(found, type) and issubclass(found, KerasSaveable)


def _objects(node: Any, layer: str | None) -> Iterator[tuple[dict, str | None]]:
    """Every serialized object (a dict with a class_name) and the layer it belongs to; the
    inside of a Lambda is not walked (the Lambda itself is the finding)."""
    if isinstance(node, dict):
        cls = node.get("class_name")
        if isinstance(cls, str):
            cfg = node.get("config")
            name = node.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
            layer = name if isinstance(name, str) else layer
            yield node, layer
            if cls == "Lambda":
                return
        for value in node.values():
            yield from _objects(value, layer)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value, layer)


def _typespec_module(module: str) -> bool:
    """A `.keras` type spec names the module its class is imported from: TensorFlow's own only."""
    return module == "tensorflow" or module.startswith("tensorflow.") or _trusted_module(module, "")


def _trusted_module(module: str, cls: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in TRUSTED_MODULES)


@functools.lru_cache(maxsize=1)
def _known_classes() -> frozenset[str]:
    """Class names tf_keras (and tfmot's quantize scope) deserialize from their own code."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tf_keras.src.layers import serialization

    serialization.populate_deserializable_objects()
    names = set(serialization.LOCAL.ALL_OBJECTS)
    for ns in (tf_keras.initializers, tf_keras.regularizers, tf_keras.constraints, tf_keras.losses,
               tf_keras.metrics, tf_keras.optimizers, tf_keras.optimizers.schedules, tf_keras.models,
               tf_keras.mixed_precision, tf_keras.activations):
        names |= {n for n, v in vars(ns).items() if isinstance(v, type)}
    for objects in tfmot.quantization.keras.quantize_scope().custom_objects:
        names |= set(objects)
    return frozenset(names)
