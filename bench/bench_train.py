"""Does edgekit's training beat the tutorial's recipes? Accuracy, time to accuracy, total time.

    /work/venv-dev/bin/python bench/bench_train.py                      # everything (~25 min on 2 cores)
    /work/venv-dev/bin/python bench/bench_train.py --models cnn         # one network
    /work/venv-dev/bin/python bench/bench_train.py --skip-reference     # reuse the reference figures
                                                                        # of the last results file

In one process, on the same CPU, one after the other:
1. the reference recipes (bench/reference_recipes.py: 5 epochs, batch 32, x/255.0), MLP and CNN;
2. time to accuracy: edgekit's CNN with its default settings, test accuracy evaluated at each
   epoch end; the clock starts when edgekit begins (data pipeline and model build included) and
   excludes only those test evaluations (the reference's clock is its model.fit);
   it stops once the reference CNN's test accuracy is reached;
3. `edgekit train` itself (edgekit.train.train, default settings) of every network into a run
   directory: test accuracies and seconds per model, from its manifest.
Prints a table and the ratios; writes bench/results/train.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgekit  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras  # noqa: E402

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import rundir  # noqa: E402
from edgekit.core.config import NETWORK_NAMES, TrainConfig  # noqa: E402
from edgekit.core.data import load_dataset  # noqa: E402
from edgekit.core.devices import resolve_placement  # noqa: E402
from edgekit.core.networks import get_network  # noqa: E402
from edgekit.core.progress import Progress  # noqa: E402
from edgekit.train.stage import evaluate, fit_network, resolve_config, train  # noqa: E402

TARGET_ACCURACY = {"mlp": 0.89, "cnn": 0.915, "resnet": 0.93}
TARGET_TIME_RATIO = 0.5          # edgekit CNN time to the reference's accuracy / reference CNN time
TARGET_TOTAL_SECONDS = 20 * 60   # default training of all three networks
DEFAULT_OUT = ROOT / "bench" / "results" / "train.json"


class TestAccuracyClock(tf_keras.callbacks.Callback):
    """Test accuracy at every epoch end. Its own evaluation time is taken off the clock."""

    def __init__(self, x, y, target: float | None, t0: float, stop: bool = True) -> None:
        super().__init__()
        self.x, self.y, self.target, self.t0, self.stop = x, y, target, t0, stop
        self.excluded = 0.0
        self.curve: list[dict] = []
        self.reached: dict | None = None

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        elapsed = now - self.t0 - self.excluded
        accuracy, _ = evaluate(self.model, self.x, self.y)
        self.excluded += time.monotonic() - now
        self.curve.append({"epoch": epoch + 1, "seconds": round(elapsed, 2), "test_accuracy": accuracy})
        print(f"  edgekit cnn epoch {epoch + 1}: test_accuracy={accuracy:.4f} at {elapsed:.1f}s "
              f"(test evaluations so far {self.excluded:.1f}s, off the clock)", flush=True)
        if self.reached is None and self.target is not None and accuracy >= self.target:
            self.reached = self.curve[-1]
            if self.stop:
                self.model.stop_training = True


def time_to_accuracy(data, target: float | None, stop: bool) -> dict:
    placement = resolve_placement()
    resolved = resolve_config(TrainConfig(), get_network("cnn"), placement)
    t0 = time.monotonic()
    clock = TestAccuracyClock(data.x_test, data.y_test, target, t0, stop=stop)
    fit_network("cnn", data, resolved, placement, callbacks=[clock])
    return {"config": resolved, "target_accuracy": target, "reached": clock.reached, "curve": clock.curve,
            "clock": "from the start of edgekit's fit_network (pipeline + build included), per-epoch test "
                     "evaluations excluded"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn,resnet", help="comma list of networks (default all)")
    ap.add_argument("--skip-reference", action="store_true",
                    help="do not train the reference recipes; take their figures from --results")
    ap.add_argument("--skip-time-to-accuracy", action="store_true")
    ap.add_argument("--skip-train", action="store_true", help="do not run edgekit train")
    ap.add_argument("--full-curve", action="store_true",
                    help="time to accuracy: keep training to the end instead of stopping at the target")
    ap.add_argument("--run", help="run directory for edgekit train (default: a temporary one)")
    ap.add_argument("--from-run", help="take edgekit's training figures from this finished default run "
                                       "(`edgekit run`) instead of training again")
    ap.add_argument("--results", default=str(DEFAULT_OUT),
                    help="results JSON to write (and to read with --skip-reference)")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in NETWORK_NAMES]
    if bad:
        ap.error(f"unknown models {bad}; choose from {', '.join(NETWORK_NAMES)}")

    data = load_dataset("fashion-mnist")
    out = {"created_utc": rundir.utc_now(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "environment": rundir.versions(RUNTIME_DISTS), "load_average_start": os.getloadavg()}
    previous = json.loads(Path(args.results).read_text()) if Path(args.results).exists() else {}

    # 1. the reference recipes
    if args.skip_reference:
        reference = previous.get("reference", {})
        out["reference_from"] = previous.get("created_utc")
    else:
        from reference_recipes import run_reference

        reference = {}
        for name in [m for m in models if m in ("mlp", "cnn")]:
            r = run_reference(name, data.x_train, data.y_train, data.x_test, data.y_test)
            reference[name] = {"test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
                               "fit_seconds": round(r.fit_seconds, 2), "epoch_seconds": r.epoch_seconds,
                               "epochs": 5, "batch_size": 32}
            print(f"reference {name}: test_accuracy={r.test_accuracy:.4f} fit {r.fit_seconds:.1f}s", flush=True)
    out["reference"] = reference

    # 2. time to the reference CNN's accuracy
    if "cnn" in models and not args.skip_time_to_accuracy:
        target = reference.get("cnn", {}).get("test_accuracy")
        tta = time_to_accuracy(data, target, stop=not args.full_curve)
        ref_s = reference.get("cnn", {}).get("fit_seconds")
        if tta["reached"] and ref_s:
            tta["ratio_to_reference"] = round(tta["reached"]["seconds"] / ref_s, 3)
        out["time_to_accuracy"] = tta

    # 3. edgekit train, default settings (or the figures of a finished default `edgekit run`)
    if args.from_run:
        run = Path(args.from_run)
        section = rundir.load_manifest(run).get("stages", {}).get("train", {})
        missing = [m for m in models if m not in section.get("models", {})]
        if missing:
            ap.error(f"{run}/manifest.json has no trained {missing}; run `edgekit run --out {run}` first")
        changed = [m for m in models if section["models"][m]["config"].get("limit")
                   or section["models"][m]["config"]["epochs"] != get_network(m).epochs]
        if changed:
            ap.error(f"{run} trained {changed} with --quick, --limit or --epochs; give a run with default settings")
        wall = sum(section["models"][m]["seconds"] for m in models)
        out["edgekit_from_run"] = str(run)
    elif not args.skip_train:
        run = Path(args.run) if args.run else Path(tempfile.mkdtemp(prefix="bench-train-"))
        t0 = time.monotonic()
        section = train(run, TrainConfig(), models=tuple(models), force=True, progress=Progress())
        wall = time.monotonic() - t0
    if args.from_run or not args.skip_train:
        out["edgekit"] = {name: {"test_accuracy": rec["metrics"]["test_accuracy"], "metrics": rec["metrics"],
                                 "seconds": rec["seconds"], "fit_seconds": rec.get("fit_seconds"),
                                 "params": rec["params"], "epochs": rec["config"]["epochs"],
                                 "batch_size": rec["config"]["batch_size"],
                                 "learning_rate": rec["config"]["learning_rate"],
                                 "augmentation": {"flip": rec["config"]["flip"], "shift_px": rec["config"]["shift_px"]}}
                          for name, rec in section["models"].items() if name in models}
        out["edgekit_total_seconds"] = round(sum(r["seconds"] for r in out["edgekit"].values()), 1)
        out["edgekit_wall_seconds"] = round(wall, 1)
        out["run_dir"] = str(run)
    out["load_average_end"] = os.getloadavg()

    rows = report(out, models)
    out["targets"] = rows
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(args.results, out)
    print(f"\nwrote {args.results}")
    return 0


def report(out: dict, models: list[str]) -> list[dict]:
    """Print the comparison table and the targets; return the target rows."""
    print(f"\n{'model':8} {'recipe':10} {'epochs':>6} {'batch':>5} {'test acc':>8} {'seconds':>8}")
    for name in models:
        ref = out.get("reference", {}).get(name)
        if ref:
            print(f"{name:8} {'reference':10} {5:>6} {32:>5} {ref['test_accuracy']:>8.4f} {ref['fit_seconds']:>8.1f}")
        ek = out.get("edgekit", {}).get(name)
        if ek:
            print(f"{name:8} {'edgekit':10} {ek['metrics']['epochs_run']:>6} {ek['batch_size']:>5} "
                  f"{ek['test_accuracy']:>8.4f} {ek['seconds']:>8.1f}")
    rows = []
    for name, ek in out.get("edgekit", {}).items():
        rows.append({"target": f"{name} test accuracy", "value": ek["test_accuracy"],
                     "limit": f">= {TARGET_ACCURACY[name]}", "met": ek["test_accuracy"] >= TARGET_ACCURACY[name]})
    tta = out.get("time_to_accuracy")
    if tta:
        ref = out.get("reference", {}).get("cnn", {})
        reached = tta.get("reached")
        value = (f"{reached['seconds']:.1f}s (epoch {reached['epoch']}) / {ref.get('fit_seconds')}s "
                 f"= {tta.get('ratio_to_reference')}" if reached else "not reached")
        rows.append({"target": f"cnn time to reference accuracy {ref.get('test_accuracy', float('nan')):.4f}, "
                               f"edgekit / reference", "value": value, "limit": f"<= {TARGET_TIME_RATIO}",
                     "met": bool(reached) and tta.get("ratio_to_reference") is not None
                            and tta["ratio_to_reference"] <= TARGET_TIME_RATIO})
    if "edgekit_total_seconds" in out and set(out["edgekit"]) == set(NETWORK_NAMES):
        total = out["edgekit_total_seconds"]
        rows.append({"target": "default training of mlp+cnn+resnet, seconds", "value": total,
                     "limit": f"< {TARGET_TOTAL_SECONDS}", "met": total < TARGET_TOTAL_SECONDS})
    print()
    for r in rows:
        print(f"{r['target']:<60} {str(r['value']):>32} {r['limit']:>8}  {'met' if r['met'] else 'MISSED'}")
    print(f"load average at start {out['load_average_start'][0]:.1f}, at end {out['load_average_end'][0]:.1f} "
          f"(2 cores; above ~2 other work slowed these timings)")
    return rows


if __name__ == "__main__":
    sys.exit(main())
