"""One export variant: make its file atomically, validate it on its runtime, judge it against the
profile, and return its manifest record (never raising for the variant's own failure).

Also what decides whether a recorded variant is still current (variant_key), the record of a
variant that was not made, and how failures are reported (loud).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import rundir
from edgekit.core.config import Profile
from edgekit.errors import one_line
from edgekit.export.job import ExportContext, ModelJob
from edgekit.core.progress import Progress
from edgekit.core.variants import Format, Variant, VariantClass

NO_CALIBRATION = "needs calibration data; pass --calibration-data FILE.npz with x (model inputs)"


def variant_key(variant, profile: Profile, source: dict, job: ModelJob, qat_rec: dict | None) -> str:
    """Same key = same file and same verdict: the variant, the settings that shape it, the
    thresholds that judge it, and the hashes of the source model, the data and the QAT model."""
    th = profile.thresholds_for(variant.name, variant.variant_class)
    config = {"variant": variant.name, "opset": profile.onnx_opset, "parity_samples": profile.parity_samples,
              "thresholds": dataclasses.asdict(th), "data": job.data_key,
              "representative_samples": profile.representative_samples if variant.needs_calibration else None,
              "onnx_int8_encoding": profile.onnx_int8_encoding if _is_onnx_int8(variant) else None,
              # what the record holds: a record made before these were measured is not current
              "measures": ("parity", "weight_bytes") + (("kernel_fidelity-tieband",) if _is_int8(variant) else ()),
              "emulated_cpus": _emulated_cpus(profile) if _is_int8(variant) else None,
              # parity and kernel fidelity are measured on this CPU's kernels with these runtimes:
              # a run directory carried to another machine re-measures instead of reusing verdicts
              "measured_on": _measured_on()}
    inputs = [source["sha256"]]
    if variant.needs_qat:
        qat_file = (qat_rec or {}).get("file")
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


def _blank_record(variant, key: str, status: str, error: str | None, profile: Profile | None = None) -> dict:
    rec = {"status": status, "error": error, "key": key, "format": variant.format,
           "variant_class": variant.variant_class, "reference": variant.reference,
           "description": variant.description, "file": None, "files": [], "inputs": [], "outputs": [],
           "parity": None, "kernel_fidelity": None, "audit": None, "checks": [], "seconds": 0.0}
    if profile is not None and _is_onnx_int8(variant):
        rec["onnx_int8_encoding"] = profile.onnx_int8_encoding
    return rec


def export_variant(ctx: ExportContext, variant, key: str) -> dict:
    """Make one file atomically, validate it, judge it. Never raises for a variant's own failure."""
    from edgekit.convert.converters import io_details
    from edgekit.verify.cpu_parity import emulated_parity
    from edgekit.verify.fidelity import fast_outputs, kernel_fidelity
    from edgekit.verify.parity import accuracy_drop_points, check_thresholds, compare, describe_failures
    from edgekit.verify.audit import audit_int8
    from edgekit.verify.weight_bytes import weight_bytes

    job, profile, progress, ref_outputs = ctx.job, ctx.profile, ctx.progress, ctx.ref_outputs
    suffix = variant.suffix if variant.suffix.startswith(".") else f".{variant.suffix}"
    final = ctx.out_dir / f"{variant.name}{suffix}"
    if variant.needs_calibration and not ctx.have_calibration:
        return _skip(ctx, final, variant, key, "skipped", NO_CALIBRATION)
    if variant.needs_qat and ctx.qat_problem:
        status, why = ctx.qat_problem
        return _skip(ctx, final, variant, key, status, f"needs the QAT model: {why}")

    th = profile.thresholds_for(variant.name, variant.variant_class)
    encoding = profile.onnx_int8_encoding if _is_onnx_int8(variant) else None
    t0 = time.monotonic()
    try:
        with rundir.atomic_path(final) as tmp:
            variant.make(ctx.inputs, tmp)
            ins, outs = io_details(tmp)
            outputs = fast_outputs(tmp, job.x_parity)  # the runtime's default path, as users run it
            result = compare(ref_outputs[variant.reference], outputs, job.y_parity)
            fidelity = audit = None
            emulated: list[dict] = []
            if _is_int8(variant):  # one more predict: the same file on the runtime's reference kernels
                fidelity = kernel_fidelity(tmp, job.x_parity, th.min_kernel_agreement, fast=outputs,
                                           encoding=encoding)
                audit = audit_int8(tmp)
                if any(c != "native" for c in profile.parity_cpus):
                    progress.update(f"{variant.name}: parity on emulated CPUs "
                                    f"{', '.join(c for c in profile.parity_cpus if c != 'native')}", model=job.name)
                    emulated = emulated_parity(tmp, job.x_parity, ref_outputs[variant.reference], ref_outputs["float"],
                                               job.y_parity, profile.parity_cpus, th.min_kernel_agreement, encoding)
            weights = weight_bytes(tmp)
    except Exception as e:  # a conversion library's own error types vary; record it, go on
        if final.is_file():  # a stale file of an earlier run must not outlive this failure
            final.unlink()
        error = one_line(e, limit=500, where=True)
        loud(progress, job.name, variant.name, error)
        rec = _blank_record(variant, key, "failed", error, profile)
        rec["seconds"] = round(time.monotonic() - t0, 3)
        return rec

    file_rec = dict(rundir.file_record(ctx.run_dir, final), weight_bytes=int(weights))
    parity = result.to_dict()
    parity["float_accuracy"] = ctx.float_acc
    parity["accuracy_drop_points"] = accuracy_drop_points(ctx.float_acc, result.accuracy)
    fp32 = {} if variant.variant_class is VariantClass.FLOAT else ctx.fp32_size.get(variant.format) or {}
    checks = check_thresholds(th, parity, file_rec["size_bytes"], fp32.get("size_bytes"),
                              weight_bytes=file_rec["weight_bytes"], fp32_weight_bytes=fp32.get("weight_bytes"),
                              kernel_fidelity=fidelity, emulated_parity=emulated)
    if audit is not None:
        checks.append({"name": "int8_audit", "limit": True, "value": bool(audit.get("passed")),
                       "passed": bool(audit.get("passed")), "note": audit.get("reason")})
    rec = _blank_record(variant, key, "ok", None, profile)
    rec.update({"file": file_rec, "files": [file_rec], "inputs": ins, "outputs": outs, "parity": parity,
                "kernel_fidelity": fidelity, "emulated_parity": emulated or None, "audit": audit, "checks": checks,
                "seconds": round(time.monotonic() - t0, 3)})
    failures = describe_failures(checks)
    if failures:
        rec["status"], rec["error"] = "failed", f"below the profile's thresholds: {failures}"
        loud(progress, job.name, variant.name, rec["error"] + f" (file kept: {file_rec['path']})")
    else:
        unmeasured = [c["name"] for c in checks if c["passed"] is None]
        acc = "" if result.accuracy is None else f" accuracy={result.accuracy:.4f}"
        kernels = "" if fidelity is None else f" kernel_agreement={fidelity['agreement']:.4f}"
        progress.update(f"{variant.name} ok: {file_rec['size_bytes'] / 1024:.1f} KiB (weights "
                        f"{file_rec['weight_bytes'] / 1024:.1f} KiB) agreement="
                        f"{result.agreement:.4f} max_abs_diff={result.max_abs_diff:.3g}{acc}{kernels}"
                        + (f" (not measured: {', '.join(unmeasured)})" if unmeasured else ""),
                        model=job.name)
    return rec


def _skip(ctx: ExportContext, final: Path, variant, key: str, status: str, why: str) -> dict:
    if final.is_file():  # the manifest must not list, nor the folder hold, a file it no longer vouches for
        final.unlink()
    if status == "failed":
        loud(ctx.progress, ctx.job.name, variant.name, why)
    else:
        ctx.progress.update(f"{variant.name} skipped: {why}", model=ctx.job.name)
    return _blank_record(variant, key, status, why)


def loud(progress: Progress, model: str, variant: str, message: str) -> None:
    """A failed variant is never quiet: a progress line, and a line on stderr even with --quiet."""
    progress.update(f"{variant} FAILED: {message}", model=model)
    if progress.quiet or progress.stream is not sys.stderr:
        print(f"edgekit: export {model} {variant} FAILED: {message}", file=sys.stderr, flush=True)
