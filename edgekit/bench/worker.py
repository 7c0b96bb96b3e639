"""One benchmark worker: a subprocess that runs one runtime over many files.

Each runtime is measured in a process of its own, so its peak resident memory is its own (no
TensorFlow in the LiteRT or ONNX Runtime numbers), its thread pools are set once (TensorFlow
fixes them at first use: one Keras worker per thread count), and a runtime that crashes takes
down only its worker (edgekit.bench restarts one for the files left).

    python -m edgekit.bench.worker JOB.json

The job (an edgekit.bench.job.BenchJob planned by edgekit.bench.plan, written as JSON by
edgekit.bench) names the runtime, the files ("units"), the option sets, threads, batches, the
timing settings and the test images (.npy). The worker writes one JSON
event per line to its stdout and nothing else there (anything a library prints goes to stderr):
  {"type": "ready", "baseline_rss_mb", "rss_resets"}  runtime imported, data loaded, no model yet
  {"type": "unit", "id"}                              starting a file
  {"type": "timing", "id", "options", "threads", "batch", "stats" | "error", "peak_rss_mb", "seconds"}
  {"type": "predictions", "id", "options", "classes" | "error", "seconds"}
  {"type": "unavailable", "error"}                    the runtime is not installed
  {"type": "io", "id", "input_shape", "input_dtype", "input_quant" | "error"}   describe jobs only
With `outputs_dir`, each "predictions" event also names an .npy of the outputs ("outputs").
Peak memory: see `peak_rss_mb`.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.bench.job import BenchJob
from edgekit.core.resources import peak_rss_mb, release_memory, reset_peak_rss, rss_mb
from edgekit.core.timing import TimingSettings
from edgekit.errors import one_line

PREDICT_CHUNK = 2048   # images converted to float at a time (the data stays uint8 until then)

Emit = Callable[..., None]


# ---------------------------------------------------------------------------------------------
# The work

def _error(e: BaseException) -> str:
    """An error for a record: its first line (400 characters at most) and, when it is not
    edgekit's own, its type and the file:line it was raised at (a worker keeps no traceback)."""
    return one_line(e, limit=400, where=True)


def as_float(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> the [0, 1] float32 the models take; float data passes through."""
    from edgekit.core.data import to_float

    return to_float(x) if x.dtype == np.uint8 else np.asarray(x, np.float32)


def predict_classes(session, x: np.ndarray, batch_size: int, keep: list | None = None) -> np.ndarray:
    """Top-1 class of every image, batched as the runtime allows; the outputs are appended to
    `keep` when given (a reference comparison needs them, not only their argmax)."""
    classes = []
    for i in range(0, len(x), PREDICT_CHUNK):
        logits = session.predict(as_float(x[i:i + PREDICT_CHUNK]), batch_size=batch_size)
        flat = np.asarray(logits).reshape(len(logits), -1)
        classes.append(flat.argmax(axis=1))
        if keep is not None:
            keep.append(flat)
    return np.concatenate(classes)


def timing_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` test images (cycled if the set is smaller), as float inputs."""
    idx = np.arange(batch) % len(x)
    return as_float(x[idx])


def run_job(job: BenchJob, emit: Emit) -> None:
    from edgekit.runtimes import get_runtime

    runtime = get_runtime(job.runtime)
    if not runtime.available():
        emit(type="unavailable", error=f"runtime '{runtime.name}' is not installed here; "
                                       f"install it (pip install -e .) or drop it from --runtimes")
        return
    data = {key: np.load(path, allow_pickle=False) for key, path in job.data.items()}
    timing_threads = job.threads if job.timing else ()
    release_memory()
    emit(type="ready", baseline_rss_mb=rss_mb(), rss_resets=reset_peak_rss())
    for unit in job.units:
        emit(type="unit", id=unit.id)
        if job.describe:
            _describe(runtime, unit, emit)
            continue
        x, path = data[unit.data], Path(unit.path)
        for options, limit in zip(job.option_sets, job.predict_samples):
            x_predict = x if limit is None else x[:limit]
            predicted = False
            for threads in timing_threads:
                predict = job.predict and threads == job.predict_threads
                _session(runtime, job, Session(unit.id, path, options, threads, x, job.timing,
                                               x_predict if predict else None), emit)
                predicted |= predict
            if job.predict and not predicted:
                _session(runtime, job, Session(unit.id, path, options, job.predict_threads, x, None, x_predict), emit)


def _describe(runtime, unit, emit: Emit) -> None:
    """Open the file on its runtime (here, in the worker: a file from elsewhere is never opened in
    edgekit's own process) and say what input it takes."""
    try:
        session = runtime.open(Path(unit.path), threads=1)
        quant = session.input_quant
        emit(type="io", id=unit.id, input_shape=[int(d) for d in session.input_shape],
             input_dtype=np.dtype(session.input_dtype).name,
             input_quant=None if quant is None else [float(quant[0]), int(quant[1])])
    except Exception as e:  # the runtime's own load errors vary; the caller turns them into one line
        emit(type="io", id=unit.id, error=_error(e))


@dataclass(frozen=True)
class Session:
    """One opened session of one unit: what it times (`timing` None: nothing) and predicts
    (`x_predict` None: nothing)."""
    uid: int
    path: Path
    options: dict
    threads: int
    x: np.ndarray                  # the unit's test images (timing batches are cut from them)
    timing: TimingSettings | None
    x_predict: np.ndarray | None


def _session(runtime, job: BenchJob, s: Session, emit: Emit) -> None:
    """One session: every batch size timed (smallest first), then the accuracy run on the same
    session (a second load of a QAT Keras model alone costs ~2.4 s). The memory peak is reset
    before the session opens, so each timing record's peak covers this session up to its batch
    and not the accuracy run's larger batches."""
    from edgekit.bench.latency import benchmark

    release_memory()
    reset_peak_rss()
    t0 = time.monotonic()
    batches = sorted(job.batches) if s.timing else []
    threads, x_predict = s.threads, s.x_predict
    base = {"id": s.uid, "options": s.options}
    try:
        session = runtime.open(s.path, threads=threads, **s.options)
    except Exception as e:  # a runtime's own error types vary; the record says which
        for batch in batches:
            emit(type="timing", **base, threads=threads, batch=batch, error=_error(e))
        if x_predict is not None:
            emit(type="predictions", **base, error=_error(e), seconds=round(time.monotonic() - t0, 3))
        return
    for batch in batches:
        t0 = time.monotonic()
        try:
            fn = session.bind(session.prepare(timing_batch(s.x, batch)))
            stats = benchmark(fn, batch, s.timing)
        except Exception as e:
            emit(type="timing", **base, threads=threads, batch=batch, error=_error(e), peak_rss_mb=peak_rss_mb())
            continue
        emit(type="timing", **base, threads=threads, batch=batch, stats=stats.to_dict(),
             peak_rss_mb=peak_rss_mb(), seconds=round(time.monotonic() - t0, 3))
    if x_predict is not None:
        t0 = time.monotonic()
        keep = [] if job.outputs_dir else None
        try:
            classes = predict_classes(session, x_predict, job.predict_batch, keep)
        except Exception as e:
            emit(type="predictions", **base, error=_error(e), seconds=round(time.monotonic() - t0, 3))
            return
        saved = {}
        if keep is not None:
            tag = hashlib.sha256(json.dumps(s.options, sort_keys=True).encode()).hexdigest()[:12]
            out = Path(job.outputs_dir) / f"{job.runtime}-{s.uid}-{tag}.npy"
            np.save(out, np.concatenate(keep))
            saved = {"outputs": str(out)}
        emit(type="predictions", **base, classes=classes.tolist(), **saved, seconds=round(time.monotonic() - t0, 3))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgekit.bench.worker JOB.json", file=sys.stderr)
        return 2
    job = BenchJob.from_json(Path(argv[0]).read_text())
    # Events own the real stdout; fd 1 now points at stderr, so a library printing to stdout
    # (C++ logs, Python prints) cannot corrupt the event stream.
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(**event) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    run_job(job, emit)
    events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
