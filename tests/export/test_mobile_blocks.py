"""A user's model built from the stock mobile blocks (depthwise convolutions, ReLU6, hard-swish as
raw TF ops, residual Adds, ZeroPadding2D, Rescaling, global pooling), untrained, at 32x32:
every variant exports to a file its runtime loads, the size verdicts hold on what each route can
shrink, and parity on its margin-free outputs is judged by output error, not top-1 agreement."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from conftest import mobile_calibration
from edgekit.core.config import load_profile
from edgekit.core.progress import Progress
from edgekit.core.variants import EXPORT_VARIANTS
from edgekit.runtimes import open_file


def test_mobile_blocks_export_every_variant_judged_by_output_error(tiny_mobile_file, tmp_path):
    from edgekit.export import export_model

    x = mobile_calibration(64, seed=1)
    np.savez(tmp_path / "cal.npz", x=x, y=np.random.default_rng(2).integers(0, 10, len(x)))
    profile = dataclasses.replace(load_profile("default"), representative_samples=32, qat_epochs=1.0)
    t0 = time.monotonic()
    sec = export_model(tiny_mobile_file, tmp_path / "out", profile, calibration=tmp_path / "cal.npz",
                       progress=Progress(quiet=True))
    seconds = time.monotonic() - t0
    rec = sec["models"]["tiny_mobile"]
    assert rec["qat"]["status"] == "ok", rec["qat"]["error"]
    assert rec["qat"]["output"] == "logits" and rec["qat"]["float_layers"]   # hard-swish ops stay float
    for name in EXPORT_VARIANTS:
        v = rec["variants"][name]
        assert v["file"] is not None, f"{name}: {v['error']}"
        assert open_file(tmp_path / "out" / v["file"]["path"]).predict(x[:4]).shape == (4, 10), name
        checks = {c["name"]: c for c in v["checks"]}
        size = checks.get("max_expected_size_excess")
        if size is not None:
            assert size["passed"], (name, size)
        p = v["parity"]
        assert p["margins"]["near_tie_share"] > 0.5 and p["judged_by"] == "output_error", name
        if "min_agreement" in checks:     # top-1 agreement proves nothing here: not judged, SNR is
            assert checks["min_agreement"]["passed"] is None and "min_snr_db" in checks, (name, checks)
    assert seconds < 240, f"export took {seconds:.0f} s"   # the target is 60 s on 2 idle cores
