from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from edgekit.core.version import __version__
from edgekit.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_RED, ConfigError, EdgekitError

# The one exit-code table: the module doc below and every subcommand's --help show this text.
EXIT_CODES = """\
exit codes (the same for every command):
  0    green: the work is done and every verdict passed
  1    a verdict is red: the gate failed, an exported variant failed
  2    your command or input is wrong: usage, bad data, bad profile, refused model,
       unreadable or invalid baseline, impossible --out, missing run directory or stage
  3    edgekit or a library failed: an unexpected exception, a conversion library crash
       (re-run with --debug for the traceback and report it)
  130  interrupted (Ctrl-C): finished work is kept; the same command resumes
"""
__doc__ = f"""The `edgekit` command: a thin argparse layer over the Python API.

Errors print one line on stderr; `--debug` adds the traceback, with the library error underneath.
Every subcommand's help ends with its examples and this table:

{EXIT_CODES}"""
# Old spellings accepted until REMOVED_IN: (subcommand, old option) -> the option it now is.
# Each prints one notice line on stderr naming that version; they are hidden from --help so new
# users see one word.
REMOVED_IN = "0.3"
DEPRECATED = {("train", "--model"): "--network", ("run", "--model"): "--network",
              ("export", "--models"): "--network", ("bench", "--batch"): "--batch-sizes"}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2, got '{text}'") from e
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
    from edgekit.core.progress import Progress

    return Progress(quiet=getattr(args, "quiet", False))


def cmd_train(args) -> int:
    from edgekit.core.config import TrainConfig
    from edgekit.train import train

    cfg = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, learning_rate=args.lr,
                      limit=args.limit, num_classes=args.num_classes, mixed_precision=args.mixed_precision, xla=args.xla,
                      device=args.device)
    section = train(args.out, cfg, models=args.network, force=args.force, progress=_progress(args))
    for name, rec in section.get("models", {}).items():
        if name in args.network:
            m = rec.get("metrics") or {}
            acc = m.get("test_accuracy")
            files = rec.get("files") or [{}]
            print(f"{name:8s} test_accuracy={'n/a' if acc is None else f'{acc:.4f}'} "
                  f"epochs={m.get('epochs_run')} time={rec.get('seconds') or 0:.0f}s  {files[0].get('path', '')}")
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return EXIT_OK


def cmd_export(args) -> int:
    from edgekit.core.config import load_profile
    from edgekit.export import export_model, export_run

    profile = load_profile(args.profile)
    if bool(args.run) == bool(args.model):
        raise ConfigError("give exactly one of --run RUN_DIR (models a training run made) or --model FILE (your own model)")
    if args.model and not Path(args.model).exists():
        from edgekit.core.networks import NETWORKS

        if args.model in NETWORKS:  # the old train/run meaning of --model
            raise ConfigError(f"--model takes a model FILE of yours; for our network '{args.model}' use "
                              f"--run RUN_DIR --network {args.model}")
    if args.run and args.trust_model:
        raise ConfigError("--trust-model applies to --model FILE; a run directory's models are edgekit's own "
                          "and are checked against their recorded sha256 instead")
    if args.run:
        section = export_run(args.run, profile, models=args.network, force=args.force, progress=_progress(args))
        where = args.run
    else:
        out = _export_out(args)
        section = export_model(args.model, out, profile, calibration=args.calibration_data,
                               force=args.force, progress=_progress(args), trust_model=args.trust_model,
                               labels=args.labels)
        where = out
    failed = _print_export_summary(section)
    print(f"manifest: {Path(where) / 'manifest.json'}")
    return EXIT_RED if failed else EXIT_OK


def _export_out(args) -> str:
    return args.out or (Path(args.model).with_suffix("").name + "-export")


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
    from edgekit.bench import bench_files, bench_run, summary_lines
    from edgekit.pipeline import check_and_report

    progress = _progress(args)
    if bool(args.run) == bool(args.model):
        raise ConfigError("give exactly one of --run RUN_DIR (an edgekit run) or --model FILE (files made elsewhere)")
    if args.model and not args.out:
        raise ConfigError("--model needs --out DIR: the run directory for the copies, results and report")
    if args.run and (args.out or args.dataset or args.reference):
        raise ConfigError("--out, --dataset and --reference go with --model FILE; a run's data and "
                          "references are in its manifest")
    settings = dict(runtimes=args.runtimes, threads=args.threads, batches=args.batch_sizes, quick=args.quick,
                    progress=progress, force=args.force)
    if args.model:
        results = bench_files(args.model, args.out, dataset=args.dataset, reference=args.reference,
                              seed=args.seed, **settings)
        html = check_and_report(args.out, progress)
        print("\n".join(summary_lines(results)))
    else:
        bench_run(args.run, **settings)
        html = check_and_report(args.run, progress)
        print((Path(args.run) / "report.md").read_text())
    print(f"report: {html}")
    return EXIT_OK


def cmd_report(args) -> int:
    from edgekit.pipeline import check_and_report

    html = check_and_report(args.run, _progress(args))
    print(f"report: {html}")
    return EXIT_OK


def cmd_check(args) -> int:
    from edgekit.gate import check_run

    result = check_run(args.run, profile=args.profile, baseline=args.baseline)
    print(result.table)
    return EXIT_OK if result.passed else EXIT_RED


def cmd_run(args) -> int:
    from edgekit.pipeline import run_all

    summary = run_all(args.out, dataset=args.dataset, data_dir=args.data_dir, profile=args.profile,
                      models=args.network, quick=args.quick, epochs=args.epochs, force=args.force,
                      progress=_progress(args), library_logs=not args.debug)
    print(summary.table)
    print(f"report: {summary.report_html}")
    return EXIT_OK if summary.passed else EXIT_RED


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's dest, says so in one line."""

    def __init__(self, option_strings, dest, new: str = "", word: str = "NAME", **kwargs) -> None:
        self.new, self.word = new, word
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"edgekit: {option_string} {self.word} is deprecated and goes away in edgekit {REMOVED_IN}; "
              f"use {self.new} {self.word}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _alias(parser: argparse.ArgumentParser, command: str, old: str, word: str, parse) -> None:
    new = DEPRECATED[(command, old)]
    parser.add_argument(old, dest=new.lstrip("-").replace("-", "_"), type=parse, action=_DeprecatedAlias,
                        new=new, word=word, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _subcommand(sub, name: str, parents, summary: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose help ends with its examples and the exit-code table."""
    return sub.add_parser(name, parents=parents, help=summary, description=summary,
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=f"examples:\n{examples.rstrip()}\n\n{EXIT_CODES}")


def build_parser() -> argparse.ArgumentParser:
    from edgekit.core.config import available_profiles
    from edgekit.core.data import SOURCES
    from edgekit.core.networks import NETWORKS
    from edgekit.runtimes import RUNTIMES

    networks, runtimes = tuple(NETWORKS), tuple(RUNTIMES)
    network_list, runtime_list = _name_list(networks), _name_list(runtimes)
    network_names = ", ".join(networks)
    profile_help = (f"deployment-target profile: {', '.join(available_profiles()) or '(none found)'}, "
                    "or a path to a .toml file")
    dataset_help = f"{', '.join(SOURCES)}, or a path to an IDX folder or a .npz (default fashion-mnist)"
    run_help = "run directory (the --out of `edgekit train` or `edgekit run`)"

    p = argparse.ArgumentParser(prog="edgekit", description="Train, export (TFLite/ONNX, float and int8) "
                                "and benchmark Keras image classifiers for edge deployment.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="`edgekit COMMAND --help` shows a command's options and examples."
                                       f"\n\n{EXIT_CODES}")
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    # --debug/--quiet work before or after the subcommand; SUPPRESS keeps the subcommand's
    # unset default from overwriting a value given before it.
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress lines")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = _subcommand(sub, "train", [common], "train the reference networks into a run directory", """\
  edgekit train --network cnn --out runs/cnn
  edgekit train --network mlp,cnn --dataset mnist --epochs 5 --out runs/mnist
  edgekit train --network cnn --dataset my_data.npz --num-classes 10 --out runs/mine""")
    t.add_argument("--network", type=network_list, default=networks, metavar="NAME[,NAME]",
                   help=f"which of our networks: {network_names}, a comma list, or all (default all)")
    _alias(t, "train", "--model", "NAME", network_list)
    t.add_argument("--dataset", default="fashion-mnist", help=dataset_help)
    t.add_argument("--data-dir", metavar="FOLDER",
                   help="where the named dataset's files are (default: its usual location)")
    t.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (default: per network)")
    t.add_argument("--batch-size", type=int, default=128, metavar="N", help="training batch size (default 128)")
    t.add_argument("--lr", type=float, metavar="RATE", help="peak learning rate (default: per network)")
    t.add_argument("--seed", type=int, default=0, metavar="N", help="random seed of data order and weights (default 0)")
    t.add_argument("--limit", type=int, metavar="N", help="use only the first N training images (quick runs)")
    t.add_argument("--num-classes", type=int, metavar="N",
                   help="class count of a dataset given by path (default: max label + 1; "
                        "a class that never occurs below it is refused as a stray label)")
    t.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="auto, cpu or gpu (default auto: a GPU when TensorFlow sees one)")
    t.add_argument("--mixed-precision", action="store_true", help="float16 compute on a GPU (weights saved float32)")
    t.add_argument("--xla", action="store_true", help="XLA jit_compile (slower on CPU, may help on GPU)")
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create or resume")
    t.add_argument("--force", action="store_true", help="retrain even if the run directory has finished models")
    t.set_defaults(func=cmd_train)

    e = _subcommand(sub, "export", [common], "QAT, PTQ and conversion to TFLite/ONNX, with parity checks", """\
  edgekit export --run runs/cnn --profile mobile
  edgekit export --run runs/cnn --network cnn --profile my_targets.toml
  edgekit export --model my_model.keras --calibration-data calib.npz --out my-export""")
    e.add_argument("--run", metavar="RUN_DIR", help=f"{run_help}; or give --model")
    e.add_argument("--model", metavar="FILE", help="your own Keras model: .keras, .h5 or a SavedModel folder")
    e.add_argument("--network", type=network_list, metavar="NAME[,NAME]",
                   help=f"with --run: which networks, of {network_names}, or all (default: every trained one)")
    _alias(e, "export", "--models", "NAME", network_list)
    e.add_argument("--calibration-data", metavar="NPZ",
                   help="with --model: .npz with x (inputs, floats in [0, 1]) and optional y (labels)")
    e.add_argument("--out", metavar="DIR", help="with --model: output directory (default: <model>-export)")
    e.add_argument("--labels", metavar="FILE", help="with --model: class names, one a line in output order; "
                   "written into every exported file's metadata")
    e.add_argument("--profile", default="default", help=profile_help + " (default: default)")
    e.add_argument("--force", action="store_true", help="export again even if finished variants are up to date")
    e.add_argument("--trust-model", action="store_true",
                   help="with --model: export a file even though its scan found code (Lambda layers, custom "
                        "classes, Python or file ops); it then runs in a subprocess without secrets in its "
                        "environment. Only for files whose author you trust: this limits the risk, "
                        "it does not remove it")
    e.set_defaults(func=cmd_export)

    b = _subcommand(sub, "bench", [common], "accuracy and latency of every exported model on every runtime", """\
  edgekit bench --run runs/cnn
  edgekit bench --run runs/cnn --quick
  edgekit bench --run runs/cnn --runtimes litert --threads 1,4 --batch-sizes 1
  edgekit bench --model mine.tflite --model mine.onnx --dataset test.npz --out bench-mine
  edgekit bench --model mine_int8.tflite --reference mine.keras --out bench-int8""")
    b.add_argument("--run", metavar="RUN_DIR", help=f"{run_help}, after `edgekit export`; or give --model")
    b.add_argument("--model", action="append", metavar="FILE",
                   help="a .tflite or .onnx file another tool made (repeat for more); needs --out")
    b.add_argument("--out", metavar="DIR", help="with --model: run directory for the copies, results and report")
    b.add_argument("--dataset", metavar="NPZ",
                   help="with --model: .npz with x_test (y_test) or x (y): inputs of the files' shape, labels "
                        "optional (default: random inputs, no accuracy)")
    b.add_argument("--reference", metavar="MODEL",
                   help="with --model: a Keras model (.keras/.h5, scanned before it loads) or another "
                        ".tflite/.onnx file; adds agreement and max_abs_diff against its outputs")
    b.add_argument("--seed", type=int, default=0, metavar="N", help="with --model, no --dataset: seed of the random inputs")
    b.add_argument("--runtimes", type=runtime_list, default=runtimes, metavar="NAME[,NAME]",
                   help=f"{', '.join(runtimes)}, a comma list, or all (default all)")
    b.add_argument("--threads", type=_int_list, default=(1, 2), metavar="N[,N]",
                   help="thread counts to time, e.g. 1,4 (default 1,2)")
    b.add_argument("--batch-sizes", type=_int_list, default=(1, 32), metavar="N[,N]",
                   help="inference batch sizes to time, e.g. 1,32 (default 1,32)")
    _alias(b, "bench", "--batch", "N", _int_list)
    b.add_argument("--quick", action="store_true", help="fewer runs and a test subset (under a minute)")
    b.add_argument("--force", action="store_true", help="measure again even if results.json is current")
    b.set_defaults(func=cmd_bench)

    r = _subcommand(sub, "report", [common], "re-render report.md/report.html from results.json", """\
  edgekit report --run runs/cnn""")
    r.add_argument("--run", required=True, metavar="RUN_DIR", help=f"{run_help}, after `edgekit bench`")
    r.set_defaults(func=cmd_report)

    c = _subcommand(sub, "check", [common], "CI gate: exit 1 when a variant misses its profile's thresholds", """\
  edgekit check --run runs/cnn
  edgekit check --run runs/cnn --profile mcu
  edgekit check --run runs/pr --baseline runs/main/results.json""")
    c.add_argument("--run", required=True, metavar="RUN_DIR", help=f"{run_help}, after `edgekit export`")
    c.add_argument("--profile", help=profile_help + " (default: the one export used)")
    c.add_argument("--baseline", metavar="RESULTS_JSON",
                   help="the results.json an earlier `edgekit bench` wrote, to judge latency regressions against")
    c.set_defaults(func=cmd_check)

    a = _subcommand(sub, "run", [common], "the whole pipeline: train, export, bench, report, check", """\
  edgekit run --quick
  edgekit run --network cnn --profile mobile --out runs/cnn
  edgekit run --dataset synthetic --network mlp --epochs 3 --out runs/try""")
    a.add_argument("--out", default="runs/latest", metavar="RUN_DIR", help="run directory (default runs/latest)")
    a.add_argument("--dataset", default="fashion-mnist", help=dataset_help)
    a.add_argument("--data-dir", metavar="FOLDER",
                   help="where the named dataset's files are (default: its usual location)")
    a.add_argument("--network", type=network_list, default=networks, metavar="NAME[,NAME]",
                   help=f"which of our networks: {network_names}, a comma list, or all (default all)")
    _alias(a, "run", "--model", "NAME", network_list)
    a.add_argument("--profile", default="default", help=profile_help + " (default: default)")
    a.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (default: per network)")
    a.add_argument("--quick", action="store_true", help="a small subset and one epoch: the whole pipeline in minutes")
    a.add_argument("--force", action="store_true", help="redo finished stages")
    a.set_defaults(func=cmd_run)
    return p


def _stage_context(args) -> contextlib.ExitStack:
    """Around a stage command: its library output into RUN_DIR/logs/<command>.log
    (edgekit.core.library_log; --debug leaves it on the terminal; the command's own results stay on
    stdout, its errors are printed after the block), and its wall time and peak RSS into the
    manifest (edgekit.core.resources). `run` does both per stage itself (edgekit.pipeline)."""
    from edgekit.core.library_log import stage_log
    from edgekit.core.resources import stage_resources

    stack = contextlib.ExitStack()
    run_dir = getattr(args, "run", None) or getattr(args, "out", None)
    if args.command == "export" and not run_dir and getattr(args, "model", None):
        run_dir = _export_out(args)
    if args.command != "run" and run_dir:
        stack.enter_context(stage_log(run_dir, args.command, debug=args.debug, keep_stdout=True))
        stack.enter_context(stage_resources(run_dir, args.command))
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _stage_context(args):
            return int(args.func(args) or EXIT_OK)
    except EdgekitError as e:
        if args.debug:
            raise
        print(f"edgekit: error: {e}", file=sys.stderr)
        return e.exit_code  # each error class says whose problem it is (edgekit/errors.py)
    except KeyboardInterrupt:
        print("edgekit: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # an edgekit bug or a library failure: one line unless --debug
        if args.debug:
            raise
        print(f"edgekit: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
