"""int8 parity on CPUs nobody here owns: the same file run under qemu-user (edgekit.verify.emulation).

ONNX Runtime and XNNPACK pick their integer kernels by CPU feature, so a file that passes on
this machine may compute something else on an AVX2 CI runner or an ARM board. A profile's
`parity_cpus` names the other CPU classes to prove; for each, the file runs on that CPU's fast
path (what users get there), and the gate judges the same thresholds as natively: top-1
agreement with the source model, accuracy drop, and kernel agreement with the file's reference
path (ORT without graph optimizations, LiteRT builtin kernels). The reference path is run once,
natively: it is the graph's own meaning and differs between CPUs by float rounding at most
(emulated and native reference outputs were identical on the quick run's files), while running
it under qemu took three quarters of the emulated time.
Rows are labelled as emulated; latency is never measured under emulation. A CPU that cannot be
emulated here is a visible "not measured" row with its reason, never a pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core.config import Thresholds
from edgekit.core.metrics import top1_accuracy
from edgekit.verify.agreement import accuracy_drop_points, compare
from edgekit.errors import one_line

# Under qemu one file takes ~6 s (fast path) + ~18 s (reference path) per 1,000 images on an idle
# core (bench/RESULTS.md): 1,000 images keep each CPU's agreement in steps of 0.001.
EMULATED_PARITY_SAMPLES = 1000
# A hung or pathologically slow emulation must not hang the export: the ResNet's files take
# about 2 min per CPU here, so 15 min is far beyond a working run.
EMULATION_TIMEOUT_S = 900


@dataclass(frozen=True)
class ParitySample:
    """The images a file is judged on and what its source models answered on them."""
    x: np.ndarray
    reference: np.ndarray          # the reference Keras model's outputs (float or QAT, per variant)
    float_outputs: np.ndarray      # the float source model's: the accuracy drop is measured from it
    labels: np.ndarray | None


def emulated_parity(path: str | Path, sample: ParitySample, cpus: tuple[str, ...], kernel_threshold: float | None,
                    encoding: str | None = None, samples: int = EMULATED_PARITY_SAMPLES) -> list[dict]:
    """One record per non-native CPU in `cpus`: parity with `sample.reference`, accuracy drop
    against `sample.float_outputs`, and the fast-vs-reference kernel agreement under that CPU.
    A CPU that cannot run here gets status "skipped" and the reason."""
    from edgekit.verify import emulation
    from edgekit.verify.fidelity import avoid_text, decisive_agreement, output_step, pair_for
    from edgekit.runtimes import get_runtime

    x, reference, float_outputs, labels = sample.x, sample.reference, sample.float_outputs, sample.labels
    n = min(samples, len(x))
    records = []
    pair = pair_for(path)
    native_reference = None  # computed once, only when some CPU can be emulated
    for cpu in cpus:
        if cpu == "native":
            continue
        base = {"cpu": cpu, "label": emulation.label(cpu), "samples": n}
        ok, why = emulation.available(cpu)
        if not ok:
            records.append({**base, "status": "skipped", "reason": why})
            continue
        try:
            out = emulation.run_emulated(cpu, [Path(path)], x[:n], timeout_s=EMULATION_TIMEOUT_S,
                                         kinds=("fast",))[str(Path(path))]
        except Exception as e:  # qemu crashed or timed out: this CPU's rows fail; native results stand
            records.append({**base, "status": "error", "reason": one_line(e)})
            continue
        if native_reference is None:
            native_reference = get_runtime(pair.runtime).open(path, threads=1, **pair.reference).predict(x[:n])
        y = None if labels is None else labels[:n]
        par = compare(reference[:n], out["fast"], y)
        kern = decisive_agreement(native_reference, out["fast"], output_step(path))
        float_acc = top1_accuracy(float_outputs[:n], y)
        below = (kernel_threshold is not None and kern["decisive_agreement"] is not None
                 and kern["decisive_agreement"] < kernel_threshold)
        records.append({**base, "status": "ok", "reason": None, "agreement": par.agreement,
                        "accuracy": par.accuracy, "max_abs_diff": par.to_dict()["max_abs_diff"],
                        "accuracy_drop_points": accuracy_drop_points(float_acc, par.accuracy),
                        "kernel_agreement": kern["decisive_agreement"],
                        "kernel_agreement_all": float(compare(native_reference, out["fast"]).agreement),
                        "kernel_decisive_samples": kern["decisive_samples"],
                        "kernel_max_abs_diff_steps": kern["max_abs_diff_steps"],
                        "kernel_reference": f"{pair.reference_label} (native)",
                        "avoid": avoid_text(pair, cpu, encoding) if below else None})
    return records


def emulated_checks(th: Thresholds, records: list[dict] | None) -> list[dict]:
    """Gate rows for the emulated CPUs, named `<threshold>@<cpu>`, in parity.check_thresholds' form."""
    rows: list[dict] = []
    for rec in records or []:
        cpu = rec["cpu"]
        wanted = [("min_agreement", th.min_agreement, "agreement"),
                  ("max_accuracy_drop", th.max_accuracy_drop, "accuracy_drop_points"),
                  ("min_kernel_agreement", th.min_kernel_agreement, "kernel_agreement")]
        for name, limit, key in wanted:
            if limit is None:
                continue
            row = {"name": f"{name}@{cpu}", "limit": limit}
            value = rec.get(key) if rec.get("status") == "ok" else None
            if rec.get("status") == "error":  # the emulation broke: a failure to look at, not a skip
                rows.append({**row, "value": None, "passed": False,
                             "note": f"emulation failed on {rec['label']}: {rec.get('reason')}"})
                continue
            if value is None:
                why = rec.get("reason") or ("all images are near-ties" if key == "kernel_agreement"
                                            else "no labels on the parity sample")
                rows.append({**row, "value": None, "passed": None, "note": f"not measured on {rec['label']}: {why}"})
                continue
            passed = value >= limit if name.startswith("min_") else value <= limit
            row.update(value=value, passed=passed, note=f"{rec['label']}, {rec['samples']} images")
            if not passed and name == "min_kernel_agreement" and rec.get("avoid"):
                row["avoid"] = rec["avoid"]
            rows.append(row)
    return rows
