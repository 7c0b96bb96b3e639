"""Does edgekit's latency harness add overhead? Its p50 against a bare Python loop, interleaved.

    python bench/bench_harness_overhead.py --run runs/latest        # a run made by `edgekit run`

For each chosen file (default: fp32 and int8-qat of every network, TFLite on LiteRT with
XNNPACK and ONNX on ONNX Runtime; batch 1, one thread) one session is opened and timed, in the
same process, two ways, alternating which goes first, for --rounds rounds:
  bare     a plain loop:  t0 = perf_counter_ns(); interpreter.invoke(); ts.append(perf_counter_ns() - t0)
           (ONNX Runtime: session.run_with_iobinding(binding) with a binding made by hand)
  harness  edgekit.bench.latency.measure(session.bind(x)), what `edgekit bench` reports
Both time the same interpreter/session object on the same input, so any difference is the
harness. Prints a table with the p50 ratio harness/bare (target: within 5%) and, for ONNX
Runtime, the p50 of a plain `session.run(None, feed)` loop for reference; writes
bench/results/harness_overhead.json.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgekit  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before anything loads TensorFlow)
from edgekit.runtimes import RUNTIME_DISTS
from edgekit.core import rundir  # noqa: E402
from edgekit.bench.latency import TimingSettings, measure  # noqa: E402
from edgekit.runtimes import open_file  # noqa: E402

DEFAULT_VARIANTS = ("tflite-fp32", "tflite-int8-qat", "onnx-fp32", "onnx-int8-qat")
TARGET = 0.05
SEGMENT_SECONDS = 0.02   # each bare or harness segment of a round: short, so both arms see the same machine state


def bare_litert(session, n: int) -> list[int]:
    """The loop anyone would write around invoke() (inputs already set by session.bind)."""
    interpreter = session.interpreter
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        interpreter.invoke()
        ts.append(time.perf_counter_ns() - t0)
    return ts


def bare_ort_factory(session, x: np.ndarray):
    """The same for ONNX Runtime: an IOBinding made by hand, then run_with_iobinding in a loop."""
    sess = session.session
    binding = sess.io_binding()
    binding.bind_cpu_input(sess.get_inputs()[0].name, x)
    binding.bind_output(sess.get_outputs()[0].name)

    def loop(n: int) -> list[int]:
        ts = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            sess.run_with_iobinding(binding)
            ts.append(time.perf_counter_ns() - t0)
        return ts

    def plain_run(n: int) -> list[int]:
        feed = {sess.get_inputs()[0].name: x}
        ts = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            ts.append(time.perf_counter_ns() - t0)
        return ts
    return loop, plain_run


def compare(path: Path, x: np.ndarray, rounds: int) -> dict:
    session = open_file(path, threads=1)
    xp = session.prepare(x)
    harness_fn = session.bind(xp)
    if path.suffix == ".tflite":
        def bare(n):
            return bare_litert(session, n)
        plain = None
    else:
        bare, plain = bare_ort_factory(session, xp)
    for _ in range(50):  # warm-up: weights packed, caches and pools hot
        harness_fn()
    est_ms = float(np.median(bare(200))) / 1e6
    n = int(np.clip(SEGMENT_SECONDS * 1000 / max(est_ms, 1e-4), 20, 20000))
    settings = TimingSettings(warmup_runs=0, warmup_seconds=0.0, min_runs=n, min_seconds=0.0, max_seconds=60.0,
                              repeats=1)
    bare_ms, harness_ms, plain_ms, round_ratios = [], [], [], []
    for r in range(rounds):
        order = ("bare", "harness") if r % 2 == 0 else ("harness", "bare")
        got = {}
        for which in order:
            if which == "bare":
                got[which] = [t / 1e6 for t in bare(n)]
            else:
                got[which] = measure(harness_fn, settings)[0]
        if plain is not None:
            plain_ms += [t / 1e6 for t in plain(n)]
        bare_ms += got["bare"]
        harness_ms += got["harness"]
        round_ratios.append(float(np.median(got["harness"]) / np.median(got["bare"])))
    b, h = float(np.median(bare_ms)), float(np.median(harness_ms))
    return {"bare_p50_ms": b, "harness_p50_ms": h, "ratio": h / b, "round_ratios": round_ratios,
            "runs_per_segment": n, "bare_runs": len(bare_ms), "harness_runs": len(harness_ms),
            "bare_min_ms": float(np.min(bare_ms)), "harness_min_ms": float(np.min(harness_ms)),
            "session_run_p50_ms": float(np.median(plain_ms)) if plain_ms else None}


def chosen_files(run: Path, variants: tuple[str, ...]) -> list[tuple[str, str, Path]]:
    m = rundir.load_manifest(run)
    out = []
    for net, rec in m.get("stages", {}).get("export", {}).get("models", {}).items():
        for name in variants:
            v = rec.get("variants", {}).get(name)
            if v and v.get("file") and rundir.resolve(run, v["file"]["path"]).exists():
                out.append((net, name, rundir.resolve(run, v["file"]["path"])))
    return out


def test_input(run: Path) -> np.ndarray:
    """One real test image of the run's data set (timings do not depend on it, but it is honest)."""
    from edgekit.core.data import load_dataset, to_float

    m = rundir.load_manifest(run)
    train = m.get("stages", {}).get("train", {})
    cfg = next(iter(train.get("models", {}).values()), {}).get("config", {})
    name = cfg.get("dataset") or train.get("dataset", {}).get("name") or "synthetic"
    return to_float(load_dataset(name, cfg.get("data_dir")).x_test[:1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/latest", help="an exported run directory")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma list of export variants")
    ap.add_argument("--rounds", type=int, default=40, help="interleaved bare/harness rounds per file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "harness_overhead.json"))
    args = ap.parse_args(argv)
    run = Path(args.run)
    files = chosen_files(run, tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    if not files:
        print(f"no exported files of {args.variants} in {run}; run `edgekit run --out {run}` first", file=sys.stderr)
        return 2
    x = test_input(run)
    rows = []
    header = (f"{'model':7} {'variant':16} {'runtime':11} {'bare p50 ms':>11} {'harness p50':>11} {'ratio':>7} "
              f"{'rounds min..max':>15} {'run() p50':>10}")
    print(header)
    for net, variant, path in files:
        row = {"model": net, "variant": variant, "runtime": "litert" if path.suffix == ".tflite" else "onnxruntime",
               "file": str(path.relative_to(run)) if path.is_relative_to(run) else str(path)}
        row.update(compare(path, x, args.rounds))
        rows.append(row)
        rr = row["round_ratios"]
        run_p50 = "" if row["session_run_p50_ms"] is None else f"{row['session_run_p50_ms']:.4f}"
        print(f"{net:7} {variant:16} {row['runtime']:11} {row['bare_p50_ms']:11.4f} {row['harness_p50_ms']:11.4f} "
              f"{row['ratio']:7.3f} {min(rr):7.3f}..{max(rr):.3f} {run_p50:>10}", flush=True)
    verdict = {}
    for rt in ("litert", "onnxruntime"):
        mine = [r for r in rows if r["runtime"] == rt]
        if mine:
            worst = max(abs(r["ratio"] - 1) for r in mine)
            verdict[rt] = {"max_abs_deviation": worst, "passed": worst <= TARGET}
            print(f"{rt}: harness p50 within {worst:.1%} of the bare loop (target {TARGET:.0%}): "
                  f"{'met' if worst <= TARGET else 'MISSED'}")
    out = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
           "date_utc": rundir.utc_now(), "environment": rundir.versions(RUNTIME_DISTS), "target": TARGET,
           "settings": {"rounds": args.rounds, "segment_seconds": SEGMENT_SECONDS, "threads": 1, "batch": 1,
                        "litert_options": {"xnnpack": True}, "onnxruntime_options": {"graph_optimization": "all"}},
           "rows": rows, "verdict": verdict}
    rundir.atomic_write_json(args.out, out)
    print(f"written: {args.out}")
    return 0 if all(v["passed"] for v in verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
