"""Runtimes x variants at batch 1 / 1 thread, per network, and int8 against float32.

    edgekit bench --run runs/latest                               # (edgekit run does this too)
    python bench/bench_runtimes.py --run runs/latest              # table from results.json
    python bench/bench_runtimes.py --run runs/latest --sweep      # + why: int8/fp32 per runtime option

The table reads the run's results.json (nothing is re-measured): p50 ms of every variant on every
runtime configuration, the fastest float32 deployment, the fastest int8 deployment and their
ratio (target: int8 <= fp32 for every network), and each runtime's own int8/fp32 ratio.

--sweep measures, in this process, interleaved over --rounds rounds (the machine is shared:
interleaving puts both sides of each ratio under the same load), the fp32 and int8 files of
each network on the options that decide the int8 path: ONNX Runtime graph optimization levels
(QDQ -> QLinearConv fusion is in `extended`, the NHWC int8 layout in `all`) and LiteRT with
XNNPACK off, on, and on with `experimental_default_delegate_latest_features`. min and p50 are
both printed: min is what the kernels can do, p50 what the shared machine let them do.
Writes bench/results/runtimes.json.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgekit  # noqa: E402,F401
from edgekit.runtimes import RUNTIME_DISTS
from edgekit.core import rundir  # noqa: E402

FLOAT = ("float",)
INT8 = ("int8-ptq", "int8-qat")
VARIANT_ROWS = ("keras-fp32", "keras-qat", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq",
                "tflite-int8-qat", "onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat")


def label(r: dict) -> str:
    opts = " ".join(f"{k}={'on' if v is True else 'off' if v is False else v}"
                    for k, v in sorted((r.get("runtime_options") or {}).items()))
    return f"{r['runtime']} {opts}".strip()


def table(results: dict) -> tuple[str, list[dict]]:
    ok = [r for r in results["records"] if r["status"] == "ok" and r["threads"] == 1 and r["batch"] == 1]
    lines, summary = [], []
    for net in sorted({r["model"] for r in ok}):
        mine = [r for r in ok if r["model"] == net]
        cols = sorted({label(r) for r in mine})
        variants = sorted({r["variant"] for r in mine},
                          key=lambda v: VARIANT_ROWS.index(v) if v in VARIANT_ROWS else 99)
        cell = {(r["variant"], label(r)): r["p50_ms"] for r in mine}
        w = max(14, *(len(c) for c in cols))
        lines.append(f"\n{net}: p50 ms, batch 1, 1 thread")
        lines.append(f"{'variant':16}" + "".join(f"{c:>{w + 2}}" for c in cols))
        for v in variants:
            lines.append(f"{v:16}" + "".join(f"{'' if (v, c) not in cell else f'{cell[(v, c)]:.4f}':>{w + 2}}"
                                             for c in cols))
        fl = [r for r in mine if r["variant_class"] in FLOAT]
        i8 = [r for r in mine if r["variant_class"] in INT8]
        row = {"model": net}
        if fl and i8:
            f, i = min(fl, key=lambda r: r["p50_ms"]), min(i8, key=lambda r: r["p50_ms"])
            ratio = i["p50_ms"] / f["p50_ms"]
            row.update(fastest_fp32={"variant": f["variant"], "runtime": label(f), "p50_ms": f["p50_ms"]},
                       fastest_int8={"variant": i["variant"], "runtime": label(i), "p50_ms": i["p50_ms"]},
                       int8_over_fp32=ratio, met=ratio <= 1.0)
            lines.append(f"fastest fp32: {f['variant']} on {label(f)} {f['p50_ms']:.4f} ms; fastest int8: "
                         f"{i['variant']} on {label(i)} {i['p50_ms']:.4f} ms; int8/fp32 = {ratio:.3f} "
                         f"({'met' if ratio <= 1.0 else 'MISSED'}: target <= 1)")
        per_runtime = {}
        for c in cols:
            fc = [r for r in fl if label(r) == c]
            ic = [r for r in i8 if label(r) == c]
            if fc and ic:
                best_i = min(ic, key=lambda r: r["p50_ms"])
                per_runtime[c] = {"int8_variant": best_i["variant"],
                                  "ratio": best_i["p50_ms"] / min(r["p50_ms"] for r in fc)}
        if per_runtime:
            lines.append("per runtime, best int8 / fp32: " + "; ".join(
                f"{c} {v['ratio']:.3f} ({v['int8_variant']})" for c, v in per_runtime.items()))
        row["per_runtime"] = per_runtime
        summary.append(row)
    return "\n".join(lines), summary


# --------------------------------------------------------------------------------------- sweep

def _litert(path: Path, xnnpack: bool, latest: bool = False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekit.runtimes import quantize

    it = Interpreter(model_path=str(path), num_threads=1, experimental_default_delegate_latest_features=latest,
                     experimental_op_resolver_type=OpResolverType.AUTO if xnnpack
                     else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.full(d["shape"], 0.5, np.float32)
    if np.dtype(d["dtype"]).kind == "i":
        x = quantize(x, *d["quantization"], np.dtype(d["dtype"]))
    it.set_tensor(d["index"], x)
    return it.invoke


def _ort(path: Path, level: str):
    from edgekit.runtimes.onnxrt import open_session

    s = open_session(path, threads=1, graph_optimization=level)
    return s.bind(s.prepare(np.full((1, *s.input_shape[1:]), 0.5, np.float32)))


def interleaved(fns: dict, rounds: int, segment_s: float = 0.02) -> dict:
    """p50 and min of each callable, measured in alternating short segments."""
    est = {}
    for k, fn in fns.items():
        for _ in range(20):
            fn()
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        est[k] = (time.perf_counter() - t0) / 20
    samples = {k: [] for k in fns}
    keys = list(fns)
    for r in range(rounds):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            fn, n = fns[k], max(5, int(segment_s / max(est[k], 1e-7)))
            for _ in range(n):
                t0 = time.perf_counter_ns()
                fn()
                samples[k].append(time.perf_counter_ns() - t0)
    return {k: {"p50_ms": float(np.median(v)) / 1e6, "min_ms": float(np.min(v)) / 1e6, "runs": len(v)}
            for k, v in samples.items()}


def sweep(run: Path, rounds: int) -> tuple[str, list[dict]]:
    m = rundir.load_manifest(run)
    lines, rows = [], []
    for net, rec in m.get("stages", {}).get("export", {}).get("models", {}).items():
        files = {name: rundir.resolve(run, v["file"]["path"]) for name, v in rec.get("variants", {}).items()
                 if v.get("file") and rundir.resolve(run, v["file"]["path"]).exists()}
        fns = {}
        for name, path in files.items():
            if name.startswith("onnx-") and not name.endswith("fp16"):
                for level in ("basic", "extended", "all"):
                    fns[(name, f"onnxruntime graph_optimization={level}")] = _ort(path, level)
            elif name in ("tflite-fp32", "tflite-int8-ptq", "tflite-int8-qat", "tflite-dynamic"):
                fns[(name, "litert xnnpack=off")] = _litert(path, False)
                fns[(name, "litert xnnpack=on")] = _litert(path, True)
                fns[(name, "litert xnnpack=on latest_features")] = _litert(path, True, True)
        got = interleaved(fns, rounds)
        lines.append(f"\n{net}: sweep, batch 1, 1 thread ({rounds} interleaved rounds): p50 ms / min ms")
        configs = sorted({c for _, c in got})
        for c in configs:
            cells = {v: got[(v, c)] for v, cc in got if cc == c}
            fp32 = next((s for v, s in cells.items() if v.endswith("fp32")), None)
            parts = []
            for v, s in sorted(cells.items()):
                ratio = "" if fp32 is None or v.endswith("fp32") else \
                    f" (x{s['p50_ms'] / fp32['p50_ms']:.2f} p50, x{s['min_ms'] / fp32['min_ms']:.2f} min)"
                parts.append(f"{v} {s['p50_ms']:.4f}/{s['min_ms']:.4f}{ratio}")
                rows.append({"model": net, "variant": v, "config": c, **s,
                             "p50_over_fp32": None if fp32 is None else s["p50_ms"] / fp32["p50_ms"],
                             "min_over_fp32": None if fp32 is None else s["min_ms"] / fp32["min_ms"]})
            lines.append(f"  {c:38} " + "; ".join(parts))
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/latest")
    ap.add_argument("--sweep", action="store_true", help="also measure int8/fp32 across runtime options")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "runtimes.json"))
    args = ap.parse_args(argv)
    run = Path(args.run)
    path = run / "results.json"
    if not path.exists():
        print(f"{path} does not exist; run `edgekit bench --run {run}` first", file=sys.stderr)
        return 2
    results = json.loads(path.read_text())
    text, summary = table(results)
    print(f"results: {path} (measured {results.get('created_utc')}, quick={results['settings'].get('quick')})")
    print(text)
    out = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
           "date_utc": rundir.utc_now(), "environment": rundir.versions(RUNTIME_DISTS), "run": str(run),
           "results_created_utc": results.get("created_utc"), "summary": summary}
    if args.sweep:
        stext, rows = sweep(run, args.rounds)
        print(stext)
        out["sweep"] = rows
    rundir.atomic_write_json(args.out, out)
    print(f"\nwritten: {args.out}")
    return 0 if all(r.get("met", True) for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
