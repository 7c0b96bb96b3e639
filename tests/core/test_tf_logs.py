"""Quiet TensorFlow start-up (edgekit.core.tf_logs, installed by `import edgekit`): log lines go, errors stay."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_py(code: str, timeout: int = 120, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEKIT_TF_LOG")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def test_tensorflow_start_up_is_quiet():
    """TF 2.21 prints absl INFO lines (cudart_stub.cc, port.cc) during its import, before it reads
    TF_CPP_MIN_LOG_LEVEL; after `import edgekit` none of them reach stderr, and later ops are quiet too."""
    r = run_py("import edgekit, tensorflow as tf, tf_keras\n"
               "print(int(tf.reduce_sum(tf.constant([1, 2]))), tf_keras.__name__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "tf_keras"]
    assert r.stderr.strip() == "", r.stderr


@pytest.mark.slow
def test_tensorflow_noise_is_real_without_edgekit_filter():
    """The noise the filter removes exists: EDGEKIT_TF_LOG=1 shows TensorFlow's own logging."""
    r = run_py("import edgekit, tensorflow", EDGEKIT_TF_LOG="1")
    assert r.returncode == 0 and "absl::InitializeLog()" in r.stderr


def test_edgekit_tf_log_restores_tensorflow_logging():
    r = run_py("import os, sys, edgekit; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), "
               "[type(f).__name__ for f in sys.meta_path if 'Quiet' in type(f).__name__])", EDGEKIT_TF_LOG="1")
    assert r.returncode == 0 and r.stdout.strip() == "None []", r.stdout + r.stderr
    r = run_py("import os, edgekit; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])", TF_CPP_MIN_LOG_LEVEL="1")
    assert r.stdout.strip() == "1"  # the user's own level is kept


NOISE = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
         "I0000 00:00:1795923109.258536   24384 port.cc:153] oneDNN custom operations are on.\n"
         "I0000 00:00:1795923109.258934   24384 cudart_stub.cc:31] Could not find cuda drivers\n"
         "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] old TSL format\n")
REAL = ("W0000 00:00:1795923109.3   24384 some.cc:1] a warning\n"
        "E0000 00:00:1795923109.4   24384 cuda_dnn.cc:8579] an error\n"
        "ImportError: a real problem, printed by Python\n")


@pytest.mark.parametrize("level, kept", [
    (1, REAL.splitlines()),                                      # INFO lines and absl's notice go
    (3, REAL.splitlines()[2:]),                                   # only non-log output survives
    (0, NOISE.splitlines() + REAL.splitlines()),                  # level 0: untouched
])
def test_stderr_filter_drops_only_log_lines_below_the_level(level, kept):
    code = ("import os, sys, edgekit\n"
            f"with edgekit.core.tf_logs._stderr_filtered({level}):\n"
            f"    os.write(2, {(NOISE + REAL).encode()!r})\n"
            "    print('python stderr', file=sys.stderr)\n"
            "print('after', file=sys.stderr)\n")
    r = run_py(code)
    assert r.returncode == 0
    assert r.stderr.splitlines() == kept + ["python stderr", "after"]


def test_stderr_filter_keeps_messages_of_a_crash():
    """TensorFlow aborting during import must still show why (the filter forwards as it reads)."""
    code = ("import os, edgekit\n"
            "with edgekit.core.tf_logs._stderr_filtered(3):\n"
            "    os.write(2, b'F0000 00:00:1.0 1 x.cc:1] fatal: bad CPU\\nThe TensorFlow library was compiled to use AVX\\n')\n"
            "    os.abort()\n")
    r = run_py(code)
    assert r.returncode != 0
    assert "fatal: bad CPU" in r.stderr and "The TensorFlow library was compiled to use AVX" in r.stderr


def test_install_adds_one_finder_however_often_it_runs():
    """One-shot and idempotent: `import edgekit` installed it; another install() or a reload adds none."""
    r = run_py("import importlib, sys, edgekit\n"
               "from edgekit import tf_logs\n"
               "tf_logs.install(); importlib.reload(tf_logs); tf_logs.install()\n"
               "print(sum(type(f).__name__ == '_QuietTensorFlowImport' for f in sys.meta_path))\n"
               "import tensorflow\n"
               "print(sum(type(f).__name__ == '_QuietTensorFlowImport' for f in sys.meta_path))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "0"]  # used by the first `import tensorflow`, then gone
