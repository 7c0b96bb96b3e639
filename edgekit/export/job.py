"""The per-model hand-off of `edgekit export`: what export_run/export_model prepare (ModelJob,
and the parity inputs stored for bench), and what the variant steps share (ExportContext)."""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.core import rundir
if TYPE_CHECKING:
    from edgekit.core.config import Profile
    from edgekit.core.export_records import QatRecord
    from edgekit.core.variants import Format, Reference
    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.progress import Progress

PARITY_INPUTS_FILE = "parity_inputs.npz"   # export/<model>/: the images parity ran on (user models)


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
    data_record: dict = field(default_factory=dict)   # the export section's `data`: how the data was chosen
    parity_inputs: dict | None = None   # the model's `parity_inputs` record: where bench finds x_parity
    model: Any = None                # the float Keras model when the caller has loaded it already
    labels: tuple[str, ...] | None = None   # class names for every file's metadata (--labels)
    input_range: tuple[float, float] | None = None   # the inputs' value range, when known (metadata)


@dataclass(frozen=True, eq=False)
class ExportContext:
    """What every variant of one model shares, set up once by export_one before the variants are
    made, so a variant step takes (ctx, variant, key) instead of a dozen loose arguments."""
    run_dir: Path
    out_dir: Path                        # run_dir/export/<model>: where the variant files go
    job: ModelJob
    profile: Profile
    progress: Progress
    inputs: ConversionInputs | None      # None when every variant is current (nothing is converted)
    ref_outputs: dict[Reference, np.ndarray]   # each reference Keras model's outputs on job.x_parity
    float_acc: float | None              # the float model's accuracy on job.x_parity (None without labels)
    # format -> the fp32 file's record (size_bytes, weight_bytes): filled by export_one as float
    # variants finish (they run first), read by the others for their size ratio
    fp32_files: dict[Format, dict]
    qat: QatRecord | None                # the QAT model's record (None: no variant needs one)
    have_calibration: bool               # a representative set exists for the calibrated variants


def accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    from edgekit.core.metrics import top1_accuracy

    return top1_accuracy(outputs, labels)


def write_parity_inputs(run_dir: Path, name: str, x: np.ndarray, y: np.ndarray | None, description: str) -> dict:
    """Store the inputs parity runs on (x, and y when labelled) in export/<name>/, so bench measures
    a user's model on the very images export judged it on; returns the manifest record.

    The bytes depend on the arrays alone (fixed zip timestamps), so an unchanged re-run finds the
    file it would write and leaves it, and the recorded sha256 stays the file's."""
    arrays = {"x": np.asarray(x, np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, np.int64)
    data = _npz_bytes(arrays)
    sha = hashlib.sha256(data).hexdigest()
    rel = f"export/{name}/{PARITY_INPUTS_FILE}"
    path = Path(run_dir) / rel
    if not path.is_file() or rundir.sha256_file(path) != sha:
        rundir.atomic_write_bytes(path, data)
    return {"path": rel, "sha256": sha, "samples": int(len(arrays["x"])), "labels": y is not None,
            "description": description}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (np.load reads it) whose bytes are a function of the arrays: np.savez stamps each
    member with the current time, which would change the sha256 on every run."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for key, a in arrays.items():
            with z.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()
