"""`edgekit bench --model FILE`: .tflite/.onnx files another tool made, measured like edgekit's own.

The job of LiteRT's `benchmark_model` and `onnxruntime_perf_test`, with edgekit's statistics,
memory and report, and, with `--reference`, parity against a Keras model or another file: a CI
job can validate a conversion it did not make. The files are copied into the run directory
(sha256 recorded), with the inputs they are judged on, in the manifest's "external" section;
then the ordinary bench measures them (edgekit.bench.plan reads that section), so `edgekit
report` works on the run as on any other.

A file from elsewhere is opened only by its runtime, in a bench worker subprocess (the describe
job below reads its input shape there): edgekit's own process never parses it. A Keras reference
is a user model: it is scanned (edgekit.security.scan) before anything loads it, and loaded
only in the Keras worker, which scans it again.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgekit.bench.job import BenchJob, BenchUnit
from edgekit.bench.plan import EXTERNAL
from edgekit.bench.stage import RUNTIME_ORDER, bench_run, run_worker
from edgekit.core import rundir
from edgekit.core.progress import Progress
from edgekit.core.variants import Role, file_format, keras_variant
from edgekit.errors import ConfigError, DataError, ModelError, RunDirError, UntrustedModelError
from edgekit.runtimes import RUNTIMES, runtime_for, source_runtime

RANDOM_SAMPLES = 1000      # inputs made when no --dataset is given
FOLDER = "external"        # where the copies live inside the run directory
TFLITE_ID = b"TFL3"        # the FlatBuffer file identifier of every .tflite, at bytes 4..8
SOURCE = keras_variant(Role.SOURCE)
FILE_CLASS = "external"    # variant_class of a file made elsewhere: edgekit cannot tell float from int8 by name


@dataclass(frozen=True)
class ExternalFile:
    """One file to bench (or the reference), before it is copied."""
    name: str              # its variant name in results.json: the file name
    path: Path             # where the user keeps it
    runtime: str           # the runtime that opens it


@dataclass(frozen=True)
class FileInput:
    """What a file's runtime says its (first) input takes."""
    shape: tuple[int, ...]         # batch first; -1 where dynamic
    dtype: str
    quant: tuple[float, int] | None


def bench_files(models: Sequence[str | Path], out: str | Path, dataset: str | Path | None = None,
                reference: str | Path | None = None, seed: int = 0, runtimes: Iterable[str] = RUNTIME_ORDER,
                threads: Iterable[int] = (1, 2), batches: Iterable[int] = (1, 32), quick: bool = False,
                progress: Progress | None = None, force: bool = False) -> dict:
    """Record the files, their inputs and reference in `out` (prepare_files), then bench them;
    returns the results.json content."""
    progress = progress or Progress()
    progress.start_stage("bench")
    prepare_files(models, out, dataset=dataset, reference=reference, seed=seed, force=force, progress=progress)
    results = bench_run(out, runtimes=runtimes, threads=threads, batches=batches, quick=quick,
                        progress=progress, force=force)
    progress.done()
    return results


def prepare_files(models: Sequence[str | Path], out: str | Path, dataset: str | Path | None = None,
                  reference: str | Path | None = None, seed: int = 0, force: bool = False,
                  progress: Progress | None = None) -> dict:
    """Check the files (a runtime in a worker subprocess opens each), the data against their
    input shape, copy the files into OUT/external/ and write the manifest's "external" section.
    Files, data and reference already recorded there unchanged are not copied again; other ones
    replace them only with `force`."""
    out = Path(out)
    progress = progress or Progress()
    manifest = rundir.load_manifest(out)
    for stage in ("train", "export"):
        if rundir.section(manifest, stage):
            raise RunDirError(f"{out} holds an edgekit run ({stage} stage); `edgekit bench --model` needs a "
                              f"directory of its own: pass a new --out")
    files = _external_files(models)
    ref = _reference(reference, files) if reference is not None else None
    hashes = [rundir.sha256_file(f.path) for f in files] + ([rundir.sha256_file(ref.path)] if ref else [])
    config = {"files": [f.name for f in files], "reference": ref and ref.name, "seed": seed,
              "dataset": dataset and str(Path(dataset).resolve()),
              "dataset_sha256": dataset and Path(dataset).is_file() and rundir.sha256_file(dataset)}
    key = rundir.stage_key(EXTERNAL, config, hashes)
    old = rundir.section(manifest, EXTERNAL)
    if old.get("key") == key and rundir.outputs_intact(out, old.get("recorded", [])):
        progress.update(f"{out / FOLDER}: these files, data and reference are recorded already; reused")
        return old
    if old and old.get("key") != key and not force:
        raise RunDirError(f"{out} already benchmarks other files ({', '.join(old.get('files', {}))}); "
                          f"pass --force to replace them or choose a new --out")

    progress.update("reading each file's input in its runtime's worker")
    inputs = describe([*files, *([ref] if ref else [])])
    shape = _common_shape(files, ref, inputs)
    x, y, description = _load_data(Path(dataset), shape, files[0]) if dataset is not None \
        else _random_inputs(shape, seed, files[0])
    progress.update(f"inputs: {description}")

    folder = rundir.make_dir(out / FOLDER)
    records = {}
    for f in files:
        records[f.name] = dict(_copy(out, f, folder), format=file_format(f.path).value, variant_class=FILE_CLASS,
                               runtime=f.runtime, source=str(f.path.resolve()), input=_io_record(inputs[f.name]))
    if ref is not None:
        fmt = SOURCE.format if ref.name == SOURCE.name else file_format(ref.path).value
        cls = SOURCE.variant_class if ref.name == SOURCE.name else FILE_CLASS
        records[ref.name] = dict(_copy(out, ref, folder), format=str(fmt), variant_class=str(cls),
                                 runtime=ref.runtime, source=str(ref.path.resolve()), input=_io_record(inputs[ref.name]),
                                 role="reference")
    with rundir.atomic_path(folder / "inputs.npz") as tmp:
        np.savez(tmp, x=x, **({} if y is None else {"y": y}))
    data = dict(rundir.file_record(out, folder / "inputs.npz"), description=description, random=dataset is None,
                seed=seed if dataset is None else None, labels=y is not None,
                source=None if dataset is None else str(Path(dataset).resolve()))
    section = {"status": "ok", "key": key, "model": (ref or files[0]).path.stem.replace(" ", "_"),
               "files": records, "reference": ref and ref.name, "inputs": data,
               "recorded": [{k: r[k] for k in ("path", "size_bytes", "sha256")} for r in [*records.values(), data]],
               "finished_utc": rundir.utc_now()}

    def put(m: dict) -> None:
        m.setdefault("stages", {})[EXTERNAL] = section
    rundir.update_manifest(out, put)
    return section


def summary_lines(results: dict) -> list[str]:
    """One line per measurement, each naming the inputs it was measured on ("random inputs ...")."""
    from edgekit.core.results import setting_label

    lines = []
    for r in results["records"]:
        if r.get("inputs") is None:
            continue

        def num(key: str, spec: str) -> str:
            return "n/a" if r.get(key) is None else format(r[key], spec)
        figures = (f"p50 {num('p50_ms', '.4g')} ms  accuracy {num('accuracy', '.4f')}  "
                   f"agreement {num('agreement', '.4f')}  max_abs_diff {num('max_abs_diff', '.3g')}"
                   if r["status"] == "ok" else f"FAILED: {r.get('error')}")
        against = f" vs {r['reference']}" if r.get("reference") else ""
        lines.append(f"{r['variant']:24s} {setting_label(r):40s} {figures}{against}  [{r['inputs']}]")
    return lines


# ---------------------------------------------------------------------------------------------
# Files and what they take

def _external_files(models: Sequence[str | Path]) -> list[ExternalFile]:
    if not models:
        raise ConfigError("--model needs at least one .tflite or .onnx file")
    files: list[ExternalFile] = []
    for given in models:
        path = Path(given).expanduser()
        _check_file(path, "--model")
        name = path.name if path.name not in {f.name for f in files} else f"{len(files) + 1}-{path.name}"
        files.append(ExternalFile(name, path, runtime_for(path).name))
    return files


def _reference(given: str | Path, files: list[ExternalFile]) -> ExternalFile:
    """A Keras model (scanned now, before any process loads it) or another .tflite/.onnx file."""
    path = Path(given).expanduser()
    if path.suffix in source_runtime().suffixes:
        from edgekit.security.scan import refusal, scan_model

        if not path.is_file():
            raise ModelError(f"--reference {path}: file not found; pass a .keras/.h5 model or a .tflite/.onnx file")
        report = scan_model(path)
        if report.findings:  # the bench has no --trust-model: say what it can do instead
            raise UntrustedModelError(f"--reference {refusal(report).split('. Only if')[0]}; the bench never loads "
                                      "such a file: compare against a .tflite/.onnx made from it instead")
        return ExternalFile(SOURCE.name, path, runtime_for(path).name)
    _check_file(path, "--reference")
    name = path.name if path.name not in {f.name for f in files} else f"reference-{path.name}"
    return ExternalFile(name, path, runtime_for(path).name)


def _check_file(path: Path, option: str) -> None:
    """Exists, has a bench suffix, and (TFLite) carries the TFLite identifier: checks that read
    bytes only. Whether it loads is for its runtime to say, in a worker (describe)."""
    if path.is_dir() or not path.exists():
        raise ModelError(f"{option} {path}: no such file; pass a .tflite or .onnx file")
    try:
        file_format(path, option)
    except ConfigError as e:
        raise ConfigError(f"{e}; a Keras model can be the --reference, or exported with `edgekit export --model`") from e
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise ModelError(f"{option} {path}: the file is empty; pass the model file the converter wrote")
    if path.suffix == ".tflite" and head[4:8] != TFLITE_ID:
        raise ModelError(f"{option} {path}: not a TFLite model (no 'TFL3' identifier at byte 4); "
                         "pass a .tflite file a TFLite converter wrote")


def describe(files: list[ExternalFile]) -> dict[str, FileInput]:
    """Each file's input, as its runtime reads it in a worker subprocess (one per runtime); a
    file the runtime cannot open, or that crashes it, is a one-line ModelError."""
    found: dict[str, FileInput] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-describe-") as tmp:
        for rt in RUNTIMES.values():
            mine = [f for f in files if f.runtime == rt.name]
            if not mine:
                continue
            units = tuple(BenchUnit(i, EXTERNAL, f.name, str(f.path), "") for i, f in enumerate(mine))
            job = BenchJob(runtime=rt.name, units=units, data={}, option_sets=({},), threads=(), batches=(),
                           timing=None, predict=False, predict_threads=1, predict_samples=(), predict_batch=1,
                           describe=True)
            for ev in run_worker(job, Path(tmp) / rt.name):
                if ev["type"] == "unavailable":
                    raise ConfigError(ev["error"])
                if ev["type"] in ("io", "crash"):
                    f = mine[ev["id"]]
                    if "error" in ev:
                        raise ModelError(f"{f.path}: {rt.name} cannot open it as a model ({_short(ev['error'], f)}); "
                                         f"pass a complete {f.path.suffix or 'model'} file its converter wrote")
                    found[f.name] = FileInput(tuple(ev["input_shape"]), ev["input_dtype"],
                                              None if ev["input_quant"] is None else tuple(ev["input_quant"]))
    missing = [f.name for f in files if f.name not in found]
    if missing:
        raise ModelError(f"no runtime reported the input of {', '.join(missing)}; re-run with --debug")
    return found


def _short(error: str, f: ExternalFile) -> str:
    """A runtime's load error without the path it repeats and its advice for edgekit's own exports."""
    return error.replace(f"{f.path}: ", "").removesuffix("; re-export it")[:300]


def _io_record(i: FileInput) -> dict:
    return {"shape": list(i.shape), "dtype": i.dtype,
            "scale": None if i.quant is None else i.quant[0], "zero_point": None if i.quant is None else i.quant[1]}


def _common_shape(files: list[ExternalFile], ref: ExternalFile | None, inputs: dict[str, FileInput]) -> tuple[int, ...]:
    """The per-sample input shape every file (and the reference) takes: one set of inputs for all."""
    first = files[0]
    shape = inputs[first.name].shape[1:]
    for f in [*files[1:], *([ref] if ref else [])]:
        other = inputs[f.name].shape[1:]
        if len(other) != len(shape) or any(a != b and -1 not in (a, b) for a, b in zip(shape, other)):
            raise ConfigError(f"{f.path} takes inputs of shape {other} but {first.path} takes {shape}; "
                              "bench files of different input shapes in separate runs (--out)")
        shape = tuple(b if a == -1 else a for a, b in zip(shape, other))
    return shape


def _copy(out: Path, f: ExternalFile, folder: Path) -> dict:
    """The copy the bench measures (a Keras reference keeps its file name: its suffix says its format)."""
    dest = folder / (f.path.name if f.name == SOURCE.name else f.name)
    with rundir.atomic_path(dest) as tmp:
        shutil.copyfile(f.path, tmp)
    return rundir.file_record(out, dest)


# ---------------------------------------------------------------------------------------------
# Inputs

def _random_inputs(shape: tuple[int, ...], seed: int, first: ExternalFile) -> tuple[np.ndarray, None, str]:
    if any(d < 1 for d in shape):
        raise ConfigError(f"{first.path} takes inputs of shape {shape} (-1: decided at run time), so random "
                          "inputs cannot be made for it; pass --dataset NPZ with inputs of the shape you use")
    x = np.random.default_rng(seed).random((RANDOM_SAMPLES, *shape), dtype=np.float32)
    return x, None, f"random inputs of shape {shape}, uniform in [0, 1), seed {seed}: no labels, no accuracy"


def _load_data(path: Path, shape: tuple[int, ...], first: ExternalFile) -> tuple[np.ndarray, np.ndarray | None, str]:
    """x_test/y_test or x/y from an .npz: uint8 pixels (scaled to [0, 1] as they are fed) or
    float inputs, of the files' input shape; labels optional."""
    how = "save it with numpy.savez(path, x=inputs, y=labels) (or x_test, y_test)"
    if not path.is_file():
        raise DataError(f"--dataset {path}: no such file; {how}")
    try:
        with np.load(path, allow_pickle=False) as z:
            xk, yk = ("x_test", "y_test") if "x_test" in z.files else ("x", "y")
            if xk not in z.files:
                raise DataError(f"--dataset {path}: no array 'x_test' or 'x' (found {z.files}); {how}")
            x, y = z[xk], (z[yk] if yk in z.files else None)
    except DataError:
        raise
    except Exception as e:  # zipfile/pickle/format errors: the file is not an .npz
        raise DataError(f"--dataset {path}: not a readable .npz ({type(e).__name__}); {how}") from e
    got = tuple(x.shape[1:])
    if got + (1,) == shape:
        x = x[..., None]
    elif len(got) != len(shape) or any(a != b and b != -1 for a, b in zip(got, shape)):
        raise DataError(f"--dataset {path}: inputs have shape {got} per sample but {first.path} takes {shape}; "
                        f"pass inputs of shape (N, {', '.join(map(str, shape))})")
    if len(x) == 0 or x.dtype.kind not in "uif":
        raise DataError(f"--dataset {path}: '{xk}' must hold at least one numeric input, got {x.shape} {x.dtype}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise DataError(f"--dataset {path}: '{yk}' must be integer labels of shape ({len(x)},), got "
                            f"{y.shape} {y.dtype}")
        y = y.astype(np.int64)
    labels = f"{len(x)} inputs with labels" if y is not None else f"{len(x)} inputs, no labels: no accuracy"
    return x, y, f"{xk} of {path.name} ({labels})"
