"""stage_log (edgekit.core.library_log): library output to run_dir/logs/<stage>.log, edgekit's lines to the terminal."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from edgekit.core import library_log, rundir
from edgekit.core.library_log import stage_log
from edgekit.core.progress import Progress

# Every way a library writes: native fds, C stdio (buffered, flushed by the block), Python's
# print/logging/warnings, and a subprocess that inherits fds 1/2.
NOISY = textwrap.dedent("""
    import ctypes, logging, os, subprocess, sys, warnings
    from edgekit.core.library_log import stage_log
    from edgekit.core.progress import Progress
    libc = ctypes.CDLL(None)
    p = Progress()
    with stage_log(sys.argv[1], "export", debug=sys.argv[2] == "1"):
        p.start_stage("export")
        os.write(2, b"native fd2 line\\n")
        os.write(1, b"native fd1 line\\n")
        libc.printf(b"fully_quantize: 0, inference_type: 6\\n")   # C stdio, still in its buffer
        libc.puts(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
        print("python print line")
        logging.getLogger("modelscan").error("Model Config not found in model.weights.h5")
        warnings.warn("tf_keras deprecation WARNING")
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child stderr line\\\\n')"])
        p.update("tflite-int8-ptq ok", model="cnn")
    print("after the block")
    os.write(2, b"fd2 after the block\\n")
""")
LIBRARY_LINES = ("native fd2 line", "native fd1 line", "fully_quantize", "XNNPACK", "python print line",
                 "Model Config not found", "WARNING", "child stderr line")


def run_noisy(run_dir, debug: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NOISY, str(run_dir), "1" if debug else "0"],
                          capture_output=True, text=True, timeout=60)


def test_library_output_goes_to_the_log_and_progress_to_the_terminal(tmp_path):
    run = tmp_path / "run"
    rundir.update_manifest(run, lambda m: None)
    r = run_noisy(run, debug=False)
    assert r.returncode == 0, r.stderr
    terminal = r.stdout + r.stderr
    for line in LIBRARY_LINES:
        assert line not in terminal, terminal
    assert "export | export started" in r.stderr and "cnn | tflite-int8-ptq ok" in r.stderr
    assert r.stdout == "after the block\n" and r.stderr.endswith("fd2 after the block\n")   # restored
    log = (run / "logs" / "export.log").read_text()
    for line in LIBRARY_LINES:
        assert line in log, line
    assert "edgekit: [00:00] | export | cnn | tflite-int8-ptq ok" in log   # where each message came from
    assert log.index("export started") < log.index("native fd2 line") < log.index("tflite-int8-ptq ok")
    entry = rundir.load_manifest(run)["logs"]["export"]
    assert entry == {"path": "logs/export.log", "size_bytes": len(log.encode())}


def test_debug_leaves_everything_on_the_terminal(tmp_path):
    r = run_noisy(tmp_path / "run", debug=True)
    assert r.returncode == 0, r.stderr
    for line in LIBRARY_LINES:
        assert line in r.stdout + r.stderr, line
    assert not (tmp_path / "run").exists()


def test_restored_on_errors_and_interrupts(tmp_path, capfd):
    logger = logging.getLogger("tf2onnx")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    old = sys.stdout, sys.stderr, warnings.showwarning
    try:
        for exc in (ValueError("boom"), KeyboardInterrupt()):
            with pytest.raises(type(exc)):
                with stage_log(tmp_path, "bench"):
                    os.write(2, b"native before the error\n")
                    assert handler.stream is not old[1]          # the console handler writes to the log
                    raise exc
            assert (sys.stdout, sys.stderr, warnings.showwarning) == old and handler.stream is old[1]
            assert library_log.active_log() is None
        os.write(2, b"native after\n")
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    assert "native before the error" not in err and "native after" in err
    assert (tmp_path / "logs" / "bench.log").read_text().count("native before the error") == 2


def test_a_run_directory_the_stage_never_made_is_not_created(tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(RuntimeError):
        with stage_log(missing, "bench"):
            os.write(2, b"library line\n")
            raise RuntimeError("missing run directory")
    assert not missing.exists()
    with stage_log(missing, "train"):      # a stage that creates its run directory keeps its log
        missing.mkdir()
        os.write(1, b"made it\n")
    assert (missing / "logs" / "train.log").read_text() == "made it\n"


def test_a_costly_library_message_is_one_note_per_variant(tmp_path, capfd):
    """tf2onnx logs a skipped optimizer pass as a warning with a traceback: the traceback goes to
    the log, the terminal gets one line naming the model, the variant and what it may cost."""
    logger = logging.getLogger("tf2onnx.optimizer")
    p = Progress()
    with stage_log(tmp_path, "export"):
        for variant in ("onnx-fp32", "onnx-int8-ptq"):
            p.update(variant, model="cnn")
            for _ in range(3):                     # each optimizer iteration fails again
                try:
                    raise KeyError("node")
                except KeyError:
                    logger.warning("Failed to apply %s", "TransposeOptimizer", exc_info=1)
    err = capfd.readouterr().err
    notes = [ln for ln in err.splitlines() if ln.startswith("note:")]
    assert notes == [f"note: cnn {v}: tf2onnx skipped its TransposeOptimizer optimizer pass; the ONNX file is "
                     f"still correct but may be larger or slower (details: {tmp_path / 'logs' / 'export.log'})"
                     for v in ("onnx-fp32", "onnx-int8-ptq")]
    log = (tmp_path / "logs" / "export.log").read_text()
    assert log.count("Failed to apply TransposeOptimizer") == 6 and "KeyError: 'node'" in log


def test_a_child_given_the_progress_fd_writes_its_lines_there(tmp_path):
    """The contained export's worker: its library output follows fds 1/2, its progress the pipe."""
    code = ("import os; from edgekit.core.progress import Progress; os.write(2, b'library\\n'); "
            "Progress().update('tflite-fp32 ok', model='m'); "
            f"assert {library_log.PROGRESS_FD_ENV!r} not in os.environ")
    read, write = os.pipe()
    env = {**os.environ, library_log.PROGRESS_FD_ENV: str(write)}
    r = subprocess.run([sys.executable, "-c", code], pass_fds=(write,), env=env, capture_output=True,
                       text=True, timeout=60)
    os.close(write)
    with os.fdopen(read) as pipe:
        assert "| m | tflite-fp32 ok" in pipe.read()
    assert r.returncode == 0 and r.stderr == "library\n", r.stderr


def test_manifest_keeps_other_sections(tmp_path):
    rundir.update_manifest(tmp_path, lambda m: rundir.stage(m, "train").update({"status": "ok"}))
    with stage_log(tmp_path, "train"):
        pass                                  # nothing said: no file, no record
    assert not (tmp_path / "logs").exists()
    for _ in range(2):
        with stage_log(tmp_path, "export"):
            os.write(2, b"x\n")
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["stages"]["train"] == {"status": "ok"}
    assert m["logs"] == {"export": {"path": "logs/export.log", "size_bytes": 4}}   # appended


def test_an_interrupt_does_not_wait_for_the_manifest_lock(tmp_path):
    """Ctrl-C while another edgekit process holds the run's lock: the log is kept, not recorded."""
    import fcntl

    rundir.update_manifest(tmp_path, lambda m: None)
    with open(tmp_path / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(KeyboardInterrupt):
            with stage_log(tmp_path, "train"):
                os.write(2, b"x\n")
                raise KeyboardInterrupt
    assert (tmp_path / "logs" / "train.log").read_text() == "x\n"
    assert "logs" not in rundir.load_manifest(tmp_path)
