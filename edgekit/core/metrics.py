"""Numbers every stage computes the same way: top-1 accuracy (training, export, bench), the top-1
margin of a set of outputs, and the error of one output tensor against a reference (relative
error, cosine, SNR in dB: parity judges final outputs with it; a per-layer debugger, tensors)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit.errors import ExportError


def top1_accuracy(predictions: Any, labels: Any) -> float | None:
    """Share of samples whose top-1 class is the label: the one definition of accuracy everywhere
    (training, export, bench). `predictions` are (n, classes) scores or (n,) class indices;
    None without labels."""
    if labels is None:
        return None
    p = np.asarray(predictions)
    classes = p.reshape(len(p), -1).argmax(axis=1) if p.ndim > 1 else p
    y = np.asarray(labels).reshape(-1)
    if len(y) != len(classes):
        raise ExportError(f"accuracy: {len(y)} labels for {len(classes)} samples; give one label per sample")
    return float(np.mean(classes == y))


def _rows(name: str, a: Any) -> np.ndarray:
    """(samples, values) float64: a conv head's (n, 1, 1, c) or a (n,) output flattened per sample."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0 or len(a) == 0:
        raise ExportError(f"{name}: need at least one sample, got shape {a.shape}")
    return a.reshape(len(a), -1)


def as_probabilities(outputs: Any) -> np.ndarray:
    """Per sample, the outputs as class probabilities: kept when they already are (every value in
    [0, 1], each row summing to 1: a softmax head), else their softmax (logits)."""
    a = _rows("as_probabilities", outputs)
    if np.all(a >= -1e-6) and np.all(a <= 1 + 1e-6) and np.allclose(a.sum(axis=1), 1.0, atol=1e-3):
        return a
    z = np.exp(a - a.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def top1_margin(outputs: Any) -> np.ndarray:
    """Per sample, the gap between the top two class probabilities (0: a tie, 1: certain).

    Probabilities, so that a model gets the same margins whether it ends in logits or in a
    softmax (logits are turned into probabilities first), and so that the unit is absolute: a
    random network's near-uniform outputs (1,000 classes at ~0.001 each) have gaps of 1e-5 however
    consistently one class wins, which a margin relative to the outputs' own spread would call
    decisive. One output per sample has no top two, and non-finite outputs no order: margin 0
    (top-1 agreement says nothing there)."""
    a = _rows("top1_margin", outputs)
    if a.shape[1] < 2 or not np.all(np.isfinite(a)):
        return np.zeros(len(a))
    top2 = np.partition(as_probabilities(a), -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@dataclass(frozen=True)
class OutputError:
    """How far one tensor is from its reference, three ways that see the same error differently:
    relative_error = ||out - ref|| / ||ref|| (L2 over every element), snr_db = -20 log10 of it
    (signal power over error power; +inf: identical), cosine = the angle's cosine of the two
    flattened tensors (1: same direction; blind to scale). Non-finite outputs give
    relative_error inf, snr_db -inf, cosine nan: every check on them fails."""
    elements: int
    relative_error: float
    snr_db: float
    cosine: float
    max_abs_diff: float

    def to_dict(self) -> dict:
        """JSON-safe: identical tensors (snr_db +inf) record SNR_IDENTICAL_DB; any other non-finite
        figure (NaN or inf outputs) becomes None, which fails any check."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = SNR_IDENTICAL_DB if k == "snr_db" and v > 0 else None
        return d


# What identical tensors record as their SNR: above any real one (float64's own rounding
# of a sum is ~2^-53 relative, about 320 dB; float32 ~150 dB), finite so JSON keeps it.
SNR_IDENTICAL_DB = 400.0


def output_error(reference: Any, outputs: Any) -> OutputError:
    """Relative error, SNR (dB), cosine and max |diff| of `outputs` against `reference` (same shape)."""
    ref, out = np.asarray(reference, np.float64), np.asarray(outputs, np.float64)
    if ref.shape != out.shape:
        raise ExportError(f"output error: shapes {out.shape} and reference {ref.shape} differ; "
                          f"compare the same tensor of both models")
    ref, out = ref.reshape(-1), out.reshape(-1)
    if not np.all(np.isfinite(out)) or not np.all(np.isfinite(ref)):
        return OutputError(int(ref.size), math.inf, -math.inf, math.nan, math.inf)
    err, signal = float(np.sum((out - ref) ** 2)), float(np.sum(ref ** 2))
    if err == 0.0:
        rel, snr = 0.0, math.inf
    elif signal == 0.0:
        rel, snr = math.inf, -math.inf
    else:
        rel = math.sqrt(err / signal)
        snr = 10.0 * math.log10(signal / err)
    norms = math.sqrt(signal) * float(np.linalg.norm(out))
    cos = float(np.dot(ref, out) / norms) if norms > 0 else (1.0 if err == 0.0 else 0.0)
    return OutputError(elements=int(ref.size), relative_error=rel, snr_db=snr, cosine=min(cos, 1.0),
                       max_abs_diff=float(np.max(np.abs(out - ref))) if ref.size else 0.0)
