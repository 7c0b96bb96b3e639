"""How many images one batch may hold when every layer's output is kept at once: QAT fine-tuning
(forward activations plus their gradients), the range warm-up probe, ONNX Runtime's calibration.

A fixed batch of 128 suits 28x28 networks (tens of KB of activations an image) and takes more
than 10 GB on MobileNetV2 at 224x224 (87 MB an image): the batch is sized from the model's own
activation bytes instead, so memory stays near a budget whatever the model."""
from __future__ import annotations

import math

import numpy as np

BATCH_MEMORY_BYTES = 1 << 30   # activations one batch may hold: 1 GiB
TRAINING_FACTOR = 3            # fine-tuning keeps activations, their gradients and fake-quant temporaries


def activation_bytes_per_sample(model) -> int:
    """float32 bytes of every layer's output for one image (the input layer's included), read from
    the model's static output shapes; a dimension unknown besides the batch counts as 1."""
    total = 0
    for layer in model.layers:
        for shape in _output_shapes(layer):
            total += int(np.prod([d or 1 for d in shape[1:]])) if shape else 1
    return 4 * max(total, 1)


def _output_shapes(layer) -> list[tuple]:
    """tf_keras layers have `output_shape`; Keras 3 layers only their output tensors' shapes."""
    try:
        shapes = layer.output_shape
    except (AttributeError, RuntimeError):
        try:
            out = layer.output
        except (AttributeError, RuntimeError, ValueError):
            return []
        shapes = [tuple(o.shape) for o in out] if isinstance(out, (list, tuple)) else tuple(out.shape)
    return shapes if isinstance(shapes, list) else [shapes]


def batch_for_memory(per_sample_bytes: int, most: int, budget_bytes: int = BATCH_MEMORY_BYTES,
                     factor: int = 1, least: int = 1) -> int:
    """The largest batch, at most `most` and at least `least`, whose activations (times `factor`)
    fit in `budget_bytes`."""
    fits = math.floor(budget_bytes / max(1, per_sample_bytes * factor))
    return int(max(least, min(most, fits)))
