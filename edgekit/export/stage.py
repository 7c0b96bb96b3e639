"""`edgekit export`: every variant a profile asks for, each validated against its source model.

Per model: the float Keras model (and, when a variant needs it, a QAT model fine-tuned from it)
is converted into each variant (edgekit.convert.converters), inside an atomic write, then the file is run
on its own runtime against its reference Keras model on the real test set (edgekit.verify.parity),
int8 files are audited (edgekit.convert.quantize), and the profile's thresholds are checked. Each
variant is recorded in the manifest as soon as it is done, so an interrupted export keeps what
it finished and a re-run skips every variant whose record is still fresh.

A variant that cannot be made is recorded as failed and the others go on; a variant below its
thresholds is marked failed but its file is kept, so it can be inspected.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import rundir
from edgekit.core.config import Profile, profile_to_dict
from edgekit.errors import ConfigError, DataError, ModelError, RunDirError
from edgekit.export.job import ExportContext, ModelJob, accuracy, write_parity_inputs
from edgekit.export.qat import NO_QAT_DATA, NO_QAT_LABELS, QAT_BATCH_SIZE, QAT_FILE, make_or_reuse_qat
from edgekit.export.variant import NO_CALIBRATION, export_variant, variant_key
from edgekit.core.progress import Progress
from edgekit.core.export_records import QatRecord, Status, VariantRecord
from edgekit.core.variants import Reference, Variant, VariantClass

# Names that lived here before the split (edgekit.export.job, _qat, _variant) stay importable here.
__all__ = ["ExportContext", "ModelJob", "NO_CALIBRATION", "NO_QAT_DATA", "NO_QAT_LABELS", "QAT_BATCH_SIZE",
           "QAT_FILE", "RANDOM_PARITY_SAMPLES", "export_model", "export_one", "export_run", "resolve_variants",
           "write_parity_json"]

RANDOM_PARITY_SAMPLES = 500   # parity inputs for a user model given without any data


# ---------------------------------------------------------------------------------------------
# Public API

def export_run(run_dir: str | Path, profile: Profile, models=None, force: bool = False,
               progress: Progress | None = None) -> dict:
    """Export the models a training run made; returns the manifest's "export" section."""
    from edgekit.core.data import data_sha256, limit_training, load_dataset, split_validation, to_float
    from edgekit.errors import UntrustedModelError

    run_dir = Path(run_dir)
    resolve_variants(profile)  # a profile's mistake is reported before any data is loaded
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
        data = {"parity": f"{ds.name} test set", "samples": int(n_par),
                "calibration_samples": min(profile.representative_samples, len(y_tr)),
                "qat_samples": int(len(y_tr)), "data_sha256": sha}
        job = ModelJob(
            name=net, model_path=model_path,
            x_parity=to_float(ds.x_test[:n_par]), y_parity=ds.y_test[:n_par],
            x_fit=x_tr, y_fit=y_tr, seed=seed,  # uint8: QAT and calibration scale it themselves
            data_key={"data_sha256": sha, "val_fraction": cfg.get("val_fraction", 0.1), "seed": seed},
            data_record=data,  # no file: bench reads the same test set from the data set itself
            input_range=(0.0, 1.0),  # to_float: pixels / 255
            parity_inputs={"dataset": dataset_name, "samples": int(n_par), "data_sha256": sha,
                           "description": f"{ds.name} test set"})
        export_one(run_dir, job, profile, force=force, progress=progress)
    manifest = rundir.load_manifest(run_dir)
    if own_stage:
        progress.done(_tally(manifest, names))
    return rundir.section(manifest, "export")


def export_model(model_path: str | Path, out_dir: str | Path, profile: Profile, calibration=None,
                 force: bool = False, progress: Progress | None = None, trust_model: bool = False,
                 labels: str | Path | None = None) -> dict:
    """Export a user's Keras model (any input shape and class count) into `out_dir`, a run
    directory of its own. With a calibration .npz (x, optional y) it makes every variant;
    without one only those that need no data, and records the others as skipped.

    The file is scanned before anything loads it (edgekit.security.scan); a model holding code is refused
    (UntrustedModelError) unless trust_model=True, which runs the export in a contained subprocess
    (edgekit.export.contained) and records the findings in the manifest."""
    from edgekit.export import contained
    from edgekit.core.data import load_calibration
    from edgekit.runtimes.keras_tf import load_keras_model
    from edgekit.security.scan import check_model

    model_path, out_dir = Path(model_path), Path(out_dir)
    variants = resolve_variants(profile)
    scan = check_model(model_path, trust_model=trust_model)   # before any deserialization or write
    if trust_model and not contained.in_worker():
        return contained.export_contained(model_path, out_dir, profile, calibration, force=force, progress=progress,
                                          labels=labels)
    # scanned just above; safe mode stays on unless the user trusts the file (then we are the worker)
    model = load_keras_model(model_path, trust_model=trust_model, scanned=True)
    input_shape = _single_input_shape(model, model_path)
    names = None
    if labels is not None:
        from edgekit.convert.metadata import check_labels, read_labels

        names = read_labels(labels)
        check_labels(names, int(model.output_shape[-1]))
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
        data = {"parity": "user sample", "samples": int(n_par), "labels": y is not None,
                "calibration": str(Path(calibration).resolve()),
                "calibration_samples": min(profile.representative_samples, len(x))}
        job = ModelJob(name=name, model_path=model_path, x_parity=x[:n_par],
                       y_parity=None if y is None else y[:n_par], x_fit=x, y_fit=y,
                       data_key={"calibration_sha256": rundir.sha256_file(calibration)}, data_record=data)
        described = f"user sample {Path(calibration).name}"
    else:
        n_par = min(profile.parity_samples or RANDOM_PARITY_SAMPLES, RANDOM_PARITY_SAMPLES)
        x = np.random.default_rng(0).random((n_par, *input_shape), dtype=np.float32)
        data = {"parity": "random uniform [0, 1) inputs (no --calibration-data given)", "samples": n_par,
                "labels": False, "calibration_samples": 0}
        job = ModelJob(name=name, model_path=model_path, x_parity=x, y_parity=None, x_fit=None, y_fit=None,
                       data_key={"random_parity_samples": n_par}, data_record=data)
        described = data["parity"]
        needing = [v.name for v in variants if v.needs_calibration or v.needs_qat]
        if needing:
            progress.update(f"no --calibration-data: skipping {', '.join(needing)} (they need data); "
                            f"making {', '.join(v.name for v in variants if v.name not in needing) or 'nothing'}")
    scan_rec = dict(scan.to_dict(), trust_model=trust_model, contained=contained.in_worker())

    def put_scan(m: dict) -> None:
        rundir.stage(m, "export").setdefault("models", {}).setdefault(name, {})["model_scan"] = scan_rec
    rundir.update_manifest(out_dir, put_scan)
    # the inputs parity runs on, stored before any variant is made: bench measures on the same images
    parity_inputs = write_parity_inputs(out_dir, name, job.x_parity, job.y_parity, described)
    job = dataclasses.replace(job, parity_inputs=parity_inputs, model=model, labels=names)
    export_one(out_dir, job, profile, force=force, progress=progress)
    manifest = rundir.load_manifest(out_dir)
    if own_stage:
        progress.done(_tally(manifest, [name]))
    return rundir.section(manifest, "export")


def _staged(progress: Progress | None) -> tuple[Progress, bool]:
    """Progress lines name the stage (and estimate what is left) even when export runs alone;
    True when this call opened the stage (so it closes it too)."""
    progress = progress or Progress()
    if progress.stage_name:
        return progress, False
    progress.start_stage("export")
    return progress, True


def _tally(manifest: dict, names) -> str:
    counts: dict[str, int] = {}
    for net in names:
        for v in rundir.model_record(manifest, "export", net).get("variants", {}).values():
            counts[v.get("status", "?")] = counts.get(v.get("status", "?"), 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# Validation

def resolve_variants(profile: Profile) -> list:
    """The profile's variants, checked against the registry; float ones first, because the
    others' size ratio is measured against the fp32 file of the same format."""
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    if not profile.variants:
        raise ConfigError(f"profile '{profile.name}' lists no variants; add variants = [...] "
                          f"with any of {', '.join(VARIANTS)}")
    unknown = [v for v in profile.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"profile '{profile.name}' lists unknown variants {unknown}; "
                          f"use any of {', '.join(VARIANTS)}")
    chosen = [VARIANTS[v] for v in dict.fromkeys(profile.variants)]
    return sorted(chosen, key=lambda v: v.variant_class is not VariantClass.FLOAT)


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

def export_one(run_dir: Path, job: ModelJob, profile: Profile, force: bool = False,
               progress: Progress | None = None) -> dict:
    """QAT (when needed), then every variant of one model; the manifest is updated after each,
    parity.json once at the end (the manifest is what records progress).

    Work is planned from the keys first, so a re-run whose variants are all current loads no
    model and runs nothing (the pipeline's resume relies on that being quick)."""
    from edgekit.runtimes.keras_tf import load_keras_model

    progress = progress or Progress()
    run_dir = Path(run_dir)
    variants = resolve_variants(profile)
    source = rundir.file_record(run_dir, job.model_path)
    old = rundir.model_record(rundir.load_manifest(run_dir), "export", job.name)
    float_model = FloatModel(job, progress)
    qat_model, qat = None, None
    if any(v.needs_qat for v in variants):
        qat_model, qat = make_or_reuse_qat(run_dir, job, float_model, source, profile,
                                           None if force else old.get("qat"), progress)
    keys = {v.name: variant_key(v, profile, source, job, qat) for v in variants}
    todo = [v for v in variants
            if force or not rundir.is_fresh(run_dir, old.get("variants", {}).get(v.name), keys[v.name])]
    if qat is not None and qat.ok and qat_model is None and any(v.needs_qat for v in todo):
        qat_model = load_keras_model(rundir.resolve(run_dir, qat.file["path"]))  # the recorded one

    ref_outputs: dict[Reference, np.ndarray] = {}
    if todo or old.get("source", {}).get("sha256") != source["sha256"]:
        ref_outputs = _reference_outputs(job, todo, float_model, qat_model)
        header = _model_header(job, source, ref_outputs[Reference.FLOAT])
    else:  # everything current: the recorded header describes this very source and data
        header = {k: old[k] for k in ("source", "input_shape", "num_classes", "float_accuracy")}
    inputs = _conversion_inputs(job, profile, todo, float_model, qat_model, source["sha256"]) if todo else None
    rundir.update_manifest(run_dir, functools.partial(_put_header, job=job, profile=profile, header=header, qat=qat))

    ctx = ExportContext(run_dir=run_dir, out_dir=run_dir / "export" / job.name, job=job, profile=profile,
                        progress=progress, inputs=inputs, ref_outputs=ref_outputs,
                        float_acc=header["float_accuracy"], fp32_files={}, qat=qat,
                        have_calibration=inputs is not None and inputs.representative is not None)
    todo_names = {v.name for v in todo}
    for i, variant in enumerate(variants):
        if variant.name in todo_names:
            progress.update(variant.name, model=job.name, fraction=i / len(variants))
            rec = _export_and_record(ctx, variant, keys[variant.name])
        else:
            rec = _reuse(ctx, variant, old["variants"][variant.name])
        if variant.variant_class is VariantClass.FLOAT and rec.status == Status.OK:
            ctx.fp32_files[variant.format] = rec.file  # the size ratio of the later variants divides by it
    manifest = rundir.load_manifest(run_dir)
    write_parity_json(run_dir, manifest)
    return rundir.model_record(manifest, "export", job.name)


def _export_and_record(ctx: ExportContext, variant: Variant, key: str) -> VariantRecord:
    """Make, measure and judge one variant, and record it at once: an interrupted export keeps it."""
    rec = export_variant(ctx, variant, key)
    rundir.update_manifest(ctx.run_dir, functools.partial(_put_variant, model=ctx.job.name, variant=variant.name,
                                                          rec=rec))
    return rec


def _reuse(ctx: ExportContext, variant: Variant, recorded: dict) -> VariantRecord:
    """A variant whose record is current: its file and verdict stand (nothing to write)."""
    rec = VariantRecord.from_json(recorded)
    ctx.progress.update(f"{variant.name} is current ({rec.file['path']}); reused", model=ctx.job.name)
    return rec


class FloatModel:
    """The float Keras model, loaded on first use (or the one the caller loaded already): a re-run
    whose variants are all current loads none."""

    def __init__(self, job: ModelJob, progress: Progress):
        self._job, self._progress, self._model = job, progress, job.model

    def __call__(self) -> Any:
        from edgekit.runtimes.keras_tf import load_keras_model

        if self._model is None:
            self._progress.update("loading the float model", model=self._job.name)
            self._model = load_keras_model(self._job.model_path)
        return self._model


def _reference_outputs(job: ModelJob, todo: list, float_model: FloatModel, qat_model) -> dict[Reference, np.ndarray]:
    """Each reference Keras model's outputs on the parity inputs, computed once for all variants:
    the float model's always (the header and emulated CPUs use them), the QAT model's when there
    is one and a variant to make is judged against it."""
    from edgekit.verify.parity import predict_keras

    outputs = {Reference.FLOAT: predict_keras(float_model(), job.x_parity)}
    if qat_model is not None and any(v.reference is Reference.QAT for v in todo):
        outputs[Reference.QAT] = predict_keras(qat_model, job.x_parity)
    return outputs


def _model_header(job: ModelJob, source: dict, float_outputs: np.ndarray) -> dict:
    """The model's own record: its source file, shapes and the float model's accuracy."""
    return {"source": source, "input_shape": [int(d) for d in job.x_parity.shape[1:]],
            "num_classes": int(float_outputs.shape[-1]), "float_accuracy": accuracy(float_outputs, job.y_parity)}


def _conversion_inputs(job: ModelJob, profile: Profile, todo: list, float_model: FloatModel, qat_model,
                       source_sha256: str | None = None):
    """What the converters of the variants to make read: the Keras models and, when one of them
    needs calibration and there is data, the representative set."""
    from edgekit.convert.converters import ConversionInputs
    from edgekit.convert.quantize import representative_set

    representative = None
    # a QAT model with layers left float needs calibration for tflite-int8-qat too (make_tflite_int8_qat)
    if job.x_fit is not None and any(v.needs_calibration or v.needs_qat for v in todo):
        representative = representative_set(job.x_fit, profile.representative_samples, seed=job.seed)
    return ConversionInputs(float_model=float_model(), qat_model=qat_model, representative=representative,
                            opset=profile.onnx_opset, input_name="image",
                            onnx_int8_encoding=profile.onnx_int8_encoding, source_sha256=source_sha256,
                            labels=job.labels, input_range=job.input_range)


def _put_header(m: dict, *, job: ModelJob, profile: Profile, header: dict, qat: QatRecord | None) -> None:
    """The export section's settings and the model's header, before any variant is made."""
    sec = rundir.stage(m, "export")
    sec["profile"] = profile_to_dict(profile)
    sec["versions"] = rundir.versions(RUNTIME_DISTS)  # parity and kernel fidelity depend on the CPU and runtimes
    sec["data"] = job.data_record
    rec = sec.setdefault("models", {}).setdefault(job.name, {})
    rec.update(header)
    if job.parity_inputs is not None:
        rec["parity_inputs"] = job.parity_inputs
    if qat is not None:
        rec["qat"] = qat.to_json()
    # variants this profile no longer asks for would be benched and gated as if current
    rec["variants"] = {k: v for k, v in rec.get("variants", {}).items() if k in profile.variants}


def _put_variant(m: dict, *, model: str, variant: str, rec: VariantRecord) -> None:
    """One finished variant, recorded as soon as it is done: an interrupted export keeps it."""
    rundir.stage(m, "export")["models"][model].setdefault("variants", {})[variant] = rec.to_json()


# ---------------------------------------------------------------------------------------------
# parity.json

def write_parity_json(run_dir: Path, manifest: dict | None = None) -> Path:
    """All parity rows of the run in one file, for people and tools that do not read manifests."""
    m = manifest or rundir.load_manifest(run_dir)
    sec = rundir.section(m, "export")
    rows = []
    for net, rec in rundir.model_records(m, "export").items():
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
