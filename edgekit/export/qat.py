"""The QAT model of `edgekit export`: made once per model (wrapped, fine-tuned, saved as qat.h5)
for the variants that need it, reused while its key is fresh; a failure is recorded, not raised.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from edgekit.core import rundir
from edgekit.core.config import Profile
from edgekit.core.export_records import QatRecord, Status
from edgekit.errors import ModelError, one_line
from edgekit.export.job import ModelJob, accuracy
from edgekit.export.variant import loud
from edgekit.core.progress import Progress

QAT_BATCH_SIZE = 128   # at most; large models get fewer images a batch (edgekit.convert.memory)
# HDF5, not .keras: tf_keras 2.21 saves a tfmot QAT model as .keras but cannot load it back
# ("Layer 'quantize_layer' expected 5 variables, but received 3"); .h5 round-trips exactly.
QAT_FILE = "qat.h5"
NO_QAT_DATA = ("QAT needs labelled training data; pass --calibration-data FILE.npz with x (inputs) "
               "and y (labels)")
NO_QAT_LABELS = "QAT needs labels; add y (integer labels) to the --calibration-data .npz"


def make_or_reuse_qat(run_dir: Path, job: ModelJob, float_model: Callable[[], Any], source: dict,
                      profile: Profile, reusable: dict | None, progress: Progress) -> tuple[Any, QatRecord]:
    """The QAT model: `reusable` (the recorded one, None to force a new one) when still fresh (not
    loaded here: nothing may need it), else wrapped, fine-tuned and saved as qat.h5. Returns
    (model or None, record); a failure is recorded, not raised."""
    import warnings

    from edgekit.convert.memory import TRAINING_FACTOR, activation_bytes_per_sample, batch_for_memory
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model
    from edgekit.verify.parity import predict_keras

    # the batch itself follows from the model (whose sha256 is in the key) and this cap; a qat.h5
    # fine-tuned on logits whatever the head, or refused for a layer now left float, is not current
    key = rundir.stage_key("export-qat", {"epochs": profile.qat_epochs, "learning_rate": profile.qat_learning_rate,
                                          "batch_size": QAT_BATCH_SIZE, "seed": job.seed, "data": job.data_key,
                                          "loss": "matches-output", "partial": True, "batch": "by-memory"},
                           [source["sha256"]])
    base = QatRecord(status=Status.SKIPPED, error=None, key=key, epochs=profile.qat_epochs,
                     learning_rate=profile.qat_learning_rate)
    if job.x_fit is None or job.y_fit is None:
        base = dataclasses.replace(base, error=NO_QAT_DATA if job.x_fit is None else NO_QAT_LABELS)
        progress.update(f"QAT skipped: {base.error}", model=job.name)
        return None, base
    path = run_dir / "export" / job.name / QAT_FILE
    if rundir.is_fresh(run_dir, reusable, key):
        progress.update(f"QAT model is current ({reusable['file']['path']}); reused", model=job.name)
        return None, QatRecord.from_json(reusable)

    model = float_model()
    t0 = time.monotonic()
    batch = batch_for_memory(activation_bytes_per_sample(model), most=QAT_BATCH_SIZE, factor=TRAINING_FACTOR, least=8)
    progress.update(f"QAT fine-tuning ({profile.qat_epochs:g} epochs of {len(job.y_fit)} images, batch {batch})",
                    model=job.name)
    try:
        qat_model = make_qat_model(model)
        fit = finetune_qat(qat_model, job.x_fit, job.y_fit, epochs=profile.qat_epochs,
                           learning_rate=profile.qat_learning_rate, batch_size=batch, seed=job.seed)
        fit["batch_size"] = batch
        with rundir.atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy")  # chosen on purpose: QAT_FILE
            qat_model.save(str(tmp))
    except ModelError as e:
        return None, _qat_failed(base, path, str(e), t0, job, progress)
    except Exception as e:  # tfmot/TF errors: the QAT variants fail, the rest go on
        return None, _qat_failed(base, path, one_line(e, limit=500), t0, job, progress)
    file_rec = rundir.file_record(run_dir, path)
    acc = accuracy(predict_keras(qat_model, job.x_parity), job.y_parity)
    rec = dataclasses.replace(base, status=Status.OK, file=file_rec, files=(file_rec,), accuracy=acc, fit=fit,
                              output=fit.get("output"), float_layers=tuple(fit.get("float_layers") or ()),
                              seconds=round(time.monotonic() - t0, 3))
    left = f", {len(rec.float_layers)} layers left float" if rec.float_layers else ""
    progress.update(f"QAT done in {rec.seconds:.0f}s ({rec.output} loss{left})"
                    + ("" if acc is None else f", accuracy={acc:.4f}"), model=job.name)
    return qat_model, rec


def _qat_failed(base: QatRecord, path: Path, error: str, t0: float, job: ModelJob, progress: Progress) -> QatRecord:
    if path.is_file():
        path.unlink()
    loud(progress, job.name, "qat", error)
    return dataclasses.replace(base, status=Status.FAILED, error=error, seconds=round(time.monotonic() - t0, 3))
