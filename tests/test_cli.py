"""The `edgekit` command: version/help, usage errors (exit 2), one-line errors (exit 1), --debug."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import edgekit
from edgekit import cli
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
    assert all(c in out for c in SUBCOMMANDS) and "--debug" in out
    for c in SUBCOMMANDS:
        assert exit_code([c, "--help"]) == 0
        assert "--debug" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    ([], "required: COMMAND"),
    (["deploy"], "invalid choice: 'deploy'"),
    (["bench", "--run", "r", "--threads", "a,b"], "expected comma-separated integers like 1,2, got 'a,b'"),
    (["bench", "--run", "r", "--threads", "0,2"], "expected positive integers"),
    (["bench", "--run", "r", "--batch", ""], "expected positive integers"),
    (["bench", "--run", "r", "--runtimes", "tensorrt"], "unknown ['tensorrt']; choose from keras, litert, onnxruntime"),
    (["train", "--model", "vgg", "--out", "x"], "unknown ['vgg']; choose from mlp, cnn, resnet or all"),
    (["train", "--dataset", "synthetic"], "required: --out"),
    (["train", "--out", "x", "--epochs", "two"], "invalid int value: 'two'"),
    (["train", "--out", "x", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["run", "--model", "mlp,,vgg"], "unknown ['vgg']"),
], ids=["no-command", "unknown-command", "threads-letters", "threads-zero", "batch-empty", "runtime",
        "model", "train-no-out", "epochs", "device", "run-model"])
def test_usage_errors_exit_2(capsys, argv, needle):
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("usage: edgekit")


def test_name_lists():
    parse = cli._name_list(("mlp", "cnn", "resnet"))
    assert parse("cnn, mlp") == ("cnn", "mlp") and parse("all") == ("mlp", "cnn", "resnet")
    assert cli._int_list("1,2,4") == (1, 2, 4) and cli._int_list("8") == (8,)


def test_edgekit_error_is_one_line_exit_1(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "/nonexistent.npz", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("edgekit: error: /nonexistent.npz: file not found")
    assert not out.exists()  # a failed start leaves no run directory behind


def test_usage_conflict_in_export_is_a_config_error(tmp_path, capsys):
    assert cli.main(["export", "--profile", "mcu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: give exactly one of --run") and err.count("\n") == 1
    assert cli.main(["export", "--run", str(tmp_path), "--profile", "nosuch"]) == 1
    assert "profile 'nosuch' not found" in capsys.readouterr().err


def test_trust_model_is_for_a_users_file_only(tmp_path, capsys):
    assert cli.main(["export", "--run", str(tmp_path), "--trust-model"]) == 1
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
    with pytest.raises(ConfigError, match="give exactly one"):
        cli.main(["export", "--debug"])


def test_internal_errors_and_interrupts(tmp_path, monkeypatch, capsys):
    """A bug in a stage (not an EdgekitError) is still one line; --debug shows it in full."""
    def broken(args):
        raise KeyError("stages")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_report", broken)
    assert cli.main(["report", "--run", str(tmp_path)]) == 1
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
    assert r.returncode == 1 and r.stderr.startswith("edgekit: error: ") and r.stderr.count("\n") == 1, r.stderr
