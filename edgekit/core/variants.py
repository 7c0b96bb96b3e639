"""The one registry of model variants: the two Keras models a run starts from and every file export makes.

Every other module takes names, formats, classes and roles from here: a profile validates its
variant list against it (without TensorFlow: this module imports none), the bench plans its rows
from it, the report orders its tables by it. Behaviour follows a row's fields (`role`, `format`,
`variant_class`, ...), never its name. To add a variant: a `make_*(inputs, path)` function in
edgekit.convert.converters and one row below (ARCHITECTURE.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import ConfigError


class Format(StrEnum):
    KERAS = "keras"
    TFLITE = "tflite"
    ONNX = "onnx"


class VariantClass(StrEnum):
    """What a variant does to the numbers; profiles set thresholds per class (or per variant)."""
    FLOAT = "float"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8_PTQ = "int8-ptq"
    INT8_QAT = "int8-qat"
    FAKE_QUANT = "fake-quant"   # the QAT Keras model: float kernels simulating int8

    @property
    def is_int8(self) -> bool:
        return self in (VariantClass.INT8_PTQ, VariantClass.INT8_QAT)


class Reference(StrEnum):
    """The Keras model a file's parity is judged against (export keys its reference outputs so)."""
    FLOAT = "float"     # the source model
    QAT = "qat"         # the QAT model (fake-quant): what an int8-qat file must reproduce


class Role(StrEnum):
    SOURCE = "source"   # the float Keras model: trained by edgekit, or the user's file
    QAT = "qat"         # the quantization-aware-trained Keras model export makes from it
    EXPORT = "export"   # a file export converts from one of those two


@dataclass(frozen=True)
class Variant:
    name: str                    # "tflite-int8-qat": file stem, results key, profile key
    format: Format
    variant_class: VariantClass
    role: Role
    description: str
    io_dtype: str = "float32"    # input dtype the file must take ("int8": quantized I/O)
    needs_qat: bool = False      # made from the QAT model
    needs_calibration: bool = False  # needs representative images
    reference: Reference = Reference.FLOAT  # the Keras model its parity is judged against

    @property
    def suffix(self) -> str:
        return f".{self.format}"

    @property
    def is_int8(self) -> bool:
        return self.variant_class.is_int8

    def make(self, inputs: Any, path: Path) -> None:
        """Write this variant's file at `path` (a temporary name) with its registered converter."""
        if self.role is not Role.EXPORT:
            raise ConfigError(f"'{self.name}' is a Keras model, not an export variant; nothing converts it")
        converter_of(self)(self, inputs, Path(path))


def _export(name: str, format: Format, variant_class: VariantClass, description: str, **kw) -> Variant:
    """An export row; its converter registers itself for (format, variant_class)."""
    return Variant(name, format, variant_class, Role.EXPORT, description, **kw)


_INT8_IO = {"io_dtype": "int8"}
VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("keras-fp32", Format.KERAS, VariantClass.FLOAT, Role.SOURCE,
            "the float Keras model (trained by edgekit, or the user's file)"),
    Variant("keras-qat", Format.KERAS, VariantClass.FAKE_QUANT, Role.QAT,
            "the quantization-aware-trained Keras model (fake-quant float kernels)", reference=Reference.QAT),
    _export("tflite-fp32", Format.TFLITE, VariantClass.FLOAT, "TFLite float32, from the float Keras model"),
    _export("tflite-fp16", Format.TFLITE, VariantClass.FP16,
            "TFLite with float16 weights (dequantized to float32 at load), float32 I/O"),
    _export("tflite-dynamic", Format.TFLITE, VariantClass.DYNAMIC,
            "TFLite dynamic-range: int8 weights, float activations, float32 I/O"),
    _export("tflite-int8-ptq", Format.TFLITE, VariantClass.INT8_PTQ,
            "TFLite full-integer, post-training calibrated, int8 I/O", needs_calibration=True, **_INT8_IO),
    _export("tflite-int8-qat", Format.TFLITE, VariantClass.INT8_QAT,
            "TFLite full-integer from the QAT model, int8 I/O", needs_qat=True, reference=Reference.QAT, **_INT8_IO),
    _export("onnx-fp32", Format.ONNX, VariantClass.FLOAT, "ONNX float32 (tf2onnx), NHWC input 'image'"),
    _export("onnx-int8-ptq", Format.ONNX, VariantClass.INT8_PTQ,
            "ONNX QDQ by ONNX Runtime static quantization (uint8 activations, per-channel 8-bit weights)",
            needs_calibration=True),
    _export("onnx-int8-qat", Format.ONNX, VariantClass.INT8_QAT,
            "ONNX QDQ from the QAT model with int8 weights on the QAT grid (uint8 activations)",
            needs_qat=True, reference=Reference.QAT),
]}

EXPORT_VARIANTS: dict[str, Variant] = {n: v for n, v in VARIANTS.items() if v.role is Role.EXPORT}
THRESHOLD_CLASSES: tuple[str, ...] = tuple(dict.fromkeys(v.variant_class.value for v in EXPORT_VARIANTS.values()))


def file_format(path: str | Path, what: str = "this check") -> Format:
    """The exported-file format of a path, by its suffix: the one place a suffix picks a code path.
    Only exported formats (.tflite, .onnx); anything else is a one-line ConfigError naming `what`."""
    suffix = Path(path).suffix.lstrip(".")
    exported = {v.format for v in EXPORT_VARIANTS.values()}
    if suffix in exported:
        return Format(suffix)
    names = " and ".join(f".{f}" for f in sorted(exported))
    raise ConfigError(f"{path}: {what} reads {names} files, not '{Path(path).suffix or 'no suffix'}'")


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError as e:
        raise ConfigError(f"unknown variant '{name}'; choose from {', '.join(VARIANTS)}") from e


def keras_variant(role: Role) -> Variant:
    """The registry row of the source (Role.SOURCE) or QAT (Role.QAT) Keras model."""
    return next(v for v in VARIANTS.values() if v.role is role)


def order(name: str) -> tuple[int, str]:
    """Sort key: registry order (sources first), unknown names last."""
    names = list(VARIANTS)
    return (names.index(name) if name in names else len(names), name)


def is_int8_class(variant_class: object) -> bool:
    """Whether a recorded variant_class (any string, "unknown" included) is a full-integer one."""
    return str(variant_class) in (VariantClass.INT8_PTQ, VariantClass.INT8_QAT)


def float_export(format: str) -> Variant | None:
    """The float32 export of a file format: what size and weight ratios of that format divide by."""
    return next((v for v in EXPORT_VARIANTS.values()
                 if v.format == format and v.variant_class is VariantClass.FLOAT), None)


# ----------------------------------------------------------------------------- converters

# (variant, inputs, path) -> None: writes the variant's file at path. Filled by
# edgekit.convert.converters when it is imported (edgekit.convert imports it in its __init__).
Converter = Callable[[Variant, Any, Path], None]
_CONVERTERS: dict[str, Converter] = {}


def export_row(format: Format, variant_class: VariantClass) -> Variant:
    """The one export row of a (format, class): a converter's key, unique by construction (a test checks)."""
    rows = [v for v in EXPORT_VARIANTS.values() if v.format is format and v.variant_class is variant_class]
    if len(rows) != 1:
        raise ConfigError(f"{len(rows)} export variants are {format}/{variant_class}; a converter needs exactly one")
    return rows[0]


def register_converter(format: Format, variant_class: VariantClass) -> Callable[[Converter], Converter]:
    """Decorator: `fn` writes the file of the export row of (format, class). One converter a row."""
    row = export_row(format, variant_class)

    def register(fn: Converter) -> Converter:
        if row.name in _CONVERTERS and _CONVERTERS[row.name] is not fn:
            raise ConfigError(f"variant '{row.name}' already has a converter ({_CONVERTERS[row.name].__qualname__})")
        _CONVERTERS[row.name] = fn
        return fn
    return register


def converter_of(variant: Variant) -> Converter:
    try:
        return _CONVERTERS[variant.name]
    except KeyError as e:
        raise ConfigError(f"no converter is registered for variant '{variant.name}'; import edgekit.convert "
                          f"(it registers them) or register one with register_converter") from e
