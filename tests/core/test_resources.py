"""Peak memory and time of a stage, recorded in the manifest only when the stage finished."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.core import rundir
from edgekit.core.resources import peak_rss_mb, reset_peak_rss, rss_mb, stage_resources


def test_a_stage_records_its_time_and_peak_memory(tmp_path):
    rundir.update_manifest(tmp_path, lambda m: None)
    with stage_resources(tmp_path, "export"):
        big = np.ones(64 * 1024 * 1024 // 8)   # 64 MiB held at the peak
        held = peak_rss_mb()
        del big
    rec = json.loads((tmp_path / "manifest.json").read_text())["resources"]["export"]
    assert rec["seconds"] >= 0 and rec["peak_rss_mb"] >= held - 1 and rec["peak_rss_mb"] >= rss_mb() + 32


def test_a_failed_stage_records_nothing(tmp_path):
    rundir.update_manifest(tmp_path, lambda m: None)
    with pytest.raises(ValueError):
        with stage_resources(tmp_path, "bench"):
            raise ValueError("broken")
    assert "resources" not in json.loads((tmp_path / "manifest.json").read_text())


def test_the_peak_resets():
    if not reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak (/proc/self/clear_refs)")
    big = np.ones(128 * 1024 * 1024 // 8)
    high = peak_rss_mb()
    del big
    reset_peak_rss()
    assert peak_rss_mb() < high - 64
