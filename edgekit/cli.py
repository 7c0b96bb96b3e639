"""The `edgekit` command: a thin argparse layer over the Python API.

Exit codes: 0 success, 1 a failure (or a failed gate), 2 a usage error or a refused model, 130 interrupted.
Errors print one line on stderr; `--debug` adds the traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekit import __version__
from edgekit.errors import ConfigError, EdgekitError

RUNTIME_NAMES = ("keras", "litert", "onnxruntime")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2, got '{text}'")
    return values


def _name_list(choices):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        if "all" in names:
            return tuple(choices)
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; choose from {', '.join(choices)} or all")
        return names
    return parse


def _progress(args):
    from edgekit.progress import Progress

    return Progress(quiet=getattr(args, "quiet", False))


def cmd_train(args) -> int:
    from edgekit.config import TrainConfig
    from edgekit.train import train

    cfg = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, learning_rate=args.lr,
                      limit=args.limit, num_classes=args.num_classes, mixed_precision=args.mixed_precision, xla=args.xla,
                      device=args.device)
    section = train(args.out, cfg, models=args.model, force=args.force, progress=_progress(args))
    for name, rec in section.get("models", {}).items():
        if name in args.model:
            m = rec.get("metrics") or {}
            acc = m.get("test_accuracy")
            files = rec.get("files") or [{}]
            print(f"{name:8s} test_accuracy={'n/a' if acc is None else f'{acc:.4f}'} "
                  f"epochs={m.get('epochs_run')} time={rec.get('seconds') or 0:.0f}s  {files[0].get('path', '')}")
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def cmd_export(args) -> int:
    from edgekit.config import load_profile
    from edgekit.export import export_model, export_run

    profile = load_profile(args.profile)
    if bool(args.run) == bool(args.model):
        raise ConfigError("give exactly one of --run RUN_DIR (models a training run made) or --model PATH (your own model)")
    if args.run and args.trust_model:
        raise ConfigError("--trust-model applies to --model FILE; a run directory's models are edgekit's own "
                          "and are checked against their recorded sha256 instead")
    if args.run:
        section = export_run(args.run, profile, models=args.models, force=args.force, progress=_progress(args))
        where = args.run
    else:
        out = args.out or (Path(args.model).with_suffix("").name + "-export")
        section = export_model(args.model, out, profile, calibration=args.calibration_data,
                               force=args.force, progress=_progress(args), trust_model=args.trust_model)
        where = out
    failed = _print_export_summary(section)
    print(f"manifest: {Path(where) / 'manifest.json'}")
    return 1 if failed else 0


def _print_export_summary(section: dict) -> int:
    failed = 0
    for model, rec in section.get("models", {}).items():
        for variant, v in rec.get("variants", {}).items():
            status = v.get("status", "?")
            failed += status == "failed"
            p = v.get("parity") or {}
            size = (v.get("file") or {}).get("size_bytes")
            agree = p.get("agreement")
            print(f"{model:8s} {variant:18s} {status:7s} "
                  f"{'' if size is None else f'{size / 1024:8.1f} KiB'} "
                  f"{'' if agree is None else f'agreement={agree:.4f}'} {v.get('error') or ''}".rstrip())
    return failed


def cmd_bench(args) -> int:
    from edgekit.bench import bench_run

    bench_run(args.run, runtimes=args.runtimes, threads=args.threads, batches=args.batch,
              quick=args.quick, progress=_progress(args))
    print((Path(args.run) / "report.md").read_text())
    print(f"report: {Path(args.run) / 'report.html'}")
    return 0


def cmd_report(args) -> int:
    from edgekit.report import render_report

    html = render_report(args.run)
    print(f"report: {html}")
    return 0


def cmd_check(args) -> int:
    from edgekit.check import check_run

    result = check_run(args.run, profile=args.profile, baseline=args.baseline)
    print(result.table)
    return 0 if result.passed else 1


def cmd_run(args) -> int:
    from edgekit.pipeline import run_all

    summary = run_all(args.out, dataset=args.dataset, data_dir=args.data_dir, profile=args.profile,
                      models=args.model, quick=args.quick, epochs=args.epochs, force=args.force,
                      progress=_progress(args))
    print(summary.table)
    print(f"report: {summary.report_html}")
    return 0 if summary.passed else 1


def build_parser() -> argparse.ArgumentParser:
    from edgekit.config import NETWORK_NAMES

    p = argparse.ArgumentParser(prog="edgekit", description="Train, export (TFLite/ONNX, float and int8) "
                                "and benchmark Keras image classifiers for edge deployment.")
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    # --debug/--quiet work before or after the subcommand; SUPPRESS keeps the subcommand's
    # unset default from overwriting a value given before it.
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress lines")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models = _name_list(NETWORK_NAMES)

    t = sub.add_parser("train", parents=[common], help="train the reference networks into a run directory")
    t.add_argument("--model", type=models, default=NETWORK_NAMES, help="mlp, cnn, resnet, a comma list, or all (default all)")
    t.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist, synthetic, or a path to an IDX folder / .npz")
    t.add_argument("--data-dir", help="where the named dataset's files are (overrides the default location)")
    t.add_argument("--epochs", type=int, help="maximum epochs (default: per network)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, help="peak learning rate (default: per network)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, help="use only the first N training images (quick runs)")
    t.add_argument("--num-classes", type=int, help="class count of a dataset given by path (default: max label + 1; "
                   "a class that never occurs below it is refused as a stray label)")
    t.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    t.add_argument("--mixed-precision", action="store_true", help="float16 compute on a GPU (weights saved float32)")
    t.add_argument("--xla", action="store_true", help="XLA jit_compile (slower on CPU, may help on GPU)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--force", action="store_true", help="retrain even if the run directory has finished models")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", parents=[common], help="QAT, PTQ and conversion to TFLite/ONNX, with parity checks")
    e.add_argument("--run", help="run directory of a training run")
    e.add_argument("--model", help="your own Keras model: .keras, .h5 or a SavedModel folder")
    e.add_argument("--models", type=models, help="with --run: which networks (default: all trained)")
    e.add_argument("--calibration-data", help="with --model: .npz with x (inputs) and optional y (labels)")
    e.add_argument("--out", help="with --model: output directory (default: <model>-export)")
    e.add_argument("--profile", default="default", help="deployment-target profile name in export/ or a .toml path")
    e.add_argument("--force", action="store_true")
    e.add_argument("--trust-model", action="store_true",
                   help="with --model: export a file even though its scan found code (Lambda layers, custom "
                        "classes, Python or file ops); it then runs in a subprocess without secrets in its "
                        "environment. Only for files whose author you trust: this limits the risk, "
                        "it does not remove it")
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", parents=[common], help="accuracy and latency of every exported model on every runtime")
    b.add_argument("--run", required=True)
    b.add_argument("--runtimes", type=_name_list(RUNTIME_NAMES), default=RUNTIME_NAMES)
    b.add_argument("--threads", type=_int_list, default=(1, 2))
    b.add_argument("--batch", type=_int_list, default=(1, 32))
    b.add_argument("--quick", action="store_true", help="fewer runs and a test subset (under a minute)")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", parents=[common], help="re-render report.md/report.html from results.json")
    r.add_argument("--run", required=True)
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("check", parents=[common], help="CI gate: exit 1 when a variant misses its profile's thresholds")
    c.add_argument("--run", required=True)
    c.add_argument("--profile", help="profile to judge by (default: the one export used)")
    c.add_argument("--baseline", help="an older results.json to judge latency regressions against")
    c.set_defaults(func=cmd_check)

    a = sub.add_parser("run", parents=[common], help="the whole pipeline: train, export, bench, report, check")
    a.add_argument("--out", default="runs/latest", help="run directory (default runs/latest)")
    a.add_argument("--dataset", default="fashion-mnist")
    a.add_argument("--data-dir")
    a.add_argument("--model", type=models, default=NETWORK_NAMES)
    a.add_argument("--profile", default="default")
    a.add_argument("--epochs", type=int, help="maximum epochs (default: per network)")
    a.add_argument("--quick", action="store_true", help="a small subset and one epoch: the whole pipeline in minutes")
    a.add_argument("--force", action="store_true", help="redo finished stages")
    a.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EdgekitError as e:
        if args.debug:
            raise
        print(f"edgekit: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # 2 for a refused model: the user's input is what is wrong
    except KeyboardInterrupt:
        print("edgekit: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # an edgekit bug or a library failure: one line unless --debug
        if args.debug:
            raise
        print(f"edgekit: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
