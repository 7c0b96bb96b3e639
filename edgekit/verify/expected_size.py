"""What a route can shrink a model to: the weight bytes its rules predict, and the size verdict.

A fixed ratio to the fp32 file (`max_size_ratio = 0.32`) holds only for models whose weights are
big tensors. On a 15 KiB model of separable convolutions TFLite's dynamic-range quantizer leaves
every tensor under 1024 elements float, by design, and ONNX QDQ adds a float32 scale and an 8-bit
zero point per weight channel and an int32 bias with its per-channel scale and zero point; both
files are as small as their routes make them, yet miss 0.32. So the size is judged against an
expected size: the file's own constant tensors (shapes, and the op that reads each), each priced
at what the route's rules store it in (ROUTE_RULES below), passing within a tolerance (5%).
The prices come from the tensor's role and element count, never from its stored dtype, so a
weight the route should have made int8 but left float costs 4x its price and fails the verdict;
the verdict names such tensors, and which tensors stayed float by the route's design and why.

Bytes are counted as edgekit.verify.weight_bytes counts them: TFLite buffers (quantization scales
are flatbuffer metadata, not buffers: free), ONNX initializers and Constant tensors (scales and
zero points are initializers: priced).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.core.variants import Format, VariantClass, file_format
from edgekit.verify.file_tensors import ConstTensor, file_tensors

DEFAULT_TOLERANCE = 0.05   # weight bytes may exceed the expectation by 5% (rounding of the rules)

# TFLite's dynamic-range quantizer leaves weights with fewer elements float: the MLIR quantizer's
# QuantizationSpecs.minimum_elements_for_weights and the legacy quantize_weights.cc
# kWeightsMinNumElementsDefault are both 1024 (a small tensor saves little and costs a hybrid kernel).
DYNAMIC_MIN_ELEMENTS = 1024

# Why a tensor stays float (or wider than 8 bits) on a route: the text the verdict prints.
WHY = {
    "dynamic-small": f"under {DYNAMIC_MIN_ELEMENTS} elements: TFLite's dynamic-range quantizer leaves "
                     f"such weights float32 by design",
    "dynamic-bias": "biases: dynamic-range kernels add them in float32",
    "dynamic-other": "not a MAC op's weight: dynamic range quantizes only weights",
    "int32-bias": "biases: int32 (they are added to the int32 accumulator), not int8",
    "onnx-bias": "biases: int32 plus a float32 scale and an int32 zero point per channel (ORT's QDQ bias)",
    "not-float": "integer constants (shapes, axes, paddings): stored as they are on every route",
}


@dataclass(frozen=True)
class PricedTensor:
    """One constant tensor, what the route's rules say it should weigh, and what it does weigh."""
    name: str
    role: str
    shape: tuple[int, ...]
    stored_dtype: str
    stored_bytes: int
    expected_bytes: int
    expected_dtype: str     # what the rule stores it as: "int8", "float16", "float32", "int32", "as stored"
    why: str | None         # WHY key when the rule keeps it float / wider than 8 bits, else None

    @property
    def over(self) -> bool:
        """Stored bigger than its rule allows: a weight the route should have shrunk and did not
        (a constant's scales and zero points are priced with it, so never over on their own)."""
        return self.role != "qparam" and self.stored_bytes > self.expected_bytes


@dataclass(frozen=True)
class ExpectedSize:
    """The weight bytes a file's route predicts from the file's own tensors, tensor by tensor."""
    route: str                       # "tflite dynamic", "onnx int8-ptq", ...
    expected_bytes: int
    stored_bytes: int                # what edgekit.verify.weight_bytes counts for the same file
    tensors: tuple[PricedTensor, ...]

    def kept(self) -> dict[str, dict]:
        """WHY key -> {"tensors", "bytes", "examples" (up to three 'name (shape)')} of the tensors
        the route keeps float or wider than 8 bits, biggest first."""
        out: dict[str, dict] = {}
        for t in sorted(self.tensors, key=lambda t: -t.expected_bytes):
            if t.why is None or t.why == "not-float":
                continue
            d = out.setdefault(t.why, {"tensors": 0, "bytes": 0, "examples": []})
            d["tensors"] += 1
            d["bytes"] += t.expected_bytes
            if len(d["examples"]) < 3:
                d["examples"].append(f"{_short(t.name)} {t.shape}")
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))

    def over(self) -> tuple[PricedTensor, ...]:
        return tuple(t for t in self.tensors if t.over)

    def to_dict(self) -> dict:
        """The record export keeps beside the file's weight_bytes (JSON-safe, no per-tensor list)."""
        return {"route": self.route, "expected_weight_bytes": self.expected_bytes,
                "rules": ROUTE_RULES.get(self.route, ""), "kept_wide": self.kept(),
                "tensors_over": len(self.over()),
                "over_expectation": [_over_dict(t) for t in sorted(
                    self.over(), key=lambda t: t.expected_bytes - t.stored_bytes)[:5]]}


@dataclass(frozen=True)
class SizeVerdict:
    """The size judged against the expectation: value = stored / expected - 1 (the excess)."""
    value: float | None
    limit: float
    passed: bool | None
    reason: str


# The rules, per route, in words (recorded with each expectation); `_price` implements them.
ROUTE_RULES = {
    "tflite float": "every tensor as in the fp32 file",
    "tflite fp16": "every float tensor float16",
    "tflite dynamic": f"weights of MAC ops with >= {DYNAMIC_MIN_ELEMENTS} elements int8 (scales are "
                      f"metadata), everything else float32",
    "tflite int8": "weights and other float constants int8, biases int32 (scales are metadata)",
    "onnx float": "every tensor as in the fp32 file",
    "onnx int8": "weights 8-bit + a float32 scale and 8-bit zero point per output channel; biases "
                 "int32 + float32 scale + int32 zero point per channel; other float constants 8-bit "
                 "+ one scale and zero point; activation scales and zero points as stored",
}


def route_of(fmt: Format | str, variant_class: VariantClass | str) -> str:
    """'tflite int8' for both int8 classes (PTQ and QAT store the same kinds of tensors)."""
    vc = VariantClass(str(variant_class))
    kind = "int8" if vc.is_int8 else "float" if vc in (VariantClass.FLOAT, VariantClass.FAKE_QUANT) else str(vc)
    return f"{Format(str(fmt))} {kind}"


def expected_size(path: str | Path, variant_class: VariantClass | str) -> ExpectedSize:
    """Price every constant tensor of an exported file by its route's rules (ROUTE_RULES)."""
    path = Path(path)
    route = route_of(file_format(path, "the expected-size check"), variant_class)
    if route not in ROUTE_RULES:
        raise ValueError(f"no size rules for route '{route}'")
    tensors = file_tensors(path)
    priced = tuple(_price(route, t) for t in tensors)
    return ExpectedSize(route=route, expected_bytes=sum(t.expected_bytes for t in priced),
                        stored_bytes=sum(t.nbytes for t in tensors), tensors=priced)


_FLOATS = ("float32", "float16", "float64")
_EIGHT_BIT = ("int8", "uint8")


def _price(route: str, t: ConstTensor) -> PricedTensor:
    """One tensor at the route's price. Integer constants that are not quantized values (shapes,
    axes: int32 or int64, int32 biases aside) cost what they cost everywhere."""
    n = t.elements
    if t.dtype not in _FLOATS + _EIGHT_BIT and not (t.role == "bias" and t.dtype == "int32") \
            and t.role not in ("qparam", "activation_qparam"):
        return _priced(t, t.nbytes, "as stored", "not-float")
    if route.endswith("float"):
        return _priced(t, t.nbytes, "as stored", None)
    if route == "tflite fp16":
        return _priced(t, 2 * n, "float16", None)
    if route == "tflite dynamic":
        if t.role == "weight" and n >= DYNAMIC_MIN_ELEMENTS:
            return _priced(t, n, "int8", None)
        why = {"weight": "dynamic-small", "bias": "dynamic-bias"}.get(t.role, "dynamic-other")
        return _priced(t, 4 * n, "float32", why)
    if route == "tflite int8":
        return _priced(t, 4 * n, "int32", "int32-bias") if t.role == "bias" else _priced(t, n, "int8", None)
    # onnx int8. A constant's scales and zero points (role qparam) are priced with the constant
    # (0 here); activations' scales and zero points (one float32 + one 8-bit per quantized
    # activation: a count of the graph's activations, not of its weights) cost what they cost.
    if t.role == "qparam":
        return _priced(t, 0, "priced with its tensor", None)
    if t.role == "activation_qparam":
        return _priced(t, t.nbytes, "as stored", None)
    if t.role == "weight":
        return _priced(t, n + 5 * t.channels, "8-bit", None)
    if t.role == "bias":
        return _priced(t, 4 * n + 8 * t.channels, "int32", "onnx-bias")
    return _priced(t, n + 5, "8-bit", None)


def _priced(t: ConstTensor, expected: int, dtype: str, why: str | None) -> PricedTensor:
    return PricedTensor(name=t.name, role=t.role, shape=t.shape, stored_dtype=t.dtype, stored_bytes=t.nbytes,
                        expected_bytes=expected, expected_dtype=dtype, why=why)


def _short(name: str) -> str:
    """A TFLite tensor named after every op fused into it ('a/Relu;a/BiasAdd;...'): the first."""
    first = name.split(";")[0]
    return first if len(first) <= 60 else first[:57] + "..."


def _over_dict(t: PricedTensor) -> dict:
    return {"name": _short(t.name), "role": t.role, "shape": list(t.shape), "stored_dtype": t.stored_dtype,
            "stored_bytes": t.stored_bytes, "expected_dtype": t.expected_dtype, "expected_bytes": t.expected_bytes}


def judge_size(weight_bytes: int | None, expected: ExpectedSize | dict | None,
               tolerance: float = DEFAULT_TOLERANCE) -> SizeVerdict:
    """Weight bytes against the route's expectation (an ExpectedSize, or its recorded to_dict, so
    the gate judges from the manifest alone): passes when they exceed it by at most `tolerance`
    (a fraction); smaller is fine (a converter may fold or share more than the rules assume).
    The reason says what the route keeps wide and why, and which tensors broke the rules."""
    rec = expected.to_dict() if isinstance(expected, ExpectedSize) else (expected or {})
    want = rec.get("expected_weight_bytes")
    if weight_bytes is None or not want:
        return SizeVerdict(None, tolerance, None, "not measured: no weight bytes or no expected size for this file")
    excess = round(weight_bytes / want - 1.0, 6)
    parts = [f"weight bytes {weight_bytes} vs {want} expected ({excess:+.1%}) on route '{rec.get('route')}'"]
    kept = rec.get("kept_wide") or {}
    if kept:
        parts.append("kept wide by the route: " + "; ".join(
            f"{d['tensors']} tensor{'s' if d['tensors'] != 1 else ''}, {d['bytes']} B ({WHY.get(k, k)}; e.g. "
            f"{', '.join(d['examples'])})" for k, d in kept.items()))
    over = rec.get("over_expectation") or []
    if over:
        n = rec.get("tensors_over", len(over))
        parts.append(f"{n} tensor{'s' if n != 1 else ''} stored wider than the route's rules allow: "
                     + "; ".join(f"{t['name']} {tuple(t['shape'])} {t['stored_dtype']} {t['stored_bytes']} B, "
                                 f"expected {t['expected_dtype']} {t['expected_bytes']} B" for t in over[:3]))
    return SizeVerdict(excess, tolerance, excess <= tolerance, "; ".join(parts))


def expected_size_row(limit: float, weight_bytes: int | None, expected: dict | None) -> dict:
    """The threshold row for `max_expected_size_excess` (the shape edgekit.verify.parity.check_thresholds
    rows have), judged on a file record's weight_bytes and its recorded expected size."""
    v = judge_size(weight_bytes, expected, limit)
    row = {"name": "max_expected_size_excess", "limit": limit, "value": v.value, "passed": v.passed, "note": v.reason}
    if expected:
        row["expected_weight_bytes"] = expected.get("expected_weight_bytes")
    return row
