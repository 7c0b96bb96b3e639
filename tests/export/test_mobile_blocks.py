"""A user's model built from the stock mobile blocks (depthwise convolutions, ReLU6, hard-swish as
raw TF ops, residual Adds, ZeroPadding2D, Rescaling, global pooling), untrained, at 32x32, exported
with every variant twice, in two processes (`edgekit export --model` as a user runs it):

- every variant makes a file its runtime loads, QAT ones included;
- the size verdicts hold on what each route can shrink;
- parity on its margin-free outputs is judged by output error, not top-1 agreement;
- the two processes write byte-identical files and the same verdicts (random hash seeds).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import mobile_calibration
from edgekit.core.variants import EXPORT_VARIANTS
from edgekit.runtimes import open_file

EXPORT = """
import dataclasses, sys
import edgekit
from edgekit.core.config import load_profile
from edgekit.core.progress import Progress
from edgekit.export import export_model
profile = dataclasses.replace(load_profile("default"), representative_samples=16, qat_epochs=1.0)
export_model(sys.argv[1], sys.argv[2], profile, calibration=sys.argv[3], progress=Progress(quiet=True))
"""


@pytest.fixture(scope="module")
def two_exports(tiny_mobile_file, tmp_path_factory) -> tuple[list[dict], list[float], Path]:
    d = tmp_path_factory.mktemp("mobile_exports")
    x = mobile_calibration(32, seed=3)
    np.savez(d / "cal.npz", x=x, y=np.random.default_rng(4).integers(0, 10, len(x)))
    (d / "export.py").write_text(EXPORT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}   # random str hashes
    records, seconds = [], []
    for name in ("a", "b"):
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, str(d / "export.py"), str(tiny_mobile_file), str(d / name),
                               str(d / "cal.npz")], env=env, capture_output=True, text=True, timeout=600)
        seconds.append(time.monotonic() - t0)
        assert done.returncode == 0, done.stderr[-2000:]
        manifest = json.loads((d / name / "manifest.json").read_text())
        records.append(manifest["stages"]["export"]["models"]["tiny_mobile"])
    return records, seconds, d


def test_every_variant_loads_sized_by_its_route_judged_by_output_error(two_exports):
    (rec, _), seconds, d = two_exports[0], two_exports[1], two_exports[2]
    x = mobile_calibration(4, seed=5)
    assert rec["qat"]["status"] == "ok", rec["qat"]["error"]
    assert rec["qat"]["output"] == "logits" and rec["qat"]["float_layers"]   # hard-swish ops stay float
    for name in EXPORT_VARIANTS:
        v = rec["variants"][name]
        assert v["file"] is not None, f"{name}: {v['error']}"
        assert open_file(d / "a" / v["file"]["path"]).predict(x).shape == (4, 10), name
        checks = {c["name"]: c for c in v["checks"]}
        size = checks.get("max_expected_size_excess")
        if size is not None:
            assert size["passed"], (name, size)
        p = v["parity"]
        assert p["margins"]["near_tie_share"] > 0.5 and p["judged_by"] == "output_error", name
        assert "min_snr_db" in checks, (name, checks)
        if "min_agreement" in checks:     # top-1 agreement proves nothing here: recorded, not judged
            assert checks["min_agreement"]["passed"] is None, (name, checks)
    assert seconds[0] < 240, f"export took {seconds[0]:.0f} s"   # the target: 60 s on 2 idle cores


def test_two_processes_export_the_same_bytes_and_verdicts(two_exports):
    """tf2onnx's optimizers walk sets (edgekit.convert.onnx_determinism pins them); QAT is seeded."""
    a, b = two_exports[0]
    assert a["qat"]["file"]["sha256"] == b["qat"]["file"]["sha256"]
    for name, va in a["variants"].items():
        vb = b["variants"][name]
        assert va["status"] == vb["status"], name
        assert (va["file"] or {}).get("sha256") == (vb["file"] or {}).get("sha256"), name
        assert [c["passed"] for c in va["checks"]] == [c["passed"] for c in vb["checks"]], name
