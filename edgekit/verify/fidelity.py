"""Kernel fidelity: does a runtime's fast int8 path compute what the file says?

An int8 file has one meaning (its graph, its scales and zero points), but each runtime has
more than one way to run it. ONNX Runtime with all graph optimizations fuses each
DequantizeLinear -> op -> QuantizeLinear group into QLinearConv/QGemm kernels, chosen by CPU
feature (on x86 with AVX2 but no VNNI, u8 x s8 products saturate in int16); with optimizations
off it executes the QDQ graph node by node, which is the graph's own meaning. LiteRT runs the
same .tflite through the XNNPACK delegate by default, or through its builtin kernels.

Both paths compute the same integer arithmetic up to requantization rounding (XNNPACK and the
builtin kernels round the int32 -> int8 rescale differently, by at most one step per
requantization), so their top-1 classes may differ on near-ties: images whose two best logits
are within TIE_BAND_STEPS output quantization steps of each other, where a one-step rounding
move of each logit can swap them. Agreement is therefore judged on the other ("decisive")
images; raw agreement is recorded beside it. The band is a heuristic, not a proof: a one-step
difference in an early layer can grow on its way to the logits. Measured on the reference
networks it stays at one step (max diff 1.0 step between XNNPACK and builtin kernels, and
between ORT's fused and unfused u8u8 kernels), so 2 steps leaves a margin. Saturation is no rounding: it moves logits by tens of steps (2.18 logits at a
0.05-0.1 output step in the AVX2 case) and flips decisive images. Where the paths differ there,
the file's parity (measured on the fast path, the runtime's default) is a property of this
CPU's kernels, not of the file, and the verdict names the runtime option to avoid.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.variants import Format, file_format
from edgekit.verify.agreement import compare
from edgekit.runtimes import RUNTIMES

# Two logits, each moved by at most one output step of rounding, can swap when their gap is
# at most two steps: such images are near-ties, not evidence against the kernels.
TIE_BAND_STEPS = 2.0


@dataclass(frozen=True)
class KernelPair:
    """A runtime's fast path and reference path (edgekit.runtimes.KernelPaths) with its name."""
    runtime: str          # edgekit.runtimes.RUNTIMES name
    fast: dict
    fast_label: str
    reference: dict
    reference_label: str
    avoid: str


PAIRS: dict[str, KernelPair] = {name: KernelPair(name, **dataclasses.asdict(rt.kernels))
                                for name, rt in RUNTIMES.items() if rt.kernels is not None}


def pair_for(path: str | Path) -> KernelPair:
    from edgekit.runtimes import runtime_for

    return PAIRS[runtime_for(path).name]


def fast_outputs(path: str | Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The file's outputs on its runtime's fast (default) path: the outputs parity judges."""
    from edgekit.runtimes import get_runtime

    pair = pair_for(path)
    return get_runtime(pair.runtime).open(path, threads=1, **pair.fast).predict(x, batch_size=batch_size)


def kernel_fidelity(path: str | Path, x: np.ndarray, threshold: float | None = None,
                    fast: np.ndarray | None = None, encoding: str | None = None,
                    batch_size: int = 256) -> dict:
    """Fast path vs reference path of one file on the same inputs, as a manifest record.

    `fast` is the fast path's outputs on `x` when the caller already has them (export does: its
    parity run), so the check costs one more predict. `encoding` is an ONNX int8 file's weight
    encoding, which decides what the verdict suggests. "avoid" is None unless agreement is below
    `threshold`."""
    from edgekit.runtimes import get_runtime

    pair = pair_for(path)
    if fast is None:
        fast = fast_outputs(path, x, batch_size)
    ref = get_runtime(pair.runtime).open(path, threads=1, **pair.reference).predict(x, batch_size=batch_size)
    result = compare(ref, fast).to_dict()  # a non-finite diff becomes None
    result.update(decisive_agreement(ref, fast, output_step(path)))
    return fidelity_record(pair, result, threshold, encoding)


def output_step(path: str | Path) -> float | None:
    """The float value of one step of the file's quantized output (its last requantization):
    the TFLite int8 output's scale, or the scale of the DequantizeLinear that makes an ONNX
    graph's output. None when the output is not quantized."""
    path = Path(path)
    if file_format(path, "the output step") is Format.TFLITE:
        from edgekit.runtimes import open_file

        quant = open_file(path, threads=1, xnnpack=False).output_quant
        return float(quant[0]) if quant is not None and quant[0] > 0 else None
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    name = model.graph.output[0].name
    while name in producer:
        node = producer[name]
        if node.op_type == "DequantizeLinear":
            scale = inits.get(node.input[1])
            value = None if scale is None else numpy_helper.to_array(scale)
            return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None
        if node.op_type not in ("Identity", "Reshape", "Flatten", "Squeeze", "Transpose"):
            return None
        name = node.input[0]
    return None


def decisive_agreement(reference: np.ndarray, fast: np.ndarray, step: float | None) -> dict:
    """Top-1 agreement on the images whose reference top-2 gap exceeds TIE_BAND_STEPS output
    steps (all images when the output is not quantized), and the worst difference in steps."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(fast, np.float64).reshape(len(fast), -1)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    gap = top2[:, 1] - top2[:, 0]
    band = TIE_BAND_STEPS * step if step else 0.0
    decisive = gap > band * (1 + 1e-6)  # a gap of exactly two steps is still a near-tie
    same = ref.argmax(1) == out.argmax(1)
    with np.errstate(invalid="ignore", over="ignore"):
        worst = float(np.abs(out - ref).max()) if len(ref) else 0.0
    return {"output_step": step, "tie_band_steps": TIE_BAND_STEPS if step else 0.0,
            "decisive_samples": int(decisive.sum()),
            # None: every image is a near-tie, so nothing was judged (the gate says "not measured")
            "decisive_agreement": float(same[decisive].mean()) if decisive.any() else None,
            "max_abs_diff_steps": (worst / step) if step and np.isfinite(worst) else None}


def fidelity_record(pair: KernelPair, result: dict[str, Any], threshold: float | None,
                    encoding: str | None = None) -> dict:
    """The record for a compare() result of fast-path outputs against reference-path outputs."""
    from edgekit.core import machine
    cpu = machine.describe()
    judged = result.get("decisive_agreement", result["agreement"])
    below = threshold is not None and judged is not None and judged < threshold
    return {"runtime": pair.runtime, "fast": pair.fast_label, "reference": pair.reference_label,
            "samples": int(result["samples"]), "agreement": float(result["agreement"]),
            "decisive_agreement": None if judged is None else float(judged),
            "decisive_samples": int(result.get("decisive_samples", result["samples"])),
            "tie_band_steps": result.get("tie_band_steps", 0.0), "output_step": result.get("output_step"),
            "max_abs_diff_steps": result.get("max_abs_diff_steps"),
            "max_abs_diff": result["max_abs_diff"], "cpu_class": cpu["cpu_class"],
            "cpu_model": cpu["cpu_model"], "encoding": encoding,
            "avoid": avoid_text(pair, cpu["cpu_class"], encoding) if below else None}


def avoid_text(pair: KernelPair, cpu_class: str, encoding: str | None = None) -> str:
    """What a deployer should not run this file with, and what to do instead. `encoding` is set
    only for int8 ONNX files: a saturating (u8s8) one can also be re-exported as u8u8."""
    text = pair.avoid.format(cpu_class=cpu_class)
    if encoding is not None and encoding != "u8u8":
        text += ' or re-export with onnx_int8_encoding = "u8u8"'
    return text
