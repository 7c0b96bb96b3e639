"""Emulated-CPU parity rows: a file whose u8s8 form saturates on AVX2 fails the gate there, its
u8u8 re-encoding passes, and a CPU that cannot be emulated is 'not measured', never a pass."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from edgekit.verify import emulation
from edgekit.core.config import Thresholds
from edgekit.verify.cpu_parity import ParitySample, emulated_checks, emulated_parity
from edgekit.verify.parity import check_thresholds, describe_failures
from verify.test_emulation import SW, SX, SY, _qdq_matmul

# Column 0 pairs (127, 127) along K: 255 * 254 = 64770 > 32767, so AVX2's VPMADDUBSW saturates
# that pair to 32767; column 1's pairs (70, 0) give 17850 and fit. With every input code 255:
#   exact:     col0 = 255*254 = 64770 -> 64770*SX*SW/SY = 63.25 -> 63 steps = 1.96875
#              col1 = 2*17850 = 35700 -> 34.86 -> 35 steps = 1.09375   => class 0, gap 28 steps
#   saturated: col0 = 32767 -> 31.999 -> 32 steps = 1.0              => class 1 (a flip)
W = np.array([[127, 70], [127, 0], [0, 70], [0, 0]], np.int8)
X = np.full((20, 4), 255 * SX, np.float32)  # dequantizes to code 255 exactly (SX = 2^-8)
EXACT = np.tile(np.array([[63 * SY, 35 * SY]], np.float32), (20, 1))
LABELS = np.zeros(20, np.int64)
TH = Thresholds(min_agreement=0.995, max_accuracy_drop=0.5, min_kernel_agreement=0.999)


def _need_qemu():
    ok, why = emulation.available("x86-avx2")
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs qemu-user (scripts/setup.sh), yet: {why}")
        pytest.skip(why)


def test_saturating_u8s8_file_fails_on_emulated_avx2_and_u8u8_passes(tmp_path):
    _need_qemu()
    assert SW == 2.0 ** -7 and SX == 2.0 ** -8  # the arithmetic above assumes these scales
    u8s8 = _qdq_matmul(tmp_path / "u8s8.onnx", "u8s8", W)
    u8u8 = _qdq_matmul(tmp_path / "u8u8.onnx", "u8u8", W)
    cpus = ("native", "x86-avx2", "x86-sse4")
    bad = emulated_parity(u8s8, ParitySample(X, EXACT, EXACT, LABELS), cpus, TH.min_kernel_agreement, "u8s8")
    good = emulated_parity(u8u8, ParitySample(X, EXACT, EXACT, LABELS), cpus, TH.min_kernel_agreement, "u8u8")
    assert [r["cpu"] for r in bad] == ["x86-avx2", "x86-sse4"]  # native is judged by export itself
    avx2 = bad[0]
    # every image flips on the saturating kernel: agreement 0, accuracy 0 -> a 100-point drop
    assert avx2["agreement"] == 0.0 and avx2["kernel_agreement"] == 0.0 and avx2["accuracy_drop_points"] == 100.0
    assert avx2["kernel_max_abs_diff_steps"] == pytest.approx(31.0)  # 63 - 32 steps on col0
    assert "ORT_DISABLE_ALL" in avx2["avoid"] and "u8u8" in avx2["avoid"]
    sse4_ok, sse4_why = emulation.available("x86-sse4")
    if sse4_ok:
        assert bad[1]["kernel_agreement"] == 1.0 and bad[1]["agreement"] == 1.0  # SSE4: no VPMADDUBSW path
    else:  # this venv's numpy cannot start on Westmere: a visible skipped row with the reason, not an error
        assert bad[1]["status"] == "skipped" and bad[1]["reason"] == sse4_why and good[1]["status"] == "skipped"
    assert all(r["agreement"] == 1.0 and r["kernel_agreement"] == 1.0 and r["avoid"] is None
               for r in good if r["status"] == "ok")

    rows = check_thresholds(TH, {"agreement": 1.0, "samples": 20, "accuracy_drop_points": 0.0}, None, None,
                            emulated_parity=bad)
    failed = {r["name"] for r in rows if r["passed"] is False}
    assert failed == {"min_agreement@x86-avx2", "max_accuracy_drop@x86-avx2", "min_kernel_agreement@x86-avx2"}
    assert "avoid ONNX Runtime graph optimizations" in describe_failures(rows)
    measured = [r for r in good if r["status"] == "ok"]
    assert measured and all(r["passed"] for r in emulated_checks(TH, measured))
    skipped = [r for r in good if r["status"] == "skipped"]   # not measured is never passed
    assert all(r["passed"] is None for r in emulated_checks(TH, skipped))


def test_a_cpu_that_cannot_be_emulated_is_not_measured_never_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu on PATH
    assert shutil.which("qemu-x86_64") is None
    u8u8 = _qdq_matmul(tmp_path / "u8u8.onnx", "u8u8", W)
    recs = emulated_parity(u8u8, ParitySample(X, EXACT, EXACT, LABELS), ("x86-avx2",), 0.999)
    assert recs[0]["status"] == "skipped" and "qemu" in recs[0]["reason"]
    rows = emulated_checks(TH, recs)
    assert {r["name"] for r in rows} == {"min_agreement@x86-avx2", "max_accuracy_drop@x86-avx2",
                                         "min_kernel_agreement@x86-avx2"}
    assert all(r["passed"] is None and r["note"].startswith("not measured on x86-avx2") for r in rows)


def test_a_broken_emulation_fails_its_rows_and_keeps_the_other_cpus(tmp_path):
    """A file the emulated runtime cannot run (here: truncated) must fail that CPU's rows loudly
    instead of raising out of the export (which would throw away the native verdict)."""
    _need_qemu()
    good = _qdq_matmul(tmp_path / "good.onnx", "u8u8", W)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(good.read_bytes()[:40])
    recs = emulated_parity(broken, ParitySample(X, EXACT, EXACT, LABELS), ("x86-avx2",), 0.999)
    assert recs[0]["status"] == "error" and recs[0]["reason"]
    rows = emulated_checks(TH, recs)
    assert rows and all(r["passed"] is False and r["note"].startswith("emulation failed") for r in rows)
    assert "emulation failed on x86-avx2" in describe_failures(rows)


def test_all_near_tie_images_are_not_measured_rather_than_passed():
    from edgekit.verify.fidelity import decisive_agreement

    ref = np.array([[1.0, 1.0], [1.1, 1.0]])  # gaps 0 and 1 step: both inside the 2-step band
    r = decisive_agreement(ref, ref[:, ::-1], 0.1)
    assert r["decisive_samples"] == 0 and r["decisive_agreement"] is None
    rows = check_thresholds(TH, {"agreement": 1.0, "samples": 2}, None, None,
                            kernel_fidelity={"samples": 2, "agreement": 0.0, "tie_band_steps": 2.0, **r})
    kern = [c for c in rows if c["name"] == "min_kernel_agreement"][0]
    assert kern["passed"] is None and "near-ties" in kern["note"]
