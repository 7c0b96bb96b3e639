"""The per-model hand-off of `edgekit export`: what export_run/export_model prepare and the QAT
and per-variant steps (edgekit.export_qat, edgekit.export_variant) read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class ModelJob:
    """Everything one model's export needs, whichever way the model came in."""
    name: str                        # manifest key and folder name
    model_path: Path                 # the float Keras model file (or SavedModel folder)
    x_parity: np.ndarray             # float32 inputs, NHWC
    y_parity: np.ndarray | None      # labels, or None (agreement and diffs only)
    x_fit: np.ndarray | None         # QAT fine-tuning and calibration inputs (float32, or uint8 pixels)
    y_fit: np.ndarray | None
    seed: int = 0
    data_key: Any = None             # what identifies the data, hashed into every key


def accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float(np.mean(np.argmax(outputs, axis=1) == labels))
