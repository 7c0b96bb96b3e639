"""One export variant: make its file atomically, validate it on its runtime, judge it against the
profile, and return its manifest record (never raising for the variant's own failure).

Also what decides whether a recorded variant is still current (variant_key), the record of a
variant that was not made, and how failures are reported (loud).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import rundir
from edgekit.core.config import Profile
from edgekit.core.progress import Progress
from edgekit.core.export_records import QatRecord, Status, VariantRecord
from edgekit.core.variants import Format, Reference, Variant, VariantClass
from edgekit.core.resources import peak_rss_mb, release_memory, reset_peak_rss
from edgekit.errors import ExportError, ModelError, one_line
from edgekit.export.job import ExportContext, ModelJob
from edgekit.verify.agreement import ParityResult

NO_CALIBRATION = "needs calibration data; pass --calibration-data FILE.npz with x (model inputs)"


def variant_key(variant: Variant, profile: Profile, source: dict, job: ModelJob, qat: QatRecord | None) -> str:
    """Same key = same file and same verdict: the variant, the settings that shape it, the
    thresholds that judge it, and the hashes of the source model, the data and the QAT model."""
    th = profile.thresholds_for(variant.name, variant.variant_class)
    config = {"variant": variant.name, "opset": profile.onnx_opset, "parity_samples": profile.parity_samples,
              "thresholds": dataclasses.asdict(th), "data": job.data_key,
              "representative_samples": profile.representative_samples if variant.needs_calibration else None,
              "onnx_int8_encoding": profile.onnx_int8_encoding if _is_onnx_int8(variant) else None,
              # what the record holds: a record made before these were measured is not current
              "measures": ("parity", "weight_bytes", "expected_size", "output_error", "peak_rss", "metadata")
                          + (("kernel_fidelity-tieband",) if _is_int8(variant) else ()),
              "max_near_tie_share": profile.max_near_tie_share,
              "labels": list(job.labels) if job.labels else None,
              "emulated_cpus": _emulated_cpus(profile) if _is_int8(variant) else None,
              # parity and kernel fidelity are measured on this CPU's kernels with these runtimes:
              # a run directory carried to another machine re-measures instead of reusing verdicts
              "measured_on": _measured_on()}
    inputs = [source["sha256"]]
    if variant.needs_qat:
        qat_file = qat.file if qat is not None else None
        inputs.append(qat_file["sha256"] if qat_file else "no-qat-model")
    return rundir.stage_key("export", config, inputs)


def _measured_on() -> dict:
    from edgekit.core import machine
    cpu, v = machine.describe(), rundir.versions(RUNTIME_DISTS)
    return {"cpu_model": cpu["cpu_model"], "int8_flags": cpu["int8_flags"],
            **{k: v.get(k) for k in ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert")}}


def _is_int8(variant: Variant) -> bool:
    return variant.is_int8


def _is_onnx_int8(variant: Variant) -> bool:
    return variant.format == Format.ONNX and variant.is_int8


def _emulated_cpus(profile: Profile) -> dict[str, bool] | None:
    """The emulated parity CPUs and whether each can run here: a record made while qemu was
    missing (rows "not measured") is redone once it is installed."""
    from edgekit.verify import emulation
    cpus = [c for c in profile.parity_cpus if c != "native"]
    return {c: emulation.available(c)[0] for c in cpus} or None


def _blank_record(variant: Variant, key: str, status: Status, error: str | None,
                  profile: Profile | None = None) -> VariantRecord:
    """The record of a variant with no file; with `profile`, the ONNX int8 encoding it was tried with."""
    encoding = profile.onnx_int8_encoding if profile is not None and _is_onnx_int8(variant) else None
    return VariantRecord.blank(status=status, error=error, key=key, format=variant.format,
                               variant_class=variant.variant_class, reference=variant.reference,
                               description=variant.description, onnx_int8_encoding=encoding)


@dataclass(frozen=True)
class Measured:
    """What one made file gave before it is judged: its I/O, its parity against its reference
    model and (int8 files) kernel fidelity, the int8 audit and parity on emulated CPUs."""
    inputs: list[dict]
    outputs: list[dict]
    parity: ParityResult
    weight_bytes: int
    expected_size: dict | None = None    # what the route would store (edgekit.verify.expected_size)
    parity_error: dict | None = None     # output error and the reference's margins (edgekit.verify.output_error)
    kernel_fidelity: dict | None = None
    audit: dict | None = None
    emulated_parity: tuple[dict, ...] = ()


def export_variant(ctx: ExportContext, variant: Variant, key: str) -> VariantRecord:
    """Make one file atomically, validate it, judge it. Never raises for a variant's own failure."""
    final = ctx.out_dir / f"{variant.name}{variant.suffix}"
    why_not = _cannot_make(ctx, variant)
    if why_not is not None:
        return _skip(ctx, final, variant, key, *why_not)
    t0 = time.monotonic()
    release_memory()
    reset_peak_rss()   # this variant's peak: conversion, parity, fidelity, audit
    try:
        measured = _make_and_measure(ctx, variant, final)
    except Exception as e:  # a conversion library's own error types vary; record it, go on
        if final.is_file():  # a stale file of an earlier run must not outlive this failure
            final.unlink()
        error = one_line(e, limit=500, where=True)
        loud(ctx.progress, ctx.job.name, variant.name, error)
        return dataclasses.replace(_blank_record(variant, key, Status.FAILED, error, ctx.profile),
                                   seconds=round(time.monotonic() - t0, 3), peak_rss_mb=peak_rss_mb())
    rec = _measured_record(ctx, variant, key, final, measured, seconds=round(time.monotonic() - t0, 3))
    rec = dataclasses.replace(rec, peak_rss_mb=peak_rss_mb())
    rec = _judged(ctx, variant, rec)
    _report(ctx, variant, rec)
    return rec


def _cannot_make(ctx: ExportContext, variant: Variant) -> tuple[Status, str] | None:
    """(status, why) when what the variant is made from is missing: calibration data, the QAT model."""
    if variant.needs_calibration and not ctx.have_calibration:
        return Status.SKIPPED, NO_CALIBRATION
    if variant.needs_qat and ctx.qat is not None and ctx.qat.problem:
        return ctx.qat.status, ctx.qat.problem
    return None


def _make_and_measure(ctx: ExportContext, variant: Variant, final: Path) -> Measured:
    """Convert into a temporary name, measure the file there; it is renamed to `final` only when
    every measurement ran (a failure raises, and no file is left)."""
    from edgekit.convert.converters import io_details
    from edgekit.verify.audit import audit_int8
    from edgekit.verify.expected_size import expected_size
    from edgekit.verify.fidelity import fast_outputs, kernel_fidelity
    from edgekit.verify.output_error import parity_error_record
    from edgekit.verify.parity import compare
    from edgekit.verify.weight_bytes import weight_bytes

    job, reference = ctx.job, ctx.ref_outputs[variant.reference]
    th = ctx.profile.thresholds_for(variant.name, variant.variant_class)
    encoding = ctx.profile.onnx_int8_encoding if _is_onnx_int8(variant) else None
    with rundir.atomic_path(final) as tmp:
        try:
            variant.make(ctx.inputs, tmp)   # its io_dtype check reads the file back
        except ModelError as e:
            raise _unloadable(variant, tmp, final, e) from e
        try:
            ins, outs = io_details(tmp)
            outputs = fast_outputs(tmp, job.x_parity)  # the runtime's default path, as users run it
        except (ModelError, RuntimeError, ValueError) as e:   # the runtime's own load/prepare errors
            raise _unloadable(variant, tmp, final, e) from e
        measured = Measured(inputs=ins, outputs=outs, parity=compare(reference, outputs, job.y_parity),
                            weight_bytes=int(weight_bytes(tmp)),
                            expected_size=expected_size(tmp, variant.variant_class).to_dict(),
                            parity_error=parity_error_record(reference, outputs, ctx.profile.max_near_tie_share))
        if not _is_int8(variant):
            return measured
        # one more predict: the same file on the runtime's reference kernels
        fidelity = kernel_fidelity(tmp, job.x_parity, th.min_kernel_agreement, fast=outputs, encoding=encoding)
        return dataclasses.replace(measured, kernel_fidelity=fidelity, audit=audit_int8(tmp),
                                   emulated_parity=_emulated(ctx, variant, tmp, th.min_kernel_agreement, encoding))


def _unloadable(variant: Variant, tmp: Path, final: Path, e: Exception) -> ExportError:
    """A converted file its own runtime rejects: named by its final name, with the runtime's reason
    and what the user can do (converting again the same way would make the same file)."""
    reason = one_line(e, limit=400).replace(str(tmp), final.name).removesuffix("; re-export it")
    return ExportError(f"{reason}; the converter made a file its runtime rejects: drop '{variant.name}' from "
                       f"the profile's variants, or keep the layer the reason names float (see logs/export.log)")


def _emulated(ctx: ExportContext, variant: Variant, path: Path, min_kernel_agreement: float | None,
              encoding: str | None) -> tuple[dict, ...]:
    """Parity of an int8 file on the profile's emulated CPUs (none: nothing to run)."""
    from edgekit.verify.cpu_parity import ParitySample, emulated_parity

    cpus = [c for c in ctx.profile.parity_cpus if c != "native"]
    if not cpus:
        return ()
    ctx.progress.update(f"{variant.name}: parity on emulated CPUs {', '.join(cpus)}", model=ctx.job.name)
    sample = ParitySample(x=ctx.job.x_parity, reference=ctx.ref_outputs[variant.reference],
                          float_outputs=ctx.ref_outputs[Reference.FLOAT], labels=ctx.job.y_parity)
    return tuple(emulated_parity(path, sample, ctx.profile.parity_cpus, min_kernel_agreement, encoding))


def _measured_record(ctx: ExportContext, variant: Variant, key: str, final: Path, m: Measured,
                     seconds: float) -> VariantRecord:
    """The record of a made file, not judged yet (status ok, no checks)."""
    from edgekit.verify.parity import accuracy_drop_points

    file_rec = dict(rundir.file_record(ctx.run_dir, final), weight_bytes=m.weight_bytes,
                    expected_size=m.expected_size)
    parity = dict(m.parity.to_dict(), **(m.parity_error or {}))
    parity["float_accuracy"] = ctx.float_acc
    parity["accuracy_drop_points"] = accuracy_drop_points(ctx.float_acc, m.parity.accuracy)
    return dataclasses.replace(_blank_record(variant, key, Status.OK, None, ctx.profile),
                               file=file_rec, files=(file_rec,), inputs=tuple(m.inputs), outputs=tuple(m.outputs),
                               parity=parity, kernel_fidelity=m.kernel_fidelity, audit=m.audit,
                               emulated_parity=m.emulated_parity or None, seconds=seconds)


def _judged(ctx: ExportContext, variant: Variant, rec: VariantRecord) -> VariantRecord:
    """The profile's verdict on a made file (edgekit.verify.judge, as the gate judges it): a file
    below its thresholds is failed, loudly, and kept for inspection."""
    from edgekit.verify.judge import describe_failures, judge_file

    th = ctx.profile.thresholds_for(variant.name, variant.variant_class)
    fp32 = None if variant.variant_class is VariantClass.FLOAT else ctx.fp32_files.get(variant.format)
    checks = judge_file(th, rec, fp32, max_near_tie_share=ctx.profile.max_near_tie_share)
    failures = describe_failures(checks)
    if not failures:
        return dataclasses.replace(rec, checks=checks)
    error = f"below the profile's thresholds: {failures}"
    loud(ctx.progress, ctx.job.name, variant.name, error + f" (file kept: {rec.file['path']})")
    return dataclasses.replace(rec, checks=checks, status=Status.FAILED, error=error)


def _report(ctx: ExportContext, variant: Variant, rec: VariantRecord) -> None:
    """One progress line for a file that passed: its size and the figures it was judged on."""
    if rec.status != Status.OK:
        return
    unmeasured = [c.name for c in rec.checks if c.passed is None]
    p, f = rec.parity, rec.file
    acc = "" if p["accuracy"] is None else f" accuracy={p['accuracy']:.4f}"
    kernels = "" if rec.kernel_fidelity is None else f" kernel_agreement={rec.kernel_fidelity['agreement']:.4f}"
    diff = "nan" if p["max_abs_diff"] is None else f"{p['max_abs_diff']:.3g}"
    snr = (f" judged by output error: snr={p['output_error']['snr_db']:.1f} dB (reference outputs are near ties)"
           if p.get("judged_by") == "output_error" and p.get("output_error", {}).get("snr_db") is not None else "")
    ctx.progress.update(f"{variant.name} ok: {f['size_bytes'] / 1024:.1f} KiB (weights "
                        f"{f['weight_bytes'] / 1024:.1f} KiB) agreement={p['agreement']:.4f} "
                        f"max_abs_diff={diff}{acc}{kernels}{snr}"
                        + (f" (not measured: {', '.join(unmeasured)})" if unmeasured else ""),
                        model=ctx.job.name)


def _skip(ctx: ExportContext, final: Path, variant: Variant, key: str, status: Status, why: str) -> VariantRecord:
    if final.is_file():  # the manifest must not list, nor the folder hold, a file it no longer vouches for
        final.unlink()
    if status == Status.FAILED:
        loud(ctx.progress, ctx.job.name, variant.name, why)
    else:
        ctx.progress.update(f"{variant.name} skipped: {why}", model=ctx.job.name)
    return _blank_record(variant, key, status, why)


def loud(progress: Progress, model: str, variant: str, message: str) -> None:
    """A failed variant is never quiet: a progress line, and a line on stderr even with --quiet."""
    progress.update(f"{variant} FAILED: {message}", model=model)
    if progress.quiet or progress.stream is not sys.stderr:
        print(f"edgekit: export {model} {variant} FAILED: {message}", file=sys.stderr, flush=True)
