"""Parity of an exported file with the Keras model it came from, and the profile's checks.

Everything here compares *dequantized float outputs* (the runtime sessions dequantize int8
outputs with the file's own scale and zero point), so a float file, an fp16 file and an
int8 file are judged on the same scale: logits. The comparison itself (edgekit.verify.agreement) is
pure numpy, so it can be checked against numbers worked out by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.verify.agreement import ParityResult, accuracy_drop_points, compare  # noqa: F401  (public here too)
from edgekit.core.config import Thresholds
from edgekit.errors import ExportError


def predict_keras(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of an in-memory Keras model (or a model file) through the same compiled
    tf.function the Keras runtime benchmarks, so parity and bench see the same numbers."""
    from edgekit.runtimes import keras_tf

    if isinstance(model, (str, Path)):
        session = keras_tf.KerasSession(Path(model))
    else:
        session = keras_tf.KerasSession(Path("<in-memory>"), model=model)
    return session.predict(x, batch_size=batch_size)


def predict_file(path: str | Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of an exported file on its own runtime, dequantized to float."""
    from edgekit.runtimes import open_file

    return open_file(path, threads=1).predict(x, batch_size=batch_size)


def compare_file(path: str | Path, reference: Any, x: np.ndarray, labels: Any = None,
                 batch_size: int = 256) -> ParityResult:
    """Run an exported file and its reference on the same sample and compare them.

    `reference` is the reference's outputs on `x` (an array, computed once and reused for
    every variant of a model), or a Keras model / model file to run now.
    """
    if isinstance(reference, np.ndarray):
        ref = reference
    else:
        ref = predict_keras(reference, x, batch_size=batch_size)
    if len(ref) != len(x):
        raise ExportError(f"parity: {len(ref)} reference outputs for {len(x)} inputs")
    return compare(ref, predict_file(path, x, batch_size=batch_size), labels)


def check_thresholds(thresholds: Thresholds, parity: dict | None, size_bytes: int | None,
                     fp32_size_bytes: int | None, *, weight_bytes: int | None = None,
                     fp32_weight_bytes: int | None = None, kernel_fidelity: dict | None = None,
                     emulated_parity: list[dict] | None = None) -> list[dict]:
    """One row per threshold the profile sets: name, limit, value, passed.

    `parity` is a manifest parity record (with `accuracy_drop_points`). A threshold that cannot
    be measured here (no labels for accuracy, no fp32 file to compare sizes with) gets
    passed=None and a note saying why, rather than a silent pass or an invented value;
    a non-finite output difference (value None) fails.
    `max_size_ratio` is judged on weight bytes (edgekit.verify.weight_bytes: what quantization shrinks,
    not the file format's framing) when both are given, else on file bytes, and the note says
    which; `max_size_bytes` is a flash budget, always on file bytes.
    `kernel_fidelity` is an edgekit.verify.fidelity record; a failing row carries its "avoid" text.
    `emulated_parity` (edgekit.verify.cpu_parity records) adds `<threshold>@<cpu>` rows for emulated CPUs.
    `max_latency_regression` needs a benchmark and a baseline: `edgekit check` judges it.
    """
    parity = parity or {}
    rows: list[dict] = []

    def row(name: str, limit: float, value: float | None, ok, note: str | None = None) -> None:
        r = {"name": name, "limit": limit, "value": value, "passed": ok}
        if note:
            r["note"] = note
        rows.append(r)

    if thresholds.min_agreement is not None:
        v = parity.get("agreement")
        row("min_agreement", thresholds.min_agreement, v,
            None if v is None else v >= thresholds.min_agreement,
            "not measured: no parity sample" if v is None else None)
    if thresholds.max_abs_diff is not None:
        v = parity.get("max_abs_diff")
        if parity.get("samples"):
            row("max_abs_diff", thresholds.max_abs_diff, v, v is not None and v <= thresholds.max_abs_diff,
                "outputs are not finite (NaN or inf)" if v is None else None)
        else:
            row("max_abs_diff", thresholds.max_abs_diff, None, None, "not measured: no parity sample")
    if thresholds.max_accuracy_drop is not None:
        v = parity.get("accuracy_drop_points")
        row("max_accuracy_drop", thresholds.max_accuracy_drop, v,
            None if v is None else v <= thresholds.max_accuracy_drop,
            "not measured: the parity sample has no labels" if v is None else None)
    if thresholds.max_size_ratio is not None:
        file_ratio = round(size_bytes / fp32_size_bytes, 6) if size_bytes is not None and fp32_size_bytes else None
        if weight_bytes is not None and fp32_weight_bytes:
            v = round(weight_bytes / fp32_weight_bytes, 6)
            row("max_size_ratio", thresholds.max_size_ratio, v, v <= thresholds.max_size_ratio,
                f"weight bytes {weight_bytes} / {fp32_weight_bytes} of the fp32 file"
                + ("" if file_ratio is None else f"; file bytes ratio {file_ratio:.4g}"))
            rows[-1]["file_size_ratio"] = file_ratio
        elif file_ratio is not None:
            row("max_size_ratio", thresholds.max_size_ratio, file_ratio, file_ratio <= thresholds.max_size_ratio,
                "file bytes (no weight bytes recorded for both files)")
            rows[-1]["file_size_ratio"] = file_ratio
        else:
            row("max_size_ratio", thresholds.max_size_ratio, None, None,
                "not measured: no fp32 file of the same format in this export")
    if thresholds.max_size_bytes is not None and size_bytes is not None:
        row("max_size_bytes", thresholds.max_size_bytes, size_bytes, size_bytes <= thresholds.max_size_bytes,
            "file bytes (a flash budget)")
    if thresholds.min_kernel_agreement is not None:
        _kernel_row(rows, thresholds.min_kernel_agreement, kernel_fidelity)
    if emulated_parity:
        from edgekit.verify.cpu_parity import emulated_checks

        rows += emulated_checks(thresholds, emulated_parity)
    return rows


def _kernel_row(rows: list[dict], limit: float, fidelity: dict | None) -> None:
    """min_kernel_agreement: the runtime's fast kernels against its reference kernels on the same file."""
    if not fidelity:
        rows.append({"name": "min_kernel_agreement", "limit": limit, "value": None, "passed": None,
                     "note": "not measured: no kernel-fidelity record (made for int8 files only)"})
        return
    # judged on the images outside the near-tie band (edgekit.verify.fidelity); older records: all images
    v = fidelity.get("decisive_agreement", fidelity.get("agreement"))
    if v is None and fidelity.get("decisive_samples") == 0:
        rows.append({"name": "min_kernel_agreement", "limit": limit, "value": None, "passed": None,
                     "note": f"not measured: all {fidelity.get('samples')} images are near-ties "
                             f"(top-2 logits within {fidelity.get('tie_band_steps', 0):g} output steps)"})
        return
    ok = v is not None and v >= limit
    diff = fidelity.get("max_abs_diff")
    steps = fidelity.get("max_abs_diff_steps")
    r = {"name": "min_kernel_agreement", "limit": limit, "value": v, "passed": ok,
         "note": (f"{fidelity.get('runtime')} {fidelity.get('fast')} vs {fidelity.get('reference')} on "
                  f"{fidelity.get('decisive_samples', fidelity.get('samples'))} of {fidelity.get('samples')} "
                  f"samples outside the {fidelity.get('tie_band_steps', 0):g}-step near-tie band "
                  f"(all-sample agreement {fidelity.get('agreement', 0):.4f}), max_abs_diff "
                  f"{'non-finite' if diff is None else format(diff, '.4g')}"
                  + ("" if steps is None else f" ({steps:.3g} output steps)"))}
    if not ok:
        from edgekit.verify.fidelity import PAIRS, avoid_text

        pair = PAIRS.get(str(fidelity.get("runtime")))
        # a record judged by a stricter profile than the one that made it has no "avoid" yet
        r["avoid"] = fidelity.get("avoid") or (avoid_text(pair, str(fidelity.get("cpu_class", "?")),
                                                          fidelity.get("encoding"))
                                               if pair else None)
        r["note"] += f"; avoid {r['avoid']}" if r["avoid"] else ""
    rows.append(r)


def failed_checks(checks: list[dict]) -> list[dict]:
    return [c for c in checks if c.get("passed") is False]


def describe_failures(checks: list[dict]) -> str:
    """'min_agreement 0.9812 < 0.995; max_size_ratio 0.41 > 0.32' for the error field."""
    parts = []
    for c in failed_checks(checks):
        op = ">=" if c["name"].startswith("min_") else "<="
        if c["value"] is None and str(c.get("note", "")).startswith("emulation failed"):
            parts.append(f"{c['name']}: {c['note']}")
            continue
        value = "non-finite" if c["value"] is None else f"{c['value']:.6g}"
        parts.append(f"{c['name']} {value} (limit {op} {c['limit']:.6g})"
                     + (f": avoid {c['avoid']}" if c.get("avoid") else ""))
    return "; ".join(parts)
