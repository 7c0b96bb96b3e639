"""The `edgekit` command: version/help, the exit-code table (one test per code, each through the
real CLI on real inputs), one-line errors, --debug, deprecated spellings."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgekit
from edgekit import cli, errors
from edgekit.errors import ConfigError, DataError

SUBCOMMANDS = ("train", "export", "bench", "report", "check", "run")


def exit_code(argv) -> int:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code


def test_version(capsys):
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"edgekit {edgekit.__version__}"


def test_help(capsys):
    assert exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in SUBCOMMANDS) and "--debug" in out and cli.EXIT_CODES in out
    for c in SUBCOMMANDS:
        assert exit_code([c, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--debug" in out and f"examples:\n  edgekit {c} " in out and out.endswith(cli.EXIT_CODES), c


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_of_every_subcommand_has_help():
    """Help on every option; the only hidden ones are the deprecated spellings."""
    for name, sub in _subparsers().items():
        for action in sub._actions:
            option = action.option_strings[-1]
            if action.help == argparse.SUPPRESS:
                assert (name, option) in cli.DEPRECATED, (name, option)
            else:
                assert action.help and action.help.strip(), (name, option)
    assert set(cli.DEPRECATED) == {(n, a.option_strings[-1]) for n, sub in _subparsers().items()
                                   for a in sub._actions if a.help == argparse.SUPPRESS}


def test_help_lists_valid_values_from_the_registries(capsys):
    from edgekit.core.config import available_profiles
    from edgekit.core.networks import NETWORKS
    from edgekit.runtimes import RUNTIMES

    assert exit_code(["bench", "--help"]) == 0
    assert ", ".join(RUNTIMES) in " ".join(capsys.readouterr().out.split())  # help wraps lines
    for c in ("train", "export", "run"):
        assert exit_code([c, "--help"]) == 0
        assert ", ".join(NETWORKS) in " ".join(capsys.readouterr().out.split()), c
    for c in ("export", "check", "run"):
        assert exit_code([c, "--help"]) == 0
        assert ", ".join(available_profiles()) in " ".join(capsys.readouterr().out.split()), c


def test_one_exit_code_table():
    """The table in cli's docstring is the one every help shows; its codes are errors' constants,
    and every error class carries its code as an attribute (no isinstance chain in main)."""
    assert cli.EXIT_CODES in cli.__doc__
    codes = [int(c) for c in re.findall(r"^  (\d+) ", cli.EXIT_CODES, re.M)]
    assert codes == [errors.EXIT_OK, errors.EXIT_RED, errors.EXIT_USAGE, errors.EXIT_FAILED,
                     errors.EXIT_INTERRUPTED] == [0, 1, 2, 3, 130]
    assert {c.__name__: c.exit_code for c in (errors.DataError, errors.ConfigError, errors.ModelError,
                                             errors.RunDirError, errors.UntrustedModelError,
                                             errors.ExportError, errors.EdgekitError)} == {
        "DataError": 2, "ConfigError": 2, "ModelError": 2, "RunDirError": 2, "UntrustedModelError": 2,
        "ExportError": 3, "EdgekitError": 3}


@pytest.mark.parametrize("argv, needle", [
    ([], "required: COMMAND"),
    (["deploy"], "invalid choice: 'deploy'"),
    (["bench", "--run", "r", "--threads", "a,b"], "expected comma-separated integers like 1,2, got 'a,b'"),
    (["bench", "--run", "r", "--threads", "0,2"], "expected positive integers"),
    (["bench", "--run", "r", "--batch-sizes", ""], "expected positive integers"),
    (["bench", "--run", "r", "--runtimes", "tensorrt"], "unknown ['tensorrt']; choose from keras, litert, onnxruntime"),
    (["train", "--network", "vgg", "--out", "x"],
     "argument --network: unknown ['vgg']; choose from mlp, cnn, resnet or all"),
    (["train", "--dataset", "synthetic"], "required: --out"),
    (["train", "--out", "x", "--epochs", "two"], "invalid int value: 'two'"),
    (["train", "--out", "x", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["run", "--network", "mlp,,vgg"], "unknown ['vgg']"),
], ids=["no-command", "unknown-command", "threads-letters", "threads-zero", "batch-sizes-empty", "runtime",
        "network", "train-no-out", "epochs", "device", "run-network"])
def test_usage_errors_exit_2(capsys, argv, needle):
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("usage: edgekit")


def test_name_lists():
    parse = cli._name_list(("mlp", "cnn", "resnet"))
    assert parse("cnn, mlp") == ("cnn", "mlp") and parse("all") == ("mlp", "cnn", "resnet")
    assert cli._int_list("1,2,4") == (1, 2, 4) and cli._int_list("8") == (8,)


def test_bad_data_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "/nonexistent.npz", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("edgekit: error: /nonexistent.npz: file not found")
    assert not out.exists()  # a failed start leaves no run directory behind


def test_usage_conflict_in_export_is_a_config_error(tmp_path, capsys):
    assert cli.main(["export", "--profile", "mcu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: give exactly one of --run") and err.count("\n") == 1
    assert cli.main(["export", "--run", str(tmp_path), "--profile", "nosuch"]) == 2
    assert "profile 'nosuch' not found" in capsys.readouterr().err


def test_trust_model_is_for_a_users_file_only(tmp_path, capsys):
    assert cli.main(["export", "--run", str(tmp_path), "--trust-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: --trust-model applies to --model FILE") and err.count("\n") == 1
    assert exit_code(["export", "--help"]) == 0
    assert "--trust-model" in capsys.readouterr().out


def test_a_refused_model_exits_2_in_one_line(tmp_path, capsys):
    """A file the scan refuses is the user's input being wrong: exit 2, one line, nothing written."""
    import tf_keras

    i = tf_keras.Input((3,))
    tf_keras.Model(i, tf_keras.layers.Lambda(lambda t: t * 2.0, name="double")(i)).save(str(tmp_path / "m.h5"))
    out = tmp_path / "out"
    assert cli.main(["export", "--model", str(tmp_path / "m.h5"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edgekit: error: {tmp_path / 'm.h5'}: refused to load: it holds Lambda layer 'double'")
    assert err.count("\n") == 1 and "--trust-model" in err and not out.exists()


@pytest.mark.parametrize("where", ["after", "before"])
def test_debug_reraises(tmp_path, where):
    argv = ["train", "--dataset", "/nonexistent.npz", "--out", str(tmp_path / "run")]
    argv = argv + ["--debug"] if where == "after" else ["--debug"] + argv
    with pytest.raises(DataError, match="/nonexistent.npz: file not found"):
        cli.main(argv)
    # the error keeps what it was raised from, so --debug's traceback shows the library's error underneath
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz") as raised:
        cli.main(["--debug", "train", "--dataset", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "run")])
    assert isinstance(raised.value.__cause__, ValueError)   # numpy refusing a non-zip, non-array file
    with pytest.raises(ConfigError, match="give exactly one"):
        cli.main(["export", "--debug"])


def test_internal_errors_and_interrupts(tmp_path, monkeypatch, capsys):
    """A bug in a stage (not an EdgekitError) is still one line; --debug shows it in full."""
    def broken(args):
        raise KeyError("stages")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_report", broken)
    assert cli.main(["report", "--run", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err == "edgekit: internal error: KeyError: 'stages' (re-run with --debug for the traceback)\n"
    with pytest.raises(KeyError):
        cli.main(["report", "--run", str(tmp_path), "--debug"])
    monkeypatch.setattr(cli, "cmd_report", interrupted)
    assert cli.main(["report", "--run", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_quiet_flag_reaches_progress(monkeypatch):
    seen = {}

    def fake_report(args):
        seen["quiet"] = cli._progress(args).quiet
        return 0

    monkeypatch.setattr(cli, "cmd_report", fake_report)
    assert cli.main(["report", "--run", "r", "--quiet"]) == 0 and seen["quiet"] is True
    assert cli.main(["--quiet", "report", "--run", "r"]) == 0 and seen["quiet"] is True
    assert cli.main(["report", "--run", "r"]) == 0 and seen["quiet"] is False


def test_python_dash_m(tmp_path):
    env = {**os.environ, "EDGEKIT_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "edgekit", "--version"], capture_output=True, text=True,
                       timeout=60, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"edgekit {edgekit.__version__}" and r.stderr == ""
    r = subprocess.run([sys.executable, "-m", "edgekit", "bench", "--run", "x", "--threads", "a,b"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert r.returncode == 2 and "expected comma-separated integers" in r.stderr
    r = subprocess.run([sys.executable, "-m", "edgekit", "check", "--run", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("edgekit: error: ") and r.stderr.count("\n") == 1, r.stderr


# ------------------------------------------------------------------ one word per concept

@pytest.mark.parametrize("old, new, dest, value", [
    (["train", "--out", "x", "--model", "cnn"], ["train", "--out", "x", "--network", "cnn"], "network", ("cnn",)),
    (["run", "--model", "mlp,cnn"], ["run", "--network", "mlp,cnn"], "network", ("mlp", "cnn")),
    (["export", "--run", "r", "--models", "cnn"], ["export", "--run", "r", "--network", "cnn"], "network", ("cnn",)),
    (["bench", "--run", "r", "--batch", "1,8"], ["bench", "--run", "r", "--batch-sizes", "1,8"], "batch_sizes", (1, 8)),
], ids=["train-model", "run-model", "export-models", "bench-batch"])
def test_old_spellings_still_work_with_one_line_notice(capsys, old, new, dest, value):
    parser = cli.build_parser()
    assert getattr(parser.parse_args(new), dest) == value
    assert capsys.readouterr().err == ""
    assert getattr(parser.parse_args(old), dest) == value
    old_opt, new_opt = old[-2], new[-2]
    word = "N" if dest == "batch_sizes" else "NAME"
    assert capsys.readouterr().err == (f"edgekit: {old_opt} {word} is deprecated and goes away in edgekit 0.3; "
                                       f"use {new_opt} {word}\n")


def test_export_model_given_a_network_name_points_to_network(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file named "cnn" here
    assert cli.main(["export", "--model", "cnn"]) == 2
    assert capsys.readouterr().err == ("edgekit: error: --model takes a model FILE of yours; for our network "
                                       "'cnn' use --run RUN_DIR --network cnn\n")


def test_defaults_are_unchanged_by_the_aliases():
    parser = cli.build_parser()
    from edgekit.core.networks import NETWORKS

    assert parser.parse_args(["train", "--out", "x"]).network == tuple(NETWORKS)
    assert parser.parse_args(["bench", "--run", "r"]).batch_sizes == (1, 32)
    assert parser.parse_args(["export", "--run", "r"]).network is None          # every trained network
    assert parser.parse_args(["export", "--model", "m.keras"]).model == "m.keras"  # a user's FILE


# ------------------------------------------------------------------ exit codes, one test each

FP32_PROFILE = 'variants = ["tflite-fp32"]\nparity_samples = 100\n[thresholds.float]\nmin_agreement = 0.99\n'


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """A real run through the CLI: the MLP trained one epoch on 512 synthetic images and exported
    as tflite-fp32 by a profile asking for nothing else (about 10 s, most of it TensorFlow)."""
    root = tmp_path_factory.mktemp("gate")
    (root / "fp32.toml").write_text(FP32_PROFILE)
    run = root / "run"
    assert cli.main(["--quiet", "train", "--network", "mlp", "--dataset", "synthetic", "--epochs", "1",
                     "--limit", "512", "--out", str(run)]) == 0
    assert cli.main(["--quiet", "export", "--run", str(run), "--profile", str(root / "fp32.toml")]) == 0
    return {"run": run, "profile": root / "fp32.toml", "root": root}


def test_exit_0_green(gate, capsys):
    assert cli.main(["check", "--run", str(gate["run"])]) == 0  # judged by the profile export used
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("PASSED") and "profile fp32" in out


def test_exit_1_red_gate(gate, tmp_path, capsys):
    # a 1,000-byte flash budget: the fp32 MLP's Dense(784x256) weights alone are 784*256*4 = 802,816 bytes
    strict = tmp_path / "strict.toml"
    strict.write_text(FP32_PROFILE + "max_size_bytes = 1000\n")
    assert cli.main(["check", "--run", str(gate["run"]), "--profile", str(strict)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "max_size_bytes" in captured.out and captured.err == ""


def test_check_run_takes_a_profile_name_path_or_object(gate):
    import dataclasses

    from edgekit.gate.check import check_run
    from edgekit.core.config import Thresholds, load_profile

    prof = load_profile(str(gate["profile"]))
    assert check_run(gate["run"], profile=prof).passed                       # a Profile (was a TypeError)
    assert check_run(gate["run"], profile=gate["profile"]).passed            # a Path
    assert check_run(gate["run"], profile=str(gate["profile"])).passed       # a path string
    assert not check_run(gate["run"], profile="default").passed              # a name: asks for unexported variants
    strict = dataclasses.replace(prof, thresholds={"float": Thresholds(max_size_bytes=1000)})
    assert not check_run(gate["run"], profile=strict).passed


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_exit_2_the_users_input_is_wrong(gate, tmp_path, capsys):
    run = str(gate["run"])
    # missing run directory, and a run missing the stage
    assert cli.main(["check", "--run", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in _err(capsys)
    (tmp_path / "empty").mkdir()
    assert cli.main(["bench", "--run", str(tmp_path / "empty")]) == 2
    assert "edgekit export" in _err(capsys)
    # bad profile: unknown name, and a profile with a typo in a variant
    assert cli.main(["check", "--run", run, "--profile", "nosuch"]) == 2
    assert "profile 'nosuch' not found" in _err(capsys)
    typo = tmp_path / "typo.toml"
    typo.write_text('variants = ["tflite-fp23"]\n')
    assert cli.main(["check", "--run", run, "--profile", str(typo)]) == 2
    assert "unknown variants ['tflite-fp23']" in _err(capsys)
    # impossible --out: a file is in the way
    (tmp_path / "afile").write_text("")
    assert cli.main(["--quiet", "train", "--dataset", "synthetic", "--out", str(tmp_path / "afile" / "run")]) == 2
    assert "is a file, not a directory; choose another --out" in _err(capsys)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "is not valid JSON ("),
    ('{"hello": 1}', "is not an edgekit results.json (no 'records' list)"),
], ids=["not-json", "not-results"])
def test_exit_2_a_bad_baseline_is_the_users_file(gate, tmp_path, capsys, content, problem):
    base = tmp_path / "old.json"
    base.write_text(content)
    assert cli.main(["check", "--run", str(gate["run"]), "--baseline", str(base)]) == 2
    err = _err(capsys)
    assert err.startswith(f"edgekit: error: --baseline {base} {problem}"), err
    assert "`edgekit bench" in err and "results.json" in err and "delete it" not in err


def test_exit_3_a_library_failed(gate, tmp_path, capsys):
    """A disk that fills up while training saves the model: not the user's command, not a verdict.
    RLIMIT_FSIZE makes it real: writes past 256 KiB fail with EFBIG (SIGXFSZ ignored, so the
    process gets the error instead of being killed); the MLP's weights alone are 802,816 bytes."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        code = cli.main(["--quiet", "train", "--network", "mlp", "--dataset", "synthetic", "--epochs", "1",
                         "--limit", "512", "--out", str(tmp_path / "run")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert code == 3
    err = capsys.readouterr().err
    assert err.startswith("edgekit: internal error: OSError: ") and "File too large" in err
    assert err.endswith("(re-run with --debug for the traceback)\n") and err.count("\n") == 1


def test_exit_130_interrupted(tmp_path, capsys):
    """Ctrl-C while `train` waits for the run directory's lock (held here, as another edgekit
    process on the same run would hold it). The signal is sent only once /proc/locks shows the
    main thread blocked on that lock, so it always lands inside cli.main."""
    import fcntl
    import signal
    import threading
    import time

    # Python's own Ctrl-C handler, as in a terminal (a shell's background job starts with SIGINT ignored)
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    run = tmp_path / "run"
    run.mkdir()
    lock = open(run / ".manifest.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    inode, main_thread = os.fstat(lock.fileno()).st_ino, threading.main_thread().ident
    sent = threading.Event()

    def interrupt_when_blocked():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            waiting = [ln for ln in Path("/proc/locks").read_text().splitlines()
                       if "->" in ln and f":{inode} " in ln]
            if waiting:
                sent.set()
                signal.pthread_kill(main_thread, signal.SIGINT)
                return
            time.sleep(0.05)
        fcntl.flock(lock, fcntl.LOCK_UN)  # never blocked: let train finish, the assertions fail

    watcher = threading.Thread(target=interrupt_when_blocked)
    watcher.start()
    try:
        code = cli.main(["--quiet", "train", "--network", "mlp", "--dataset", "synthetic", "--epochs", "1",
                         "--limit", "512", "--out", str(run)])
    finally:
        watcher.join()
        lock.close()
        signal.signal(signal.SIGINT, old_handler)
    assert sent.is_set() and code == 130
    assert capsys.readouterr().err == ("edgekit: interrupted; finished work is kept, run the same command "
                                       "again to resume\n")


# ------------------------------------------------------------------ library output: RUN_DIR/logs/<command>.log

LIBRARY_NOISE = ("fully_quantize", "XNNPACK", "modelscan", "WARNING")


def test_library_output_goes_to_the_stage_log_not_the_terminal(trained_run, tmp_path):
    """The TFLite converter (native code, fd 1/2), XNNPACK and modelscan's logging land in
    logs/export.log, recorded in the manifest; the terminal has edgekit's lines; --debug shows all."""
    import json

    from conftest import copy_run

    run = copy_run(trained_run, tmp_path / "run")
    profile = tmp_path / "small.toml"
    profile.write_text('variants = ["tflite-fp32", "tflite-int8-ptq"]\nparity_samples = 100\n'
                       'representative_samples = 50\n')

    def export(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgekit", *flags, "export", "--run", str(run), "--network",
                               "cnn", "--profile", str(profile), "--force"], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "EDGEKIT_OFFLINE": "1"}, cwd=tmp_path)

    r = export()
    assert r.returncode == 0, r.stderr
    assert [w for w in LIBRARY_NOISE if w in r.stdout + r.stderr] == [], r.stdout + r.stderr
    assert "export | cnn | tflite-int8-ptq ok" in r.stderr and "cnn      tflite-int8-ptq    ok" in r.stdout
    log = (run / "logs" / "export.log").read_text()
    assert "fully_quantize" in log and "XNNPACK" in log and "ERROR:modelscan:" in log
    assert "edgekit: [" in log and "| export | cnn | tflite-int8-ptq" in log   # the step each message belongs to
    logs = json.loads((run / "manifest.json").read_text())["logs"]
    assert logs == {"export": {"path": "logs/export.log", "size_bytes": len(log.encode())}}
    r = export("--debug")
    assert r.returncode == 0, r.stderr
    assert "fully_quantize" in r.stdout + r.stderr and "XNNPACK" in r.stdout + r.stderr
    assert (run / "logs" / "export.log").read_text() == log   # --debug writes no log


def test_a_logged_command_prints_its_results_and_errors_on_the_terminal(tmp_path, monkeypatch, capfd):
    """Inside the log block the command's own output (stdout) and, after it, its one-line error
    still reach the terminal; native and logging output of the libraries it calls do not."""
    import logging
    from types import SimpleNamespace

    import edgekit.gate

    from edgekit.core import rundir

    def noisy_check(run, profile=None, baseline=None):
        os.write(1, b"native stdout noise\n")
        os.write(2, b"native stderr noise\n")
        logging.getLogger("tf2onnx").warning("logging noise")
        if profile == "broken":
            raise ConfigError("profile 'broken' not found")
        return SimpleNamespace(table="PASSED the table", passed=True)

    run = tmp_path / "run"
    rundir.update_manifest(run, lambda m: None)
    monkeypatch.setattr(edgekit.gate, "check_run", noisy_check)
    assert cli.main(["check", "--run", str(run)]) == 0
    out, err = capfd.readouterr()
    assert out == "PASSED the table\n" and err == ""
    assert cli.main(["check", "--run", str(run), "--profile", "broken"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err == "edgekit: error: profile 'broken' not found\n"
    log = (run / "logs" / "check.log").read_text()
    assert log.count("native stdout noise") == 2 and log.count("WARNING:tf2onnx:logging noise") == 2
    assert rundir.load_manifest(run)["logs"]["check"]["path"] == "logs/check.log"
    # a command on a run directory that is not there creates none
    assert cli.main(["report", "--run", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "nowhere").exists()


def test_bench_model_flags(tmp_path, capsys):
    """`bench --model FILE [--model FILE ...] --out DIR [--dataset] [--reference] [--seed]`; --run
    and --model exclude each other (tests/bench/test_external.py runs it on real files)."""
    args = cli.build_parser().parse_args(["bench", "--model", "a.tflite", "--model", "b.onnx", "--out", "o",
                                          "--reference", "m.keras", "--dataset", "d.npz", "--seed", "3"])
    assert (args.model, args.out, args.reference, args.dataset, args.seed, args.run) == \
        (["a.tflite", "b.onnx"], "o", "m.keras", "d.npz", 3, None)
    for argv, problem in [(["bench", "--model", "a.tflite"], "--model needs --out DIR"),
                          (["bench", "--run", "r", "--model", "a.tflite", "--out", "o"], "exactly one of --run"),
                          (["bench"], "exactly one of --run"),
                          (["bench", "--run", "r", "--reference", "m.keras"], "go with --model"),
                          (["bench", "--run", "r", "--dataset", "d.npz"], "go with --model")]:
        assert cli.main(["--quiet", *argv]) == 2, argv
        assert problem in _err(capsys), argv
