"""The export stage's records, typed: one judged threshold (Check), one variant (VariantRecord),
the QAT model (QatRecord).

Each has one `to_json` and one `from_json`, and the JSON is exactly what manifest.json has always
held, so run directories made before these types existed load unchanged: export writes them, the
gate and the tests read them. The figures inside (file, parity, audit, kernel fidelity, ...) stay
the plain dicts their own modules make; these types fix the shape around them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from edgekit.core.variants import Format, Reference, VariantClass


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"      # could not be made, or made and below its thresholds (file kept)
    SKIPPED = "skipped"    # not attempted: the data it needs was not given


def _enum(kind: type[StrEnum], value: Any) -> Any:
    """`value` as a member of `kind` when it is one; anything else (a hand-edited manifest) as recorded."""
    try:
        return kind(value)
    except ValueError:
        return value


# ---------------------------------------------------------------------------------------------
# One judged threshold

_CHECK_FIELDS = ("name", "limit", "value", "passed", "note")


@dataclass(frozen=True, kw_only=True)
class Check:
    """One threshold judged on one file. passed=None: it could not be measured here (no labels,
    no fp32 file...), which is neither a pass nor a failure."""
    name: str                        # a threshold name, `<threshold>@<cpu>`, or int8_audit
    limit: Any
    value: Any                       # None: not measured, or not finite
    passed: bool | None
    note: str | None = None          # why, or how it was measured (absent from the JSON when None)
    details: Mapping[str, Any] = field(default_factory=dict)   # file_size_ratio, avoid: as recorded

    @property
    def failed(self) -> bool:
        return self.passed is False

    def to_json(self) -> dict:
        d = {"name": self.name, "limit": self.limit, "value": self.value, "passed": self.passed}
        if self.note is not None:
            d["note"] = self.note
        return {**d, **self.details}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Check:
        return cls(name=d["name"], limit=d.get("limit"), value=d.get("value"), passed=d.get("passed"),
                   note=d.get("note"), details={k: v for k, v in d.items() if k not in _CHECK_FIELDS})


# ---------------------------------------------------------------------------------------------
# One export variant

@dataclass(frozen=True, kw_only=True)
class VariantRecord:
    """manifest.json stages.export.models.<model>.variants.<variant>: one file export made (or
    could not make), what it measured and how it was judged."""
    status: Status
    error: str | None
    key: str                                  # variant_key: same key, same file and verdict
    format: Format
    variant_class: VariantClass
    reference: Reference                      # the Keras model its parity was measured against
    description: str = ""
    file: dict | None = None                  # rundir.file_record + weight_bytes; None: no file
    files: tuple[dict, ...] = ()
    inputs: tuple[dict, ...] = ()             # I/O names, shapes, dtypes, scale and zero point
    outputs: tuple[dict, ...] = ()
    parity: dict | None = None                # ParityResult.to_dict + float_accuracy, accuracy_drop_points
    kernel_fidelity: dict | None = None       # int8 files: fast vs reference kernels
    audit: dict | None = None                 # int8 files: edgekit.verify.audit
    checks: tuple[Check, ...] = ()
    seconds: float = 0.0
    onnx_int8_encoding: str | None = None     # ONNX int8 files only (absent from the JSON otherwise)
    emulated_parity: tuple[dict, ...] | None = None   # in the JSON of every measured file (null: none)
    peak_rss_mb: float | None = None          # the export process's peak while making and measuring it (absent before 0.2)

    @property
    def measured(self) -> bool:
        """A file was made and run: the gate can judge it again from its figures."""
        return bool(self.file and self.parity)

    @classmethod
    def blank(cls, *, status: Status, error: str | None, key: str, format: Format,
              variant_class: VariantClass, reference: Reference, description: str,
              onnx_int8_encoding: str | None = None) -> VariantRecord:
        """A record with no file: a variant skipped or failed before it could be measured."""
        return cls(status=status, error=error, key=key, format=format, variant_class=variant_class,
                   reference=reference, description=description, onnx_int8_encoding=onnx_int8_encoding)

    def to_json(self) -> dict:
        d = {"status": self.status, "error": self.error, "key": self.key, "format": self.format,
             "variant_class": self.variant_class, "reference": self.reference, "description": self.description,
             "file": self.file, "files": list(self.files), "inputs": list(self.inputs),
             "outputs": list(self.outputs), "parity": self.parity, "kernel_fidelity": self.kernel_fidelity,
             "audit": self.audit, "checks": [c.to_json() for c in self.checks], "seconds": self.seconds}
        if self.onnx_int8_encoding is not None:
            d["onnx_int8_encoding"] = self.onnx_int8_encoding
        if self.file is not None:
            d["emulated_parity"] = None if self.emulated_parity is None else list(self.emulated_parity)
        if self.peak_rss_mb is not None:
            d["peak_rss_mb"] = self.peak_rss_mb
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VariantRecord:
        """Lenient with missing keys (records written by hand or by an older edgekit): defaults."""
        emulated = d.get("emulated_parity")
        return cls(status=_enum(Status, d.get("status", "?")), error=d.get("error"), key=d.get("key", ""),
                   format=_enum(Format, d.get("format")), variant_class=_enum(VariantClass, d.get("variant_class")),
                   reference=_enum(Reference, d.get("reference", Reference.FLOAT)),
                   description=d.get("description", ""), file=d.get("file"), files=tuple(d.get("files") or ()),
                   inputs=tuple(d.get("inputs") or ()), outputs=tuple(d.get("outputs") or ()),
                   parity=d.get("parity"), kernel_fidelity=d.get("kernel_fidelity"), audit=d.get("audit"),
                   checks=tuple(Check.from_json(c) for c in d.get("checks") or ()),
                   seconds=d.get("seconds", 0.0), onnx_int8_encoding=d.get("onnx_int8_encoding"),
                   emulated_parity=None if emulated is None else tuple(emulated), peak_rss_mb=d.get("peak_rss_mb"))


# ---------------------------------------------------------------------------------------------
# The QAT model

@dataclass(frozen=True, kw_only=True)
class QatRecord:
    """manifest.json stages.export.models.<model>.qat: the QAT model made (or not) for the
    variants that need it."""
    status: Status
    error: str | None
    key: str
    epochs: float
    learning_rate: float
    file: dict | None = None
    files: tuple[dict, ...] = ()
    accuracy: float | None = None
    seconds: float = 0.0
    fit: Any = None                  # the fine-tuning history (absent from the JSON until it ran)
    output: str | None = None        # "logits" or "softmax": the loss fine-tuning used (absent before 0.2)
    float_layers: tuple[str, ...] | None = None   # layers tfmot left float (absent before 0.2)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def problem(self) -> str | None:
        """Why the QAT variants cannot be made (None: they can); they take the QAT model's status."""
        return None if self.ok else f"needs the QAT model: {self.error}"

    def to_json(self) -> dict:
        d = {"status": self.status, "error": self.error, "file": self.file, "files": list(self.files),
             "key": self.key, "accuracy": self.accuracy, "epochs": self.epochs,
             "learning_rate": self.learning_rate, "seconds": self.seconds}
        if self.fit is not None:
            d["fit"] = self.fit
        if self.output is not None:
            d["output"] = self.output
        if self.float_layers is not None:
            d["float_layers"] = list(self.float_layers)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> QatRecord:
        return cls(status=_enum(Status, d.get("status", "?")), error=d.get("error"), key=d.get("key", ""),
                   epochs=d.get("epochs"), learning_rate=d.get("learning_rate"), file=d.get("file"),
                   files=tuple(d.get("files") or ()), accuracy=d.get("accuracy"), seconds=d.get("seconds", 0.0),
                   fit=d.get("fit"), output=d.get("output"),
                   float_layers=None if d.get("float_layers") is None else tuple(d["float_layers"]))
