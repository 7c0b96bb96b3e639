"""Parity that means something when outputs have no margin: judge by output error then.

Top-1 agreement is evidence only where the reference's top two outputs are apart. With random
weights (a stock architecture nobody trained, a user's untrained model) nearly every sample is
a near tie, every file "agrees" 1.0 or flips at random, and agreement proves nothing either way.
So the reference outputs' top-1 margins are recorded (edgekit.core.metrics.top1_margin: the gap
between the top two class probabilities, logits turned into probabilities first) and, when more than `Profile.max_near_tie_share` of the samples fall inside
the near-tie band, parity is judged by output error (SNR in dB against `min_snr_db`) in
min_agreement's place; the record and the row's note say which was used and why. Kernel fidelity
has the same idea per image (edgekit.verify.fidelity.TIE_BAND_STEPS, in output steps).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit.core.metrics import OutputError, output_error, top1_margin

# A sample is a near tie when its top two probabilities are within two steps of an int8 softmax
# output (TFLite fixes its scale at 1/256): rounding each of the two outputs by half a step moves
# the gap by one step, one more for the rounding inside the network, as kernel fidelity's 2-step
# band. Float and fp16 files move far less, so the band is generous there.
NEAR_TIE_BAND = 2.0 / 256.0
DEFAULT_MAX_NEAR_TIE_SHARE = 0.5   # "most samples": the same default as Profile.max_near_tie_share

# Output SNR a file needs against its reference when parity is judged by output error, by variant
# class, from the arithmetic of what each route rounds (not from one machine's run):
# - float: the same float32 math in another order (fused kernels, other summation order): relative
#   error ~ sqrt(K) * 2^-24 per layer, 1e-6..1e-5 after a deep net (100-120 dB). 60 dB (relative
#   error 1e-3) fails only a file that computes something else.
# - fp16: weights rounded to 11 significant bits, RMS 2^-11/sqrt(3) = 2.8e-4 relative (-71 dB) per
#   layer, activations too where a CPU computes in fp16; errors of L layers add in power, 50 layers
#   -54 dB. 40 dB (1% relative error) leaves 14 dB for growth through the network.
# - dynamic: int8 weights per channel, step max|w|/127 ~ 3.5 sigma/127, RMS error step/sqrt(12) ~
#   0.8% of the weights' RMS (-42 dB), plus activations quantized on the fly (~-40 dB): ~-38 dB per
#   layer, 20 layers ~-25 dB. 20 dB (10% relative error).
# - int8 (PTQ, QAT): the same weights, static activation ranges calibrated to outliers (a ReLU
#   range ~6 sigma over 255 steps: -43 dB per tensor), two or three roundings per layer and an
#   8-bit output: ~-24 dB after 20 layers, less on deep nets. 15 dB (18% relative error); a QAT
#   file is compared with its QAT model, which already rounds alike, so the same floor is loose.
DEFAULT_MIN_SNR_DB: dict[str, float] = {"float": 60.0, "fp16": 40.0, "dynamic": 20.0,
                                        "int8-ptq": 15.0, "int8-qat": 15.0}


@dataclass(frozen=True)
class Margins:
    """The reference outputs' top-1 margins on the parity sample (units: the output range)."""
    samples: int
    near_tie_band: float
    near_tie_share: float          # share of samples with margin <= near_tie_band
    median_margin: float
    min_margin: float
    top_class_share: float         # share of samples in the reference's most frequent top-1 class:
                                   # near 1, agreement is input-independent (recorded, not judged)

    def to_dict(self) -> dict:
        return asdict(self)


def margins(reference_outputs: Any, band: float = NEAR_TIE_BAND) -> Margins:
    """Summarize how decisive the reference outputs are: the share of near ties, the median margin."""
    m = top1_margin(reference_outputs)
    top = np.asarray(reference_outputs).reshape(len(m), -1).argmax(axis=1)
    return Margins(samples=int(len(m)), near_tie_band=float(band),
                   near_tie_share=float(np.mean(m <= band * (1 + 1e-9))),
                   median_margin=float(np.median(m)), min_margin=float(m.min()),
                   top_class_share=float(np.bincount(top).max() / len(top)))


def margin_free(m: Margins | dict, max_near_tie_share: float = DEFAULT_MAX_NEAR_TIE_SHARE) -> bool:
    """Too many near ties for top-1 agreement to mean anything: more than `max_near_tie_share`."""
    share = m.near_tie_share if isinstance(m, Margins) else m.get("near_tie_share")
    return share is not None and share > max_near_tie_share


def parity_error_record(reference_outputs: Any, outputs: Any, max_near_tie_share: float,
                        band: float = NEAR_TIE_BAND) -> dict:
    """What export adds to a file's parity record: the output error (relative error, SNR, cosine),
    the reference margins, and `judged_by` ("top1_agreement" or "output_error") with why."""
    m = margins(reference_outputs, band)
    err: OutputError = output_error(reference_outputs, outputs)
    return {"output_error": err.to_dict(), "margins": m.to_dict(),
            **parity_error_record_from_margins(m.to_dict(), max_near_tie_share)}


def min_snr_db_for(thresholds: Any, variant_class: str) -> float | None:
    """The profile's min_snr_db for this file, else the class default (None: unknown class)."""
    given = getattr(thresholds, "min_snr_db", None)
    return given if given is not None else DEFAULT_MIN_SNR_DB.get(str(variant_class))


def judge_parity_rows(rows: list[dict], parity: dict | None, thresholds: Any, variant_class: str,
                      max_near_tie_share: float | None = None) -> list[dict]:
    """The threshold rows (edgekit.verify.parity.check_thresholds) with parity judged the way the
    record says: on margin-free outputs min_agreement is recorded but not judged (passed None, a
    note saying why) and a min_snr_db row (the class default unless the profile sets one) is judged
    for every class, since accuracy and agreement on near ties say little; a min_snr_db the
    profile sets is judged always. `max_near_tie_share` (the judging profile's; None: the one export recorded with)
    decides anew from the recorded margins, so the gate judges by its own profile. Records
    without output error (older runs) keep their rows as they were."""
    parity = dict(parity or {})
    if "output_error" not in parity:
        return rows
    if max_near_tie_share is not None and parity.get("margins"):
        m = parity["margins"]
        decided = parity_error_record_from_margins(m, max_near_tie_share)
        parity.update(decided)
    by_error = parity.get("judged_by") == "output_error"
    out = []
    for r in rows:
        if by_error and r.get("name") == "min_agreement":
            r = {**r, "passed": None, "note": f"not judged: {parity.get('judged_by_reason', 'margin-free outputs')}"}
        out.append(r)
    explicit = getattr(thresholds, "min_snr_db", None)
    if explicit is not None or by_error:   # margin-free: every class is judged by its output error
        limit = min_snr_db_for(thresholds, variant_class)
        if limit is not None:
            out.append(snr_row(parity, limit, default=explicit is None))
    return out


def parity_error_record_from_margins(m: dict, max_near_tie_share: float) -> dict:
    """`judged_by` and its reason for recorded margins (Margins.to_dict) under a near-tie share limit."""
    share, n, band = m.get("near_tie_share", 0.0), m.get("samples", 0), m.get("near_tie_band", NEAR_TIE_BAND)
    free = margin_free(m, max_near_tie_share)
    why = (f"{share:.0%} of {n} samples are near ties (top-1 margin <= {band:.3g} in probability; more "
           f"than {max_near_tie_share:.0%}): top-1 agreement proves nothing there, so parity is judged "
           f"by output error" if free else
           f"{share:.0%} of samples are near ties (at most {max_near_tie_share:.0%}): judged by top-1 agreement")
    return {"max_near_tie_share": max_near_tie_share, "judged_by": "output_error" if free else "top1_agreement",
            "judged_by_reason": why}


def snr_row(parity: dict, limit: float, default: bool = False) -> dict:
    """min_snr_db judged on a parity record's output error; None (non-finite outputs) fails."""
    err = parity.get("output_error") or {}
    v = err.get("snr_db")
    rel, cos = err.get("relative_error"), err.get("cosine")
    note = ("outputs are not finite (NaN or inf)" if v is None else
            f"output SNR {v:.1f} dB (relative error {rel:.3g}, cosine {cos:.6f})"
            + (f" against the class default {limit:g} dB" if default else "")
            + ("; judged in place of top-1 agreement: " + parity.get("judged_by_reason", "")
               if parity.get("judged_by") == "output_error" else ""))
    return {"name": "min_snr_db", "limit": limit, "value": v, "passed": v is not None and v >= limit, "note": note}
