"""Peak memory and time of a stage, recorded in the manifest only when the stage finished."""
from __future__ import annotations

import json
import mmap

import pytest

from edgekit.core import rundir
from edgekit.core.resources import peak_rss_mb, reset_peak_rss, rss_mb, stage_resources

MIB = 1024 * 1024


def _touch(size: int) -> mmap.mmap:
    """Fresh anonymous pages, each written once: resident until closed (never reused heap)."""
    m = mmap.mmap(-1, size)
    for i in range(0, size, mmap.PAGESIZE):
        m[i] = 1
    return m


def test_a_stage_records_its_time_and_peak_memory(tmp_path):
    rundir.update_manifest(tmp_path, lambda m: None)
    with stage_resources(tmp_path, "export"):
        before = rss_mb()
        held = _touch(96 * MIB)
        high = rss_mb()
        held.close()
    rec = json.loads((tmp_path / "manifest.json").read_text())["resources"]["export"]
    assert high >= before + 90 and rec["peak_rss_mb"] >= high - 1 and rec["seconds"] >= 0


def test_a_failed_stage_records_nothing(tmp_path):
    rundir.update_manifest(tmp_path, lambda m: None)
    with pytest.raises(ValueError):
        with stage_resources(tmp_path, "bench"):
            raise ValueError("broken")
    assert "resources" not in json.loads((tmp_path / "manifest.json").read_text())


def test_the_peak_resets():
    if not reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak (/proc/self/clear_refs)")
    held = _touch(128 * MIB)
    high = peak_rss_mb()
    held.close()
    reset_peak_rss()
    assert peak_rss_mb() < high - 100
