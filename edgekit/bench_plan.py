"""What `edgekit bench` measures: the files the manifest lists, the images each model is judged
on, and the worker jobs that measure them (one per runtime; edgekit.bench runs them).

Nothing here runs a model: files, test sets and jobs are plain data, so the plan can be read
and tested without a runtime.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import rundir
from edgekit.latency import TimingSettings
from edgekit.runtimes import RUNTIMES

QUICK_SAMPLES = 1000        # --quick: accuracy on the first 1000 test images
# A runtime's first option set (its default: litert xnnpack=on) is judged on the whole test set;
# the others (xnnpack=off, whose kernels are 4x slower) on the first 2000 images, which keeps the
# full bench in budget. Each record's `samples` says which.
SECONDARY_SAMPLES = 2000
PREDICT_BATCH = 256         # batch of the accuracy runs


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
    stages = manifest.get("stages", {})
    train = stages.get("train", {}).get("models", {})
    export = stages.get("export", {}).get("models", {})
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
            add(model, "keras-fp32", "keras", "float", source or {"path": t.get("model")})
        elif e.get("source"):
            add(model, "keras-fp32", "keras", "float", e["source"])
        qat = e.get("qat") or {}
        if qat.get("status") == "ok":
            add(model, "keras-qat", "keras", "fake-quant", qat.get("file"))
        for variant, v in e.get("variants", {}).items():
            if v.get("status") == "ok":
                add(model, variant, v.get("format", Path(v["file"]["path"]).suffix.lstrip(".")),
                    v.get("variant_class", "unknown"), v.get("file"))
    return files


def file_problem(f: ModelFile) -> str | None:
    if not f.path.exists():
        return f"{f.rel_path} is missing although the manifest lists it; re-run the stage that made it"
    if f.sha256 and rundir.sha256_file(f.path) != f.sha256:
        return f"{f.rel_path} no longer matches its recorded sha256; re-run the stage that made it (--force)"
    return None


def load_test_sets(run_dir: Path, manifest: dict, models: list[str], quick: bool) -> dict[str, TestSet]:
    """Per model: the test set of the data it was trained on; for a model exported with
    `export --model`, the user's sample (labels optional) or the export's random inputs."""
    from edgekit.data import load_calibration, load_dataset

    stages = manifest.get("stages", {})
    train = stages.get("train", {})
    export = stages.get("export", {})
    cache: dict[str, TestSet] = {}
    out: dict[str, TestSet] = {}
    for model in models:
        t = train.get("models", {}).get(model)
        if t:
            cfg = t.get("config", {})
            name = cfg.get("dataset") or train.get("dataset", {}).get("name")
            key = json.dumps(["dataset", name, cfg.get("data_dir")])
            if key not in cache:
                ds = load_dataset(name, cfg.get("data_dir"))
                cache[key] = TestSet(key, f"{ds.name} test set", ds.x_test, ds.y_test)
        else:
            data = export.get("data", {})
            shape = tuple(export.get("models", {}).get(model, {}).get("input_shape") or ())
            if data.get("calibration"):
                key = json.dumps(["sample", data["calibration"], shape])
                if key not in cache:
                    x, y = load_calibration(data["calibration"], shape)
                    cache[key] = TestSet(key, f"user sample {Path(data['calibration']).name}", x, y)
            else:  # the same seeded inputs export's parity used: agreement only, no accuracy
                n = int(data.get("samples") or 500)
                key = json.dumps(["random", n, shape])
                if key not in cache:
                    x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
                    cache[key] = TestSet(key, "random uniform [0, 1) inputs (no labels)", x, None)
        ts = cache[key]
        if quick and len(ts.x) > QUICK_SAMPLES:
            ts = TestSet(key + "-quick", ts.description + f", first {QUICK_SAMPLES}", ts.x[:QUICK_SAMPLES],
                         None if ts.y is None else ts.y[:QUICK_SAMPLES])
            cache[ts.key] = ts
        out[model] = ts
    return out


def plan_jobs(files: list[ModelFile], tests: dict[str, TestSet], data_paths: dict[str, str],
              runtimes: tuple[str, ...], option_sets: dict[str, list[dict]], threads: tuple[int, ...],
              batches: tuple[int, ...], timing: TimingSettings) -> list[dict]:
    """One worker per runtime (per thread count for Keras, whose thread pools are fixed at
    first use). Without the keras runtime, a Keras worker still computes the float model's
    predictions, which every agreement figure is measured against."""
    units = [{"id": i, "model": f.model, "variant": f.variant, "path": str(f.path), "data": tests[f.model].key}
             for i, f in enumerate(files)]
    by_id = dict(zip((u["id"] for u in units), files))
    base = {"data": data_paths, "batches": list(batches), "predict_batch": PREDICT_BATCH,
            "timing": dataclasses.asdict(timing)}
    jobs = []
    for name in runtimes:
        rt = RUNTIMES[name]
        mine = [u for u in units if rt.can_run(by_id[u["id"]].path)]
        if not mine:
            continue
        # The accuracy run shares the session timed with the fewest threads: on a shared
        # 2-core machine, more threads than idle cores can make a run 100x slower (spin-waits).
        job = dict(base, runtime=name, units=mine, option_sets=option_sets[name], predict=True,
                   predict_threads=min(threads), threads=list(threads),
                   predict_samples=[None] + [SECONDARY_SAMPLES] * (len(option_sets[name]) - 1))
        if name == "keras":  # one worker per thread count; the accuracy run in the first
            jobs += [dict(job, threads=[t], predict=t == min(threads), predict_threads=t) for t in threads]
        else:
            jobs.append(job)
    if "keras" not in runtimes:
        ref = [u for u in units if by_id[u["id"]].variant == "keras-fp32"]
        if ref:
            jobs.insert(0, dict(base, runtime="keras", units=ref, option_sets=[{}], predict=True,
                                predict_threads=min(threads), threads=[], timing=None, predict_samples=[None],
                                reference_only=True))
    return jobs

