"""What `edgekit bench` measures: the files the manifest lists, the images each model is judged
on, and the worker jobs that measure them (one per runtime; edgekit.bench runs them). Files that
another tool made (`edgekit bench --model`) are listed in the manifest's "external" section
(written by edgekit.bench.external) and read here like any other.

Nothing here runs a model: files, test sets and jobs are plain data, so the plan can be read
and tested without a runtime.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.core import rundir
from edgekit.bench.job import BenchJob, BenchUnit
from edgekit.errors import RunDirError
from edgekit.core.timing import TimingSettings
from edgekit.runtimes import RUNTIMES
from edgekit.core.variants import Role, keras_variant

SOURCE, QAT = keras_variant(Role.SOURCE), keras_variant(Role.QAT)   # the two Keras models' rows

QUICK_SAMPLES = 1000        # --quick: accuracy on the first 1000 test images
# A runtime's first option set (its default: litert xnnpack=on) is judged on the whole test set;
# the others (xnnpack=off, the slower reference kernels) on the first 2000 images, which keeps the
# full bench in budget. Each record's `samples` says which.
SECONDARY_SAMPLES = 2000
PREDICT_BATCH = 256         # batch of the accuracy runs
EXTERNAL = "external"       # the manifest section of `edgekit bench --model` (edgekit.bench.external)


@dataclass(frozen=True)
class ModelFile:
    """One file to bench, as the manifest describes it."""
    model: str
    variant: str          # keras-fp32 | keras-qat | an export variant name
    format: str           # keras | tflite | onnx
    variant_class: str    # float | fp16 | dynamic | int8-ptq | int8-qat | fake-quant (keras-qat)
    path: Path
    rel_path: str         # as recorded in the manifest
    sha256: str | None
    size_bytes: int | None


@dataclass(frozen=True, eq=False)
class TestSet:
    """The images every file of a model is judged on (uint8 pixels, or float inputs)."""
    key: str
    description: str
    x: np.ndarray
    y: np.ndarray | None


def find_model_files(run_dir: Path, manifest: dict) -> list[ModelFile]:
    """keras-fp32 (the trained model, or the source of `export --model`), keras-qat, and every
    export variant with status ok, in manifest order."""
    train = rundir.model_records(manifest, "train")
    export = rundir.model_records(manifest, "export")
    files: list[ModelFile] = []

    def add(model: str, variant: str, fmt: str, cls: str, rec: dict | None) -> None:
        if rec and rec.get("path"):
            path = rundir.resolve(run_dir, rec["path"])
            size = rundir.size_bytes(path) if path.exists() else rec.get("size_bytes")
            files.append(ModelFile(model, variant, fmt, cls, path, rec["path"], rec.get("sha256"), size))

    for model in dict.fromkeys([*train, *export]):
        t, e = train.get(model), export.get(model, {})
        if t and t.get("status", "ok") == "ok":
            source = next((f for f in t.get("files", []) if f["path"] == t.get("model")), None)
            add(model, SOURCE.name, SOURCE.format, SOURCE.variant_class, source or {"path": t.get("model")})
        elif e.get("source"):
            add(model, SOURCE.name, SOURCE.format, SOURCE.variant_class, e["source"])
        qat = e.get("qat") or {}
        if qat.get("status") == "ok":
            add(model, QAT.name, QAT.format, QAT.variant_class, qat.get("file"))
        for variant, v in e.get("variants", {}).items():
            if v.get("status") == "ok":
                add(model, variant, v.get("format", Path(v["file"]["path"]).suffix.lstrip(".")),
                    v.get("variant_class", "unknown"), v.get("file"))
    ext = rundir.section(manifest, EXTERNAL)
    for variant, rec in (ext.get("files") or {}).items():
        add(ext["model"], variant, rec["format"], rec["variant_class"], rec)
    return files


def references(manifest: dict) -> dict[str, str]:
    """model -> the variant its agreement is measured against: the float Keras model, unless
    `bench --model --reference` named another file (or none: no agreement)."""
    ext = rundir.section(manifest, EXTERNAL)
    return {ext["model"]: ext.get("reference")} if ext.get("model") else {}


def file_problem(f: ModelFile) -> str | None:
    if not f.path.exists():
        return f"{f.rel_path} is missing although the manifest lists it; re-run the stage that made it"
    if f.sha256 and rundir.sha256_file(f.path) != f.sha256:
        return f"{f.rel_path} no longer matches its recorded sha256; re-run the stage that made it (--force)"
    return None


def load_test_sets(run_dir: Path, manifest: dict, models: list[str], quick: bool) -> dict[str, TestSet]:
    """Per model: the test set of the data it was trained on; for a model exported with
    `export --model`, the inputs export's parity ran on, as export recorded them."""
    from edgekit.core.data import load_dataset

    train = rundir.section(manifest, "train")
    cache: dict[str, TestSet] = {}
    out: dict[str, TestSet] = {}
    ext = rundir.section(manifest, EXTERNAL)
    for model in models:
        t = rundir.model_record(manifest, "train", model)
        if model == ext.get("model"):
            rec = ext.get("inputs") or {}
            key = json.dumps(["external", rec.get("path"), rec.get("sha256")])
            cache[key] = _parity_inputs(run_dir, model, rec, key, "edgekit bench --model ... --force")
        elif t:
            cfg = t.get("config", {})
            name = cfg.get("dataset") or train.get("dataset", {}).get("name")
            key = json.dumps(["dataset", name, cfg.get("data_dir")])
            if key not in cache:
                ds = load_dataset(name, cfg.get("data_dir"))
                cache[key] = TestSet(key, f"{ds.name} test set", ds.x_test, ds.y_test)
        else:
            rec = rundir.model_record(manifest, "export", model).get("parity_inputs") or {}
            key = json.dumps(["parity_inputs", rec.get("path"), rec.get("sha256")])
            if key not in cache:
                cache[key] = _parity_inputs(run_dir, model, rec, key)
        ts = cache[key]
        if quick and len(ts.x) > QUICK_SAMPLES:
            ts = TestSet(key + "-quick", ts.description + f", first {QUICK_SAMPLES}", ts.x[:QUICK_SAMPLES],
                         None if ts.y is None else ts.y[:QUICK_SAMPLES])
            cache[ts.key] = ts
        out[model] = ts
    return out


def _parity_inputs(run_dir: Path, model: str, rec: dict, key: str, remedy: str = "edgekit export") -> TestSet:
    """The images (x, labels y if the user's sample had them) export judged a user model on, or
    the inputs `bench --model` recorded, from the file that stage wrote: bench measures on
    exactly those, never on inputs made again."""
    rel = rec.get("path")
    if not rel:
        raise RunDirError(f"{run_dir / rundir.MANIFEST} records no parity inputs for '{model}' "
                          f"(export/{model}/parity_inputs.npz); re-run `{remedy}`")
    path = rundir.resolve(run_dir, rel)
    if not path.is_file():
        raise RunDirError(f"{path} is missing although the manifest lists it; re-run `{remedy}`")
    if rundir.sha256_file(path) != rec.get("sha256"):
        raise RunDirError(f"{path} no longer matches its recorded sha256; re-run `{remedy}` (--force)")
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], (z["y"] if "y" in z.files else None)
    except (OSError, ValueError, KeyError) as e:
        raise RunDirError(f"{path} holds no parity inputs x ({type(e).__name__}); re-run `{remedy}`") from e
    return TestSet(key, rec.get("description") or f"parity inputs of {model}", x, y)


def plan_jobs(files: list[ModelFile], tests: dict[str, TestSet], data_paths: dict[str, str],
              runtimes: tuple[str, ...], option_sets: dict[str, list[dict]], threads: tuple[int, ...],
              batches: tuple[int, ...], timing: TimingSettings, refs: dict[str, str | None] | None = None,
              outputs_dir: str | None = None) -> list[BenchJob]:
    """One worker per runtime (per thread count for Keras, whose thread pools are fixed at
    first use). A reference (the float Keras model, or the file `refs` names for its model) whose
    runtime is not benched still gets a worker that only predicts: every agreement figure is
    measured against it. `outputs_dir`: the workers keep every accuracy run's outputs there."""
    units = [BenchUnit(i, f.model, f.variant, str(f.path), tests[f.model].key) for i, f in enumerate(files)]
    by_id = dict(zip((u.id for u in units), files))
    jobs = []
    for name in runtimes:
        rt = RUNTIMES[name]
        mine = tuple(u for u in units if rt.can_run(by_id[u.id].path))
        if not mine:
            continue
        # The accuracy run shares the session timed with the fewest threads: on a shared
        # 2-core machine, more threads than idle cores can make a run 100x slower (spin-waits).
        job = BenchJob(runtime=name, units=mine, data=data_paths, option_sets=tuple(option_sets[name]),
                       threads=tuple(threads), batches=tuple(batches), timing=timing, predict=True,
                       predict_threads=min(threads),
                       predict_samples=(None,) + (SECONDARY_SAMPLES,) * (len(option_sets[name]) - 1),
                       predict_batch=PREDICT_BATCH, outputs_dir=outputs_dir)
        if RUNTIMES[name].runs_sources:  # one worker per thread count; the accuracy run in the first
            jobs += [replace(job, threads=(t,), predict=t == min(threads), predict_threads=t) for t in threads]
        else:
            jobs.append(job)
    refs = refs or {}
    for rt in RUNTIMES.values():
        if rt.name in runtimes:
            continue
        ref = tuple(u for u in units if by_id[u.id].variant == refs.get(u.model, SOURCE.name)
                    and rt.can_run(by_id[u.id].path))
        if ref:
            jobs.insert(0, BenchJob(runtime=rt.name, units=ref, data=data_paths, option_sets=(rt.option_grid()[0],),
                                    threads=(), batches=tuple(batches), timing=None, predict=True,
                                    predict_threads=min(threads), predict_samples=(None,),
                                    predict_batch=PREDICT_BATCH, reference_only=True, outputs_dir=outputs_dir))
    return jobs
