"""`edgekit export`: every variant a profile asks for, each validated against its source model.

Per model: the float Keras model (and, when a variant needs it, a QAT model fine-tuned from it)
is converted into each variant (edgekit.convert), inside an atomic write, then the file is run
on its own runtime against its reference Keras model on the real test set (edgekit.parity),
int8 files are audited (edgekit.quantize), and the profile's thresholds are checked. Each
variant is recorded in the manifest as soon as it is done, so an interrupted export keeps what
it finished and a re-run skips every variant whose record is still fresh.

A variant that cannot be made is recorded as failed and the others go on; a variant below its
thresholds is marked failed but its file is kept, so it can be inspected.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit import rundir
from edgekit.config import Profile, profile_to_dict
from edgekit.errors import ConfigError, DataError, EdgekitError, ModelError, RunDirError
from edgekit.progress import Progress

QAT_BATCH_SIZE = 128
# HDF5, not .keras: tf_keras 2.21 saves a tfmot QAT model as .keras but cannot load it back
# ("Layer 'quantize_layer' expected 5 variables, but received 3"); .h5 round-trips exactly.
QAT_FILE = "qat.h5"
RANDOM_PARITY_SAMPLES = 500   # parity inputs for a user model given without any data
NO_CALIBRATION = "needs calibration data; pass --calibration-data FILE.npz with x (model inputs)"
NO_QAT_DATA = ("QAT needs labelled training data; pass --calibration-data FILE.npz with x (inputs) "
               "and y (labels)")
NO_QAT_LABELS = "QAT needs labels; add y (integer labels) to the --calibration-data .npz"


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


# ---------------------------------------------------------------------------------------------
# Public API

def export_run(run_dir: str | Path, profile: Profile, models=None, force: bool = False,
               progress: Progress | None = None) -> dict:
    """Export the models a training run made; returns the manifest's "export" section."""
    from edgekit.data import data_sha256, limit_training, load_dataset, split_validation, to_float
    from edgekit.errors import UntrustedModelError

    run_dir = Path(run_dir)
    variants = resolve_variants(profile)
    train = rundir.require_stage(run_dir, "train", f"run `edgekit train --out {run_dir}` first")
    trained = {n: r for n, r in train.get("models", {}).items() if r.get("status", "ok") == "ok"}
    names = tuple(models) if models else tuple(trained)
    missing = [n for n in names if n not in trained]
    if missing or not names:
        raise RunDirError(f"{run_dir}: no finished training for {missing or 'any model'}; "
                          f"run `edgekit train --model {','.join(missing) or 'all'} --out {run_dir}` first")
    progress, own_stage = _staged(progress)

    datasets: dict[tuple, Any] = {}
    for net in names:
        rec = trained[net]
        cfg = rec.get("config", {})
        dataset_name = cfg.get("dataset") or train.get("dataset", {}).get("name")
        where = (dataset_name, cfg.get("data_dir"), cfg.get("limit"))
        if where not in datasets:
            progress.update(f"loading data set {dataset_name}")
            ds = limit_training(load_dataset(dataset_name, cfg.get("data_dir")), cfg.get("limit"))
            datasets[where] = (ds, data_sha256(ds))
        ds, sha = datasets[where]
        model_path = rundir.resolve(run_dir, rec["model"])
        if not model_path.exists():
            raise RunDirError(f"{model_path} is missing although the manifest lists it; "
                              f"retrain it with `edgekit train --model {net} --force --out {run_dir}`")
        # edgekit's own file is trusted only while it is the file train wrote (hash checked before loading)
        recorded = next((f.get("sha256") for f in rec.get("files", []) if f.get("path") == rec["model"]), None)
        if recorded is None or rundir.sha256_file(model_path) != recorded:
            why = "no sha256 recorded" if recorded is None else "its sha256 changed"
            raise UntrustedModelError(
                f"{model_path} is not the file `edgekit train` wrote ({why}); "
                f"edgekit loads its own models only while intact: retrain with "
                f"`edgekit train --model {net} --force --out {run_dir}`, or export your file with --model")
        if rec.get("data_sha256") and rec["data_sha256"] != sha:
            raise RunDirError(f"data set '{dataset_name}' is not the data '{net}' was trained on (its hash "
                              f"changed); restore that data or retrain with `edgekit train --force`")
        seed = int(cfg.get("seed", 0))
        x_tr, y_tr, _, _ = split_validation(ds.x_train, ds.y_train, float(cfg.get("val_fraction", 0.1)), seed)
        n_par = len(ds.y_test) if profile.parity_samples is None else min(profile.parity_samples, len(ds.y_test))
        job = ModelJob(
            name=net, model_path=model_path,
            x_parity=to_float(ds.x_test[:n_par]), y_parity=ds.y_test[:n_par],
            x_fit=x_tr, y_fit=y_tr, seed=seed,  # uint8: QAT and calibration scale it themselves
            data_key={"data_sha256": sha, "val_fraction": cfg.get("val_fraction", 0.1), "seed": seed})
        data = {"parity": f"{ds.name} test set", "samples": int(n_par),
                "calibration_samples": min(profile.representative_samples, len(y_tr)),
                "qat_samples": int(len(y_tr)), "data_sha256": sha}
        export_one(run_dir, job, profile, variants, data, force=force, progress=progress)
    section = rundir.load_manifest(run_dir)["stages"]["export"]
    if own_stage:
        progress.done(_tally(section, names))
    return section


def export_model(model_path: str | Path, out_dir: str | Path, profile: Profile, calibration=None,
                 force: bool = False, progress: Progress | None = None, trust_model: bool = False) -> dict:
    """Export a user's Keras model (any input shape and class count) into `out_dir`, a run
    directory of its own. With a calibration .npz (x, optional y) it makes every variant;
    without one only those that need no data, and records the others as skipped.

    The file is scanned before anything loads it (edgekit.scan); a model holding code is refused
    (UntrustedModelError) unless trust_model=True, which runs the export in a contained subprocess
    (edgekit.contained) and records the findings in the manifest."""
    from edgekit import contained
    from edgekit.data import load_calibration
    from edgekit.runtimes.keras_tf import load_keras_model
    from edgekit.scan import check_model

    model_path, out_dir = Path(model_path), Path(out_dir)
    variants = resolve_variants(profile)
    scan = check_model(model_path, trust_model=trust_model)   # before any deserialization or write
    if trust_model and not contained.in_worker():
        return contained.export_contained(model_path, out_dir, profile, calibration, force=force, progress=progress)
    # scanned just above; safe mode stays on unless the user trusts the file (then we are the worker)
    model = load_keras_model(model_path, trust_model=trust_model, scanned=True)
    input_shape = _single_input_shape(model, model_path)
    name = model_path.stem if model_path.is_file() else model_path.name
    if calibration is not None:
        x, y = load_calibration(calibration, input_shape)
        classes = int(model.output_shape[-1])
        if y is not None and len(y) and (y.min() < 0 or y.max() >= classes):
            raise DataError(f"{calibration}: labels range {y.min()}..{y.max()} but the model outputs {classes} "
                            f"classes; labels must be 0..{classes - 1}")
    progress, own_stage = _staged(progress)
    if calibration is not None:
        n_par = len(x) if profile.parity_samples is None else min(profile.parity_samples, len(x))
        job = ModelJob(name=name, model_path=model_path, x_parity=x[:n_par],
                       y_parity=None if y is None else y[:n_par], x_fit=x, y_fit=y,
                       data_key={"calibration_sha256": rundir.sha256_file(calibration)})
        data = {"parity": "user sample", "samples": int(n_par), "labels": y is not None,
                "calibration": str(Path(calibration).resolve()),
                "calibration_samples": min(profile.representative_samples, len(x))}
    else:
        n_par = min(profile.parity_samples or RANDOM_PARITY_SAMPLES, RANDOM_PARITY_SAMPLES)
        x = np.random.default_rng(0).random((n_par, *input_shape), dtype=np.float32)
        job = ModelJob(name=name, model_path=model_path, x_parity=x, y_parity=None, x_fit=None, y_fit=None,
                       data_key={"random_parity_samples": n_par})
        data = {"parity": "random uniform [0, 1) inputs (no --calibration-data given)", "samples": n_par,
                "labels": False, "calibration_samples": 0}
        needing = [v.name for v in variants if v.needs_calibration or v.needs_qat]
        if needing:
            progress.update(f"no --calibration-data: skipping {', '.join(needing)} (they need data); "
                            f"making {', '.join(v.name for v in variants if v.name not in needing) or 'nothing'}")
    scan_rec = dict(scan.to_dict(), trust_model=trust_model, contained=contained.in_worker())

    def put_scan(m: dict) -> None:
        rundir.stage(m, "export").setdefault("models", {}).setdefault(name, {})["model_scan"] = scan_rec
    rundir.update_manifest(out_dir, put_scan)
    export_one(out_dir, job, profile, variants, data, force=force, progress=progress, model=model)
    section = rundir.load_manifest(out_dir)["stages"]["export"]
    if own_stage:
        progress.done(_tally(section, [name]))
    return section


def _staged(progress: Progress | None) -> tuple[Progress, bool]:
    """Progress lines name the stage (and estimate what is left) even when export runs alone;
    True when this call opened the stage (so it closes it too)."""
    progress = progress or Progress()
    if progress.stage_name:
        return progress, False
    progress.start_stage("export")
    return progress, True


def _tally(section: dict, names) -> str:
    counts: dict[str, int] = {}
    for net in names:
        for v in section.get("models", {}).get(net, {}).get("variants", {}).values():
            counts[v.get("status", "?")] = counts.get(v.get("status", "?"), 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# Validation

def resolve_variants(profile: Profile) -> list:
    """The profile's variants, checked against the registry; float ones first, because the
    others' size ratio is measured against the fp32 file of the same format."""
    from edgekit.convert import VARIANTS

    if not profile.variants:
        raise ConfigError(f"profile '{profile.name}' lists no variants; add variants = [...] "
                          f"with any of {', '.join(VARIANTS)}")
    unknown = [v for v in profile.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"profile '{profile.name}' lists unknown variants {unknown}; "
                          f"use any of {', '.join(VARIANTS)}")
    chosen = [VARIANTS[v] for v in dict.fromkeys(profile.variants)]
    return sorted(chosen, key=lambda v: v.variant_class != "float")


def _single_input_shape(model, path: Path) -> tuple[int, ...]:
    if isinstance(model.input_shape, list) or isinstance(model.output_shape, list):
        raise ModelError(f"{path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} "
                         f"outputs; edgekit exports single-input, single-output classifiers")
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ModelError(f"{path}: input shape {model.input_shape} has unknown dimensions; build the model "
                         f"with a fixed input shape, e.g. Input(shape=(32, 32, 1))")
    if len(model.output_shape) != 2:
        raise ModelError(f"{path}: output shape {model.output_shape} is not (batch, classes); "
                         f"export a classifier that outputs one vector of logits per image")
    return tuple(int(d) for d in shape)


# ---------------------------------------------------------------------------------------------
# One model

def export_one(run_dir: Path, job: ModelJob, profile: Profile, variants: list, data: dict,
               force: bool = False, progress: Progress | None = None, model=None) -> dict:
    """QAT (when needed), then every variant of one model; the manifest is updated after each.

    Work is planned from the keys first, so a re-run whose variants are all current loads no
    model and runs nothing (the pipeline's resume relies on that being quick)."""
    from edgekit.convert import ConversionInputs
    from edgekit.parity import predict_keras
    from edgekit.quantize import representative_set
    from edgekit.runtimes.keras_tf import load_keras_model

    progress = progress or Progress()
    run_dir = Path(run_dir)
    out_dir = run_dir / "export" / job.name
    source = rundir.file_record(run_dir, job.model_path)
    old = rundir.load_manifest(run_dir).get("stages", {}).get("export", {}).get("models", {}).get(job.name, {})

    def float_model():
        nonlocal model
        if model is None:
            progress.update("loading the float model", model=job.name)
            model = load_keras_model(job.model_path)
        return model

    qat_model, qat_rec = None, None
    if any(v.needs_qat for v in variants):
        qat_model, qat_rec = _qat(run_dir, job, float_model, source, profile, old.get("qat"), force, progress)
    keys = {v.name: _variant_key(v, profile, source, job, qat_rec) for v in variants}
    fresh = {v.name for v in variants
             if not force and rundir.is_fresh(run_dir, old.get("variants", {}).get(v.name), keys[v.name])}
    todo = [v for v in variants if v.name not in fresh]

    ref_outputs: dict[str, np.ndarray] = {}
    inputs = representative = None
    if todo or old.get("source", {}).get("sha256") != source["sha256"]:
        ref_outputs["float"] = predict_keras(float_model(), job.x_parity)
        header = {"source": source, "input_shape": [int(d) for d in job.x_parity.shape[1:]],
                  "num_classes": int(ref_outputs["float"].shape[-1]),
                  "float_accuracy": _accuracy(ref_outputs["float"], job.y_parity)}
    else:  # everything current: the recorded header describes this very source and data
        header = {k: old[k] for k in ("source", "input_shape", "num_classes", "float_accuracy")}
    if todo:
        if qat_rec and qat_rec["status"] == "ok" and any(v.needs_qat for v in todo):
            if qat_model is None:
                qat_model = load_keras_model(rundir.resolve(run_dir, qat_rec["file"]["path"]))
            ref_outputs["qat"] = predict_keras(qat_model, job.x_parity)
        if job.x_fit is not None and any(v.needs_calibration for v in todo):
            representative = representative_set(job.x_fit, profile.representative_samples, seed=job.seed)
        inputs = ConversionInputs(float_model=float_model(), qat_model=qat_model, representative=representative,
                                  opset=profile.onnx_opset, input_name="image",
                                  onnx_int8_encoding=profile.onnx_int8_encoding)

    def put_header(m: dict) -> None:
        sec = rundir.stage(m, "export")
        sec["profile"] = profile_to_dict(profile)
        sec["versions"] = rundir.versions()  # parity and kernel fidelity depend on the CPU and runtimes
        sec["data"] = data
        rec = sec.setdefault("models", {}).setdefault(job.name, {})
        rec.update(header)
        if qat_rec is not None:
            rec["qat"] = qat_rec
        # variants this profile no longer asks for would be benched and gated as if current
        rec["variants"] = {k: v for k, v in rec.get("variants", {}).items() if k in profile.variants}
    rundir.update_manifest(run_dir, put_header)

    qat_problem = None if not qat_rec or qat_rec["status"] == "ok" else (qat_rec["status"], qat_rec["error"])
    fp32_size: dict[str, dict] = {}  # format -> the fp32 file's record (size_bytes, weight_bytes)
    for i, variant in enumerate(variants):
        key = keys[variant.name]
        if variant.name in fresh:
            rec = old["variants"][variant.name]
            progress.update(f"{variant.name} is current ({rec['file']['path']}); reused", model=job.name)
        else:
            progress.update(f"{variant.name}", model=job.name, fraction=i / len(variants))
            rec = _export_variant(run_dir, out_dir, job, variant, inputs, key, profile, ref_outputs,
                                  header["float_accuracy"], fp32_size, qat_problem, representative is not None,
                                  progress)
        if variant.variant_class == "float" and rec.get("status") == "ok":
            fp32_size[variant.format] = rec["file"]

        def put_variant(m: dict, rec=rec, name=variant.name) -> None:
            rundir.stage(m, "export")["models"][job.name].setdefault("variants", {})[name] = rec
        manifest = rundir.update_manifest(run_dir, put_variant)
        write_parity_json(run_dir, manifest)
    return rundir.stage(rundir.load_manifest(run_dir), "export")["models"][job.name]


def _accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float(np.mean(np.argmax(outputs, axis=1) == labels))


def _variant_key(variant, profile: Profile, source: dict, job: ModelJob, qat_rec: dict | None) -> str:
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
    from edgekit import machine

    cpu, v = machine.describe(), rundir.versions()
    return {"cpu_model": cpu["cpu_model"], "int8_flags": cpu["int8_flags"],
            **{k: v.get(k) for k in ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert")}}


def _is_int8(variant) -> bool:
    return variant.variant_class.startswith("int8")


def _is_onnx_int8(variant) -> bool:
    return variant.format == "onnx" and _is_int8(variant)


def _emulated_cpus(profile: Profile) -> dict[str, bool] | None:
    """The emulated parity CPUs and whether each can run here: a record made while qemu was
    missing (rows "not measured") is redone once it is installed."""
    from edgekit import emulation

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


def _export_variant(run_dir: Path, out_dir: Path, job: ModelJob, variant, inputs, key: str, profile: Profile,
                    ref_outputs: dict, float_acc: float | None, fp32_size: dict, qat_problem,
                    have_calibration: bool, progress: Progress) -> dict:
    """Make one file atomically, validate it, judge it. Never raises for a variant's own failure."""
    from edgekit.convert import io_details
    from edgekit.cpu_parity import emulated_parity
    from edgekit.fidelity import fast_outputs, kernel_fidelity
    from edgekit.parity import accuracy_drop_points, check_thresholds, compare, describe_failures
    from edgekit.quantize import audit_int8
    from edgekit.weight_bytes import weight_bytes

    suffix = variant.suffix if variant.suffix.startswith(".") else f".{variant.suffix}"
    final = out_dir / f"{variant.name}{suffix}"
    if variant.needs_calibration and not have_calibration:
        return _skip(final, variant, key, "skipped", NO_CALIBRATION, job, progress)
    if variant.needs_qat and qat_problem:
        status, why = qat_problem
        return _skip(final, variant, key, status, f"needs the QAT model: {why}", job, progress)

    th = profile.thresholds_for(variant.name, variant.variant_class)
    encoding = profile.onnx_int8_encoding if _is_onnx_int8(variant) else None
    t0 = time.monotonic()
    try:
        with rundir.atomic_path(final) as tmp:
            variant.make(inputs, tmp)
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
        error = _one_line(e)
        if not isinstance(e, EdgekitError):
            tb = traceback.extract_tb(e.__traceback__)[-1]
            error += f" (at {Path(tb.filename).name}:{tb.lineno})"
        _loud(progress, job.name, variant.name, error)
        rec = _blank_record(variant, key, "failed", error, profile)
        rec["seconds"] = round(time.monotonic() - t0, 3)
        return rec

    file_rec = dict(rundir.file_record(run_dir, final), weight_bytes=int(weights))
    parity = result.to_dict()
    parity["float_accuracy"] = float_acc
    parity["accuracy_drop_points"] = accuracy_drop_points(float_acc, result.accuracy)
    fp32 = {} if variant.variant_class == "float" else fp32_size.get(variant.format) or {}
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
        _loud(progress, job.name, variant.name, rec["error"] + f" (file kept: {file_rec['path']})")
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


def _skip(final: Path, variant, key: str, status: str, why: str, job: ModelJob, progress: Progress) -> dict:
    if final.is_file():  # the manifest must not list, nor the folder hold, a file it no longer vouches for
        final.unlink()
    if status == "failed":
        _loud(progress, job.name, variant.name, why)
    else:
        progress.update(f"{variant.name} skipped: {why}", model=job.name)
    return _blank_record(variant, key, status, why)


def _loud(progress: Progress, model: str, variant: str, message: str) -> None:
    """A failed variant is never quiet: a progress line, and a line on stderr even with --quiet."""
    progress.update(f"{variant} FAILED: {message}", model=model)
    if progress.quiet or progress.stream is not sys.stderr:
        print(f"edgekit: export {model} {variant} FAILED: {message}", file=sys.stderr, flush=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if not isinstance(e, EdgekitError):
        msg = f"{type(e).__name__}: {msg}"
    return msg[:500]


# ---------------------------------------------------------------------------------------------
# QAT

def _qat(run_dir: Path, job: ModelJob, float_model: Callable[[], Any], source: dict, profile: Profile,
         prev: dict | None, force: bool, progress: Progress):
    """The QAT model: reused when fresh (not loaded here: nothing may need it), else wrapped,
    fine-tuned and saved as qat.h5. Returns (model or None, record); a failure is recorded, not raised."""
    import warnings

    from edgekit.parity import predict_keras
    from edgekit.quantize import finetune_qat, make_qat_model

    key = rundir.stage_key("export-qat", {"epochs": profile.qat_epochs, "learning_rate": profile.qat_learning_rate,
                                          "batch_size": QAT_BATCH_SIZE, "seed": job.seed, "data": job.data_key},
                           [source["sha256"]])
    base = {"status": "skipped", "error": None, "file": None, "files": [], "key": key, "accuracy": None,
            "epochs": profile.qat_epochs, "learning_rate": profile.qat_learning_rate, "seconds": 0.0}
    if job.x_fit is None or job.y_fit is None:
        base["error"] = NO_QAT_DATA if job.x_fit is None else NO_QAT_LABELS
        progress.update(f"QAT skipped: {base['error']}", model=job.name)
        return None, base
    path = run_dir / "export" / job.name / QAT_FILE
    if not force and rundir.is_fresh(run_dir, prev, key):
        progress.update(f"QAT model is current ({prev['file']['path']}); reused", model=job.name)
        return None, prev

    model = float_model()
    t0 = time.monotonic()
    progress.update(f"QAT fine-tuning ({profile.qat_epochs:g} epochs of {len(job.y_fit)} images)", model=job.name)
    try:
        qat_model = make_qat_model(model)
        fit = finetune_qat(qat_model, job.x_fit, job.y_fit, epochs=profile.qat_epochs,
                           learning_rate=profile.qat_learning_rate, batch_size=QAT_BATCH_SIZE, seed=job.seed)
        with rundir.atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy")  # chosen on purpose: QAT_FILE
            qat_model.save(str(tmp))
    except ModelError as e:
        return None, _qat_failed(base, path, str(e), t0, job, progress)
    except Exception as e:  # tfmot/TF errors: the QAT variants fail, the rest go on
        return None, _qat_failed(base, path, _one_line(e), t0, job, progress)
    file_rec = rundir.file_record(run_dir, path)
    acc = _accuracy(predict_keras(qat_model, job.x_parity), job.y_parity)
    rec = dict(base, status="ok", file=file_rec, files=[file_rec], accuracy=acc, fit=fit,
               seconds=round(time.monotonic() - t0, 3))
    progress.update(f"QAT done in {rec['seconds']:.0f}s" + ("" if acc is None else f", accuracy={acc:.4f}"),
                    model=job.name)
    return qat_model, rec


def _qat_failed(base: dict, path: Path, error: str, t0: float, job: ModelJob, progress: Progress) -> dict:
    if path.is_file():
        path.unlink()
    _loud(progress, job.name, "qat", error)
    return dict(base, status="failed", error=error, seconds=round(time.monotonic() - t0, 3))


# ---------------------------------------------------------------------------------------------
# parity.json

def write_parity_json(run_dir: Path, manifest: dict | None = None) -> Path:
    """All parity rows of the run in one file, for people and tools that do not read manifests."""
    m = manifest or rundir.load_manifest(run_dir)
    sec = m.get("stages", {}).get("export", {})
    rows = []
    for net, rec in sec.get("models", {}).items():
        for vname, v in rec.get("variants", {}).items():
            kf = v.get("kernel_fidelity") or {}
            row = {"model": net, "variant": vname, "status": v.get("status"), "reference": v.get("reference"),
                   "format": v.get("format"), "variant_class": v.get("variant_class"),
                   "size_bytes": (v.get("file") or {}).get("size_bytes"),
                   "weight_bytes": (v.get("file") or {}).get("weight_bytes"), "error": v.get("error")}
            row.update(v.get("parity") or {})
            row.update({"kernel_runtime": kf.get("runtime"), "kernel_fast": kf.get("fast"),
                        "kernel_reference": kf.get("reference"), "kernel_agreement": kf.get("agreement"),
                        "kernel_max_abs_diff": kf.get("max_abs_diff"), "kernel_avoid": kf.get("avoid"),
                        "onnx_int8_encoding": v.get("onnx_int8_encoding")})
            row["checks_failed"] = [c["name"] for c in v.get("checks", []) if c.get("passed") is False]
            rows.append(row)
    return rundir.atomic_write_json(Path(run_dir) / "export" / "parity.json",
                                    {"schema_version": 1, "data": sec.get("data"), "rows": rows})
