"""Int8 parity under emulated CPUs (qemu-user): an AVX2 machine's saturation, proven on any x86.

The file under test is a hand-built QDQ MatMul whose U8S8 form overflows VPMADDUBSW's int16
pair sums, and its exact U8U8 re-encoding. Every expected output is computed here in numpy from
the graph's arithmetic; no figure is read off a run. qemu runs are a few seconds each.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.verify import emulation
from edgekit.errors import ConfigError, ModelError

# All scales are powers of two and every product below is a small dyadic rational, so float32
# holds each intermediate exactly and no rounding lands on a tie: the float (reference) path
# and an exact integer path give bit-identical outputs, and the bound for "agrees" is 0.
SX, SW, SY = 2.0 ** -8, 2.0 ** -7, 2.0 ** -5   # input, weight, output scales
K = 4
W_S8 = np.full((K, 2), 100, np.int8)           # same-sign neighbours along K: the worst case
# Input rows as uint8 codes (zero point 0): 255 makes every pair 255*100 + 255*100 = 51000,
# over int16's 32767, so VPMADDUBSW saturates each pair to 32767; 128 gives 25600, which fits.
QX = np.array([[255] * K, [128] * K], np.uint8)


def _expected(acc: np.ndarray) -> np.ndarray:
    """Output of QuantizeLinear(acc * SX * SW) then DequantizeLinear, zero point 0, uint8."""
    return (np.clip(np.round(acc * SX * SW / SY), 0, 255) * SY).astype(np.float32)


EXACT = _expected(QX.astype(np.int64) @ W_S8.astype(np.int64))
# 255 row: 4*255*100 = 102000 -> 102000/1024 = 99.6 -> 100 -> 3.125; 128 row: 51200 -> 50 -> 1.5625.
# With VPMADDUBSW each of the 2 pairs saturates at 32767: 65534/1024 = 63.998 -> 64 -> 2.0,
# 36 output steps (1.125) below the exact 3.125; the 128 row is unchanged.
SATURATED = _expected(np.array([[2 * 32767] * 2, [4 * 128 * 100] * 2], np.int64))


def _qdq_matmul(path: Path, encoding: str, w_s8: np.ndarray = W_S8) -> Path:
    """x -> Q/DQ (u8) -> MatMul with DQ(W) -> Q/DQ (u8) -> y: ORT fuses it into QLinearMatMul.

    u8s8: int8 weights, zero point 0. u8u8: the same values as uint8 codes w + 128 with zero
    point 128, which dequantize to identical reals (the exact re-encoding of symmetric int8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if encoding == "u8s8":
        w, w_zp = w_s8, np.array(0, np.int8)
    else:
        w, w_zp = (w_s8.astype(np.int16) + 128).astype(np.uint8), np.array(128, np.uint8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_zp, "w_zp"),
             numpy_helper.from_array(np.array(SW, np.float32), "w_scale"),
             numpy_helper.from_array(np.array(SX, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
             numpy_helper.from_array(np.array(SY, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "y_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["wdq"]),
             helper.make_node("MatMul", ["xdq", "wdq"], ["acc"]),
             helper.make_node("QuantizeLinear", ["acc", "y_scale", "y_zp"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["y"])]
    graph = helper.make_graph(nodes, f"saturating_{encoding}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", w_s8.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", w_s8.shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def saturating_files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("emulation")
    return [_qdq_matmul(d / "u8s8.onnx", "u8s8"), _qdq_matmul(d / "u8u8.onnx", "u8u8")]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return (QX.astype(np.float32) * np.float32(SX))  # exact: codes times a power of two


def _require(cpu: str) -> None:
    """Skip with the reason when the CPU cannot be emulated here; in CI on x86 (which installs
    qemu-user) a missing x86 emulator is a failure, never a skip. arm64 needs setup_arm64.sh."""
    ok, why = emulation.available(cpu)
    if ok:
        return
    # the venv's own numpy wheel may need a newer CPU than the emulated one: not a missing tool,
    # a row that cannot be measured with these wheels (the product shows it as skipped, with this reason)
    wheel_too_new = why.startswith("this venv's numpy")
    if os.environ.get("CI") and cpu != "arm64" and platform.machine() in ("x86_64", "AMD64") and not wheel_too_new:
        pytest.fail(f"{cpu} emulation is unavailable in CI: {why}")
    pytest.skip(f"{cpu}: {why}")


def test_the_files_mean_the_exact_arithmetic_natively_unoptimized(saturating_files, x):
    """Baseline for the emulated tests: ORT with optimizations off runs the QDQ graph in float."""
    from edgekit.runtimes.onnxrt import ORTSession

    assert not np.array_equal(EXACT, SATURATED)  # the test data does exercise the overflow
    for f in saturating_files:
        np.testing.assert_array_equal(ORTSession(f, graph_optimization="disable").predict(x), EXACT)


def test_avx2_u8s8_saturates_and_u8u8_is_exact(saturating_files, x):
    _require("x86-avx2")
    out = emulation.run_emulated("x86-avx2", saturating_files, x)
    u8s8, u8u8 = (out[str(f)] for f in saturating_files)
    # The QDQ graph's own meaning is the same on every CPU.
    np.testing.assert_array_equal(u8s8["reference"], EXACT)
    np.testing.assert_array_equal(u8u8["reference"], EXACT)
    # The fused U8S8 kernel on AVX2 without VNNI: each same-sign pair clipped at 32767 (above).
    np.testing.assert_array_equal(u8s8["fast"], SATURATED)
    # U8U8 widens to int16 before multiplying (VPMADDWD, int32 sums): nothing to saturate.
    np.testing.assert_array_equal(u8u8["fast"], EXACT)


def test_sse4_kernels_agree_on_both_encodings(saturating_files, x):
    _require("x86-sse4")
    out = emulation.run_emulated("x86-sse4", saturating_files, x)
    for f in saturating_files:  # MLAS's SSE2 U8X8 kernel (Linux) widens both to int16, PMADDWD: exact
        np.testing.assert_array_equal(out[str(f)]["fast"], EXACT, err_msg=f.name)
        np.testing.assert_array_equal(out[str(f)]["reference"], EXACT, err_msg=f.name)


def test_arm64_generic_kernels_agree_on_both_encodings(saturating_files, x):
    """Not in CI by default: needs `bash scripts/setup_arm64.sh` (about 10 s with warm download
    caches, 1-2 min cold; ~240 MB in ~/.cache/edgekit/arm64)."""
    _require("arm64")
    out = emulation.run_emulated("arm64", saturating_files, x)
    # MLAS's NEON U8X8 kernel (no dotprod): each u8 x u8 product (B's int8 shifted by 128, <= 65025)
    # fits 16 bits unsigned and is added pairwise into 32 bits (UMULL/UADALP): exact.
    for f in saturating_files:
        np.testing.assert_array_equal(out[str(f)]["fast"], EXACT, err_msg=f.name)
        np.testing.assert_array_equal(out[str(f)]["reference"], EXACT, err_msg=f.name)


@pytest.mark.parametrize("cpu, has, lacks", [
    ("x86-avx2", {"avx2", "fma"}, {"avx512f", "avx512_vnni"}),
    ("x86-sse4", {"sse4_1"}, {"avx2"}),
    ("arm64", {"asimd"}, {"asimddp", "i8mm"}),   # what makes the row "arm64-generic"
])
def test_the_child_sees_the_cpu_its_label_names(cpu, has, lacks):
    _require(cpu)
    flags = set(emulation.child_features(cpu)["flags"])
    assert has <= flags and not (lacks & flags), flags
    assert "emulated" in emulation.label(cpu)


def test_a_missing_qemu_is_a_reason_not_a_pass(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-x86_64 on this PATH
    ok, why = emulation.available("x86-avx2")
    assert not ok and "qemu-x86_64 is not installed" in why
    with pytest.raises(ConfigError, match="not available: qemu-x86_64 is not installed"):
        emulation.run_emulated("x86-avx2", [tmp_path / "m.onnx"], np.zeros((1, K), np.float32))


def test_a_missing_arm64_sysroot_names_the_setup_script(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_ARM64_DIR", str(tmp_path / "nowhere"))
    ok, why = emulation.available("arm64")
    assert not ok and ("setup_arm64.sh" in why or "qemu-aarch64" in why)


def test_a_file_the_runtime_rejects_is_named_in_one_line(saturating_files, x, tmp_path):
    _require("x86-sse4")
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(saturating_files[1].read_bytes()[:40])
    with pytest.raises(ModelError, match=r"truncated.onnx: cannot run under x86-sse4 \(qemu Westmere, emulated\)"):
        emulation.run_emulated("x86-sse4", [saturating_files[1], bad], x, kinds=("fast",))


def test_files_are_checked_before_qemu_starts(tmp_path):
    _require("x86-sse4")
    with pytest.raises(ConfigError, match="no such file"):
        emulation.run_emulated("x86-sse4", [tmp_path / "gone.onnx"], np.zeros((1, K), np.float32))
    (tmp_path / "m.keras").write_bytes(b"")
    with pytest.raises(ConfigError, match="reads .onnx and .tflite files"):
        emulation.run_emulated("x86-sse4", [tmp_path / "m.keras"], np.zeros((1, K), np.float32))
    with pytest.raises(ConfigError, match="kinds must be"):
        emulation.run_emulated("x86-sse4", [], np.zeros((1, K), np.float32), kinds=("fused",))


def test_an_arm64_sysroot_for_other_versions_is_not_used(monkeypatch, tmp_path):
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 is not installed (the version check comes after it)")
    (tmp_path / "READY").write_text("debian-bookworm python3.11-minimal | onnxruntime==0.0.1 numpy==0.0.1\n")
    monkeypatch.setenv("EDGEKIT_ARM64_DIR", str(tmp_path))
    ok, why = emulation.available("arm64")
    assert not ok and "other versions than this venv" in why and "setup_arm64.sh" in why


def test_unknown_cpu_and_native_are_refused():
    with pytest.raises(ConfigError, match="unknown parity CPU 'x86-avx512'"):
        emulation.available("x86-avx512")
    assert emulation.available("native") == (True, "")
    with pytest.raises(ConfigError, match="in-process"):
        emulation.run_emulated("native", [], np.zeros((1, K), np.float32))


def test_the_child_imports_no_tensorflow():
    """Under qemu, importing TensorFlow would take minutes: the worker's imports must stay light."""
    code = ("import sys, edgekit.verify.emulation, edgekit.runtimes.onnxrt, edgekit.runtimes.litert; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
