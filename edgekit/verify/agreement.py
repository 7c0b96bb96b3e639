"""Top-1 agreement and output differences of two output arrays: pure numpy, no runtime.

Kept apart from edgekit.verify.parity (which runs files and judges thresholds) so that the kernel
fidelity and emulated-CPU modules, which parity's threshold rows call, can use it without an
import cycle. Ties in argmax resolve to the lowest class index on both sides (numpy's rule).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit.core.metrics import top1_accuracy
from edgekit.errors import ExportError


@dataclass(frozen=True)
class ParityResult:
    """How closely one model's outputs follow a reference model's on the same inputs."""
    samples: int
    agreement: float                  # fraction of samples with the same top-1 class, 0..1
    max_abs_diff: float               # max |output - reference output| over all samples and classes
    mean_abs_diff: float              # mean of the same
    accuracy: float | None            # top-1 accuracy of `outputs` (None without labels)
    reference_accuracy: float | None  # top-1 accuracy of the reference (None without labels)

    def to_dict(self) -> dict:
        """JSON-safe: a non-finite diff (NaN/inf outputs) becomes None, which fails any check."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def _as_2d(name: str, a: Any) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:  # e.g. (N, 1, 1, C) from a conv head: compare per sample, flattened
        a = a.reshape(len(a), -1)
    if len(a) == 0:
        raise ExportError(f"parity: {name} are empty; give at least one sample")
    return a


def compare(reference_outputs: Any, outputs: Any, labels: Any = None) -> ParityResult:
    """Top-1 agreement, max/mean absolute difference and (with labels) both accuracies.

    Ties in argmax resolve to the lowest class index on both sides (numpy's rule), so two
    identical outputs always agree.
    """
    ref, out = _as_2d("reference outputs", reference_outputs), _as_2d("outputs", outputs)
    if ref.shape != out.shape:
        raise ExportError(f"parity: outputs have shape {out.shape} but the reference model's have "
                          f"{ref.shape}; the exported file does not compute the same function")
    ref_top, out_top = ref.argmax(axis=1), out.argmax(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(out - ref)
    finite = bool(np.all(np.isfinite(diff)))
    if labels is not None and len(np.asarray(labels).reshape(-1)) != len(ref):
        raise ExportError(f"parity: {len(np.asarray(labels).reshape(-1))} labels for {len(ref)} samples; "
                          f"give one label per sample")
    accuracy, reference_accuracy = top1_accuracy(out_top, labels), top1_accuracy(ref_top, labels)
    return ParityResult(
        samples=int(len(ref)),
        agreement=float(np.mean(out_top == ref_top)),
        max_abs_diff=float(diff.max()) if finite else math.inf,
        mean_abs_diff=float(diff.mean()) if finite else math.inf,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
    )


def accuracy_drop_points(float_accuracy: float | None, accuracy: float | None) -> float | None:
    """Percentage points lost against the float Keras model (positive = worse)."""
    if float_accuracy is None or accuracy is None:
        return None
    return round((float_accuracy - accuracy) * 100.0, 6)
