"""How long does the model scan (edgekit.security.scan) add before a model is loaded?

    python bench/bench_scan.py                 # the three reference networks, saved as .keras

Each reference network (edgekit.core.networks, 28x28x1, 10 classes, untrained: the scan reads the
config and the graph, never the weight values) is saved as .keras into a temporary folder and
scanned:
  cold   `edgekit.security.scan.scan_model` in a fresh Python process: "added" is the scan with its own
         imports (modelscan) after the imports loading a model needs anyway (TensorFlow, tf_keras,
         tfmot), "total" includes those too (the worst case: a scan alone in a process);
  warm   --repeats scans in one process after one unmeasured scan (what every further model in
         the same process costs); median and max.
Target: the scan adds under 2 s per model (cold, "added") on 2 cores. Every scan must find
nothing (these are edgekit's own networks). Writes bench/results/scan_time.json.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgekit  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before anything loads TensorFlow)
from edgekit.runtimes import RUNTIME_DISTS
from edgekit.core import rundir  # noqa: E402
from edgekit.core.networks import NETWORKS, build_model  # noqa: E402

TARGET_SECONDS = 2.0
# A fresh process: first what loading a model imports anyway (TensorFlow, tf_keras, tfmot: see
# edgekit.runtimes.keras_tf.load_keras_model), then the scan with its own imports (modelscan).
COLD = ("import sys, time; t0 = time.perf_counter(); import edgekit, tensorflow, tf_keras; "
        "import tensorflow_model_optimization; t1 = time.perf_counter(); from edgekit.security.scan import scan_model; "
        "r = scan_model(sys.argv[1]); t2 = time.perf_counter(); print(t2 - t0, t2 - t1, len(r.findings))")


def cold_scan(path: Path) -> tuple[float, float, int]:
    """(seconds with every import, seconds the scan adds to a process that loads models, findings)."""
    out = subprocess.run([sys.executable, "-c", COLD, str(path)], capture_output=True, text=True, check=True)
    total, added, findings = out.stdout.split()
    return float(total), float(added), int(findings)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "bench/results/scan_time.json"))
    args = ap.parse_args(argv)
    from edgekit.security.scan import scan_model

    rows = []
    load_before = os.getloadavg()[0]   # the machine is shared: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        for name in NETWORKS:
            path = Path(tmp) / f"{name}.keras"
            build_model(name).save(path)
            cold_total, cold_added, cold_findings = cold_scan(path)
            first = scan_model(path)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                scan_model(path)
                times.append(time.perf_counter() - t0)
            row = {"network": name, "format": "keras", "size_bytes": path.stat().st_size,
                   "findings": len(first.findings) + cold_findings, "cold_total_seconds": round(cold_total, 3),
                   "cold_added_seconds": round(cold_added, 3),
                   "warm_median_seconds": round(statistics.median(times), 4),
                   "warm_max_seconds": round(max(times), 4)}
            row["met"] = row["findings"] == 0 and row["cold_added_seconds"] < TARGET_SECONDS
            rows.append(row)
            print(f"{name:7s} findings={row['findings']} cold: added={row['cold_added_seconds']:.2f}s "
              f"(with TensorFlow's import {row['cold_total_seconds']:.2f}s) "
                  f"warm median={row['warm_median_seconds'] * 1000:.1f}ms max={row['warm_max_seconds'] * 1000:.1f}ms")
    result = {"command": "python bench/bench_scan.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "date_utc": rundir.utc_now(), "environment": rundir.versions(RUNTIME_DISTS), "target_seconds": TARGET_SECONDS,
              "repeats": args.repeats, "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "rows": rows, "all_met": all(r["met"] for r in rows)}
    rundir.atomic_write_json(args.out, result)
    print(f"{'all met' if result['all_met'] else 'MISSED'}: target < {TARGET_SECONDS} s per model; {args.out}")
    return 0 if result["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
