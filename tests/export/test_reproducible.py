"""The same model file, calibration set and profile give byte-identical files, and the same
verdicts, from two processes (QAT variants included: the seed is fixed by the export)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from conftest import mobile_calibration

EXPORT = """
import dataclasses, sys
import edgekit
from edgekit.core.config import load_profile
from edgekit.core.progress import Progress
from edgekit.export import export_model
profile = dataclasses.replace(load_profile("default"), representative_samples=16, qat_epochs=1.0)
export_model(sys.argv[1], sys.argv[2], profile, calibration=sys.argv[3], progress=Progress(quiet=True))
"""


def test_two_processes_export_the_same_bytes_and_verdicts(tiny_mobile_file, tmp_path):
    x = mobile_calibration(32, seed=3)
    np.savez(tmp_path / "cal.npz", x=x, y=np.random.default_rng(4).integers(0, 10, len(x)))
    (tmp_path / "export.py").write_text(EXPORT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}   # random str hashes
    runs = []
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, str(tmp_path / "export.py"), str(tiny_mobile_file),
                               str(tmp_path / name), str(tmp_path / "cal.npz")], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        rec = json.loads((tmp_path / name / "manifest.json").read_text())["stages"]["export"]["models"]["tiny_mobile"]
        runs.append(rec)
    a, b = runs
    assert a["qat"]["file"]["sha256"] == b["qat"]["file"]["sha256"]
    for name, va in a["variants"].items():
        vb = b["variants"][name]
        assert va["status"] == vb["status"], name
        if va["file"] or vb["file"]:
            assert va["file"]["sha256"] == vb["file"]["sha256"], name
        assert [c["passed"] for c in va["checks"]] == [c["passed"] for c in vb["checks"]], name
