"""Slow: stock tf_keras.applications architectures (random weights, random calibration images with
labels) through `edgekit export --model`, as a new user runs it: every variant makes a file its
runtime loads (QAT ones included) and the terminal shows edgekit's lines only. Run with -m slow;
bench/RESULTS.md records the wall time and peak RSS of the same exports."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from edgekit.core.variants import EXPORT_VARIANTS

STOCK = [("MobileNetV2", 96), ("MobileNetV3Small", 96), ("ResNet50", 96), ("MobileNetV2", 224)]
# edgekit's own terminal lines: progress ("[mm:ss] | export | ..."), the summary table, notes
OURS = re.compile(r"^(\[\d\d:\d\d\] \||edgekit: |note: |\S+\s+(tflite|onnx)-\S+\s|manifest: |PASSED|FAILED)")


@pytest.mark.slow
@pytest.mark.parametrize("arch, size", STOCK, ids=[f"{a}-{s}" for a, s in STOCK])
def test_stock_architecture_exports_every_variant_quietly(arch, size, tmp_path):
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = getattr(tf_keras.applications, arch)(weights=None, input_shape=(size, size, 3), classes=1000)
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.random((64, size, size, 3), dtype=np.float32),
             y=rng.integers(0, 1000, 64))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEKIT_TF_LOG")}
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", "--model", str(tmp_path / "m.keras"),
                           "--calibration-data", str(tmp_path / "cal.npz"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=3600)
    import json
    rec = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]["export"]["models"]["m"]
    from edgekit.runtimes import open_file
    for name in EXPORT_VARIANTS:
        v = rec["variants"][name]
        assert v["file"] is not None, f"{arch}-{size} {name}: {v['error']}"
        out = open_file(tmp_path / "out" / v["file"]["path"]).predict(np.zeros((1, size, size, 3), np.float32))
        assert out.shape == (1, 1000)
    strangers = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip() and not OURS.match(ln)]
    assert not strangers, strangers[:10]
