"""Every target of the train/export/bench/run issues, read off one finished run directory.

    .venv/bin/edgekit run --out runs/latest          # a fresh, uninterrupted default run
    .venv/bin/python bench/targets.py --run runs/latest

Prints one row per target (figure, limit, met?) and writes bench/results/targets.json.
Nothing is measured here: every figure comes from the run's manifest.json and results.json.

Two targets depend on the CPU, so they name the CPU class the run was measured on (results.json
"machine", else its environment, else the train stage's versions):
- "fastest int8 at least as fast as fastest fp32" is a target only where the ISA has int8 dot
  products (VNNI, AMX, ARM dotprod/i8mm: edgekit.core.machine.has_int8_dot_product); elsewhere (AVX2
  without VNNI, where u8 x s8 goes through 16-bit pair sums) the ratio is shown, not judged.
- the full run's 30 minutes stays the target on every class, and the row says which class met it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.core.machine import has_int8_dot_product  # noqa: E402

TRAIN_ACCURACY = {"mlp": 0.89, "cnn": 0.915, "resnet": 0.93}


def cpu_class(results: dict, manifest: dict) -> str | None:
    """The CPU class the run's figures were measured on, from the newest record that names it."""
    st = manifest.get("stages", {})
    for source in (results.get("machine"), st.get("bench", {}).get("machine"), results.get("environment"),
                   *(rec.get("versions") for rec in st.get("train", {}).get("models", {}).values())):
        if (source or {}).get("cpu_class"):
            return source["cpu_class"]
    return None


def collect(run: Path) -> list[dict]:
    m = json.loads((run / "manifest.json").read_text())
    st = m["stages"]
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {"records": []}
    cpu = cpu_class(results, m)
    on_cpu = f"on {cpu or 'an unrecorded CPU class'}"
    rows: list[dict] = []

    def row(target: str, value, limit: str, met: bool | None) -> None:
        rows.append({"target": target, "value": value, "limit": limit, "met": met})

    train = st.get("train", {}).get("models", {})
    for net, rec in train.items():
        acc = rec.get("metrics", {}).get("test_accuracy")
        if net in TRAIN_ACCURACY and acc is not None:
            row(f"train {net} test accuracy", round(acc, 4), f">= {TRAIN_ACCURACY[net]}", acc >= TRAIN_ACCURACY[net])
    train_s = sum(rec.get("seconds", 0) for rec in train.values())
    row("train all networks, seconds", round(train_s, 1), "< 1200", train_s < 1200)

    export = st.get("export", {}).get("models", {})
    export_s = 0.0
    for net, rec in export.items():
        export_s += (rec.get("qat") or {}).get("seconds", 0) or 0
        variants = rec.get("variants", {})
        fp32 = {fmt: (variants.get(f"{fmt}-fp32", {}).get("file") or {}).get("size_bytes") for fmt in ("tflite", "onnx")}
        for vname, v in variants.items():
            export_s += v.get("seconds", 0) or 0
            p = v.get("parity") or {}
            cls = v.get("variant_class")
            if cls == "float":
                ok = p.get("agreement") == 1.0 and (p.get("max_abs_diff") or 1) <= 1e-4
                row(f"{net} {vname} agreement / max abs diff", [p.get("agreement"), p.get("max_abs_diff")],
                    "1.0 / <= 1e-4", ok)
            elif cls == "fp16":
                row(f"{net} {vname} agreement", p.get("agreement"), ">= 0.999", (p.get("agreement") or 0) >= 0.999)
            elif cls in ("int8-qat", "int8-ptq"):
                drop = p.get("accuracy_drop_points")
                limit = 0.5 if cls == "int8-qat" else 1.0
                row(f"{net} {vname} accuracy drop (points)", drop, f"<= {limit}", drop is not None and drop <= limit)
                if cls == "int8-qat":
                    row(f"{net} {vname} agreement with QAT model", p.get("agreement"), ">= 0.995",
                        (p.get("agreement") or 0) >= 0.995)
                size, ref = (v.get("file") or {}).get("size_bytes"), fp32.get(v.get("format"))
                if size and ref:
                    row(f"{net} {vname} size ratio vs fp32", round(size / ref, 3), "<= 0.32", size / ref <= 0.32)
                audit = v.get("audit") or {}
                row(f"{net} {vname} int8 audit (integer MAC share)", audit.get("integer_mac_fraction"),
                    "passed", bool(audit.get("passed")))
    row("export all variants, seconds (QAT included)", round(export_s, 1), "< 600", export_s < 600)

    ok = [r for r in results.get("records", []) if r.get("status") == "ok" and r.get("stage", "bench") == "bench"]
    for net in sorted({r["model"] for r in ok}):
        b1 = [r for r in ok if r["model"] == net and r["batch"] == 1 and r["threads"] == 1]
        fl = [r for r in b1 if r.get("variant_class") in ("float",) or r["variant"] == "keras-fp32"]
        i8 = [r for r in b1 if r.get("variant_class") in ("int8-qat", "int8-ptq")]
        if fl and i8:
            f, i = min(fl, key=lambda r: r["p50_ms"]), min(i8, key=lambda r: r["p50_ms"])
            value = (f"{i['p50_ms']:.4f} ms ({i['variant']} {i['runtime']}) / {f['p50_ms']:.4f} ms "
                     f"({f['variant']} {f['runtime']}) = {i['p50_ms'] / f['p50_ms']:.3f}")
            target = f"{net} fastest int8 / fastest fp32 p50 (batch 1, 1 thread) {on_cpu}"
            if cpu is None:
                row(target, value, "not judged: the run does not record its CPU class", None)
            elif has_int8_dot_product(cpu):
                row(target, value, "<= 1.0", i["p50_ms"] <= f["p50_ms"])
            else:
                row(target, value, f"not a target on {cpu} (no int8 dot product)", None)
    bench_s = st.get("run", {}).get("stage_seconds", {}).get("bench") or st.get("bench", {}).get("seconds")
    if bench_s is not None:
        row("bench (3 nets, all variants, runtimes, threads 1,2, batch 1,32), seconds", bench_s, "< 300", bench_s < 300)
    run = st.get("run", {})
    if run.get("total_seconds") is not None:
        limit = 180 if run.get("quick") else 1800
        row(f"edgekit run{' --quick' if run.get('quick') else ''} end to end, seconds, {on_cpu}",
            run["total_seconds"], f"< {limit}", run["total_seconds"] < limit)
        row("edgekit check green", run.get("gate_passed"), "True", bool(run.get("gate_passed")))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/latest")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "targets.json"))
    args = ap.parse_args(argv)
    rows = collect(Path(args.run))
    width = max(len(r["target"]) for r in rows)
    for r in rows:
        mark = {True: "met", False: "MISSED", None: "-"}[r["met"]]
        print(f"{r['target']:<{width}}  {str(r['value']):>40}  {r['limit']:>10}  {mark}")
    missed = sum(r["met"] is False for r in rows)
    print(f"\n{len(rows) - missed} met, {missed} missed")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=2) + "\n")
    return 0 if missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
