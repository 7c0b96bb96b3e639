"""Numbers every stage computes the same way: top-1 accuracy (training, export, bench)."""
from __future__ import annotations

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
