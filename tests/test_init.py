"""`import edgekit`: Keras 2 switch and lazy API (its quiet TensorFlow start-up: test_tf_logs.py)."""
from __future__ import annotations

import os
import subprocess
import sys


def run_py(code: str, timeout: int = 120, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEKIT_TF_LOG")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def test_import_is_light_and_sets_legacy_keras():
    r = run_py("import sys, os, edgekit; print('tensorflow' in sys.modules, os.environ['TF_USE_LEGACY_KERAS'], "
               "os.environ['TF_CPP_MIN_LOG_LEVEL'], edgekit.load_dataset.__module__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "1", "3", "edgekit.core.data"]


def test_dir_lists_the_public_api_without_importing_it():
    """dir() shows every name of __all__ (lazy ones included) and imports nothing; then every name
    of __all__ resolves to something real."""
    r = run_py("import sys, edgekit\n"
               "d = dir(edgekit)\n"
               "print(all(n in d for n in edgekit.__all__), d == sorted(d), 'check_run' in vars(edgekit), "
               "'tensorflow' in sys.modules, 'edgekit.gate' in sys.modules)\n"
               "print(all(getattr(edgekit, n) is not None for n in edgekit.__all__))\n"
               "print(edgekit.check_run.__module__, edgekit.open_file.__module__, edgekit.load_profile('mcu').name)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["True True False False False", "True", "edgekit.gate.check edgekit.runtimes mcu"]


def test_edgekit_train_stays_callable_after_its_package_is_imported():
    """`edgekit.train` is both the public function and the stage package; importing the package
    rebinds the attribute to it, so the package itself calls the stage."""
    r = run_py("import edgekit\nf = edgekit.train\nimport edgekit.train.stage as s\n"
               "print(callable(f), callable(edgekit.train), s.train is f, edgekit.train.train is f)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "True"]
