"""The saturation audit and the u8u8 encoding, on tiny QDQ graphs built with onnx.helper.

Every scale is a power of two and every activation an integer code, so the file's meaning is
computable exactly in numpy: the reference below is the graph's arithmetic, not a runtime's.
The same files run under `qemu-x86_64 -cpu Haswell` (AVX2, no VNNI) prove the AVX2 kernel path
on any x86 host (a VNNI machine included)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CIN, COUT, HW = 8, 16, 4       # cin % 4 == 0, cout % 8 == 0: MLAS's ConvSym path on AVX2 as well
S_X, S_W = 2.0 ** -8, 2.0 ** -7
S_Y, ZP_Y = 2.0 ** -4, 128     # x_s * w_s / y_s = 2**-11: the requantization multiplier


def _codes(saturating: bool) -> np.ndarray:
    """Conv weight codes (COUT, CIN, 1, 1). Saturating: channel pairs (2j, 2j+1) along K of
    output channel 0 are (127, 127) and of channel 1 (-127, -127); the others are mixed-sign,
    |w_a + w_b| <= 128, which never overflows."""
    rng = np.random.default_rng(0)
    w = rng.integers(-60, 61, size=(COUT, CIN)).astype(np.int8)
    w[:, 1::2] = -np.sign(w[:, 0::2]) * np.minimum(np.abs(w[:, 0::2]), 60)  # opposite signs in each pair
    if saturating:
        w[0, :] = 127
        w[1, :] = -127
    return w.reshape(COUT, CIN, 1, 1)


def _model(codes: np.ndarray):
    """x (float, NCHW) -> Q(uint8) -> DQ -> Conv 1x1 (DQ int8 weights, per channel) -> Q -> DQ."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(v, dt), n) for n, v, dt in [
        ("x_s", S_X, np.float32), ("x_zp", 0, np.uint8), ("w", codes, np.int8),
        ("w_s", np.full(COUT, S_W), np.float32), ("w_zp", np.zeros(COUT), np.int8),
        ("y_s", S_Y, np.float32), ("y_zp", ZP_Y, np.uint8)]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_zp"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf"], ["yf"], name="conv"),
             helper.make_node("QuantizeLinear", ["yf", "y_s", "y_zp"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, CIN, HW, HW])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, COUT, HW, HW])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _inputs(n: int = 16) -> np.ndarray:
    """Activation codes 0..255 times S_X (exact in float32); half of them 255, the worst case."""
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, size=(n, CIN, HW, HW))
    q[: n // 2] = 255
    return (q * S_X).astype(np.float32)


def _reference(codes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The graph's meaning in exact integer arithmetic: int32 sums, then the 2**-11 multiplier
    (exact in float), round half to even (ONNX QuantizeLinear), clip to uint8, dequantize."""
    xq = np.rint(x / S_X).astype(np.int64)
    acc = np.einsum("nchw,oc->nohw", xq, codes[:, :, 0, 0].astype(np.int64))
    yq = np.clip(np.rint(acc * (S_X * S_W / S_Y)) + ZP_Y, 0, 255)
    return ((yq - ZP_Y) * S_Y).astype(np.float32)


# Runs one file at both optimization levels; numpy and onnxruntime only, so it starts fast under qemu.
_RUNNER = """
import sys, numpy as np, onnxruntime as ort
model, inputs, out = sys.argv[1:4]
x = np.load(inputs)
res = {}
for level, opt in (("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL), ("disable", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
    so = ort.SessionOptions(); so.graph_optimization_level = opt; so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    res[level] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
np.savez(out, **res)
"""


def _run(model_path: Path, x: np.ndarray, tmp: Path, qemu_cpu: str | None = None) -> dict:
    np.save(tmp / "x.npy", x)
    (tmp / "runner.py").write_text(_RUNNER)
    out = tmp / f"out_{model_path.stem}_{qemu_cpu or 'native'}.npz"
    cmd = [sys.executable, str(tmp / "runner.py"), str(model_path), str(tmp / "x.npy"), str(out)]
    if qemu_cpu:
        cmd = [shutil.which("qemu-x86_64"), "-cpu", qemu_cpu, *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return dict(np.load(out))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import onnx

    from edgekit.convert.onnx_int8 import encode_weights

    out = tmp_path_factory.mktemp("sat")
    paths = {}
    for enc in ("u8s8", "u8u8"):
        model = _model(_codes(saturating=True))
        assert encode_weights(model, enc) == (1 if enc == "u8u8" else 0)
        paths[enc] = out / f"{enc}.onnx"
        onnx.save(model, str(paths[enc]))
    return paths


def test_pair_counts_follow_the_int16_bound():
    from edgekit.verify.saturation import pair_counts

    # 255 * 129 = 32895 > 32767 overflows; 255 * 128 = 32640 does not; -255 * 129 < -32768;
    # mixed signs never overflow; an odd last element pairs with padding and is not counted
    w = np.array([[64, 65, 64, 64, -64, -65, 127, -127, 1]])
    assert pair_counts(w) == (4, 2)


def test_audit_flags_saturating_u8s8_weights_and_u8u8_clears_the_file(files):
    from edgekit.verify.audit import audit_int8

    s8, u8 = audit_int8(files["u8s8"]), audit_int8(files["u8u8"])
    # K = CIN = 8 per output channel -> 4 pairs x 16 channels; channels 0 and 1 (sums +-254)
    # overflow in all 4 pairs, the mixed-sign ones never
    want = {"pairs": 64, "overflowing_pairs": 8, "share": 0.125}
    assert {k: s8["saturation"][k] for k in want} == want and {k: u8["saturation"][k] for k in want} == want
    assert s8["saturation"]["encoding"] == "u8s8" and s8["saturation"]["affects_file"]
    assert u8["saturation"]["encoding"] == "u8u8" and not u8["saturation"]["affects_file"]
    assert [layer["name"] for layer in s8["saturation"]["layers"]] == ["conv"]
    for audit, dtype in ((s8, "int8"), (u8, "uint8")):  # both fuse to QLinearConv
        assert audit["passed"], audit["reason"]
        assert audit["weight_dtypes"] == {dtype: COUT * CIN}
        assert [op["op"].split(".")[-1] for op in audit["ops"]] == ["QLinearConv"]


def test_u8u8_computes_the_graph_exactly_natively(files, tmp_path):
    """Power-of-two scales make every step exact (int32 sums, float products of powers of two):
    ORT with and without fusion must equal the integer reference, max diff 0, on any CPU."""
    x = _inputs()
    ref = _reference(_codes(saturating=True), x)
    out = _run(files["u8u8"], x, tmp_path)
    assert np.array_equal(out["disable"], ref)
    assert np.array_equal(out["all"], ref)


def test_u8u8_computes_the_graph_exactly_on_avx2(files, tmp_path):
    """The same under qemu's Haswell (AVX2, no VNNI): the CPU whose U8S8 kernel saturates. The
    u8s8 file must differ there (else the emulation did not reach VPMADDUBSW and this test would
    prove nothing), the u8u8 one must not."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-x86_64 is missing on CI; install qemu-user (apt-get install qemu-user)")
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user): AVX2 path not checked")
    x = _inputs()
    ref = _reference(_codes(saturating=True), x)
    u8 = _run(files["u8u8"], x, tmp_path, "Haswell")
    assert np.array_equal(u8["disable"], ref) and np.array_equal(u8["all"], ref)
    s8 = _run(files["u8s8"], x, tmp_path, "Haswell")
    assert np.array_equal(s8["disable"], ref)
    assert not np.array_equal(s8["all"], ref)  # saturated: channels 0 and 1 at x = 255
    assert np.array_equal(s8["all"][:, 2:], ref[:, 2:])  # the non-overflowing channels are exact


def test_depthwise_conv_is_listed_but_has_no_gemm_pairs(tmp_path):
    """Depthwise convs use MLAS's depthwise kernels (int32 products), never VPMADDUBSW pairs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.verify.saturation import saturation_audit

    w = np.full((CIN, 1, 3, 3), 127, np.int8)
    inits = [numpy_helper.from_array(np.asarray(v, dt), n) for n, v, dt in [
        ("x_s", S_X, np.float32), ("x_zp", 0, np.uint8), ("w", w, np.int8),
        ("w_s", np.full(CIN, S_W), np.float32), ("w_zp", np.zeros(CIN), np.int8)]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_zp"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf"], ["y"], name="dw", group=CIN, pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CIN, HW, HW])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CIN, HW, HW])], inits)
    path = tmp_path / "dw.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    sat = saturation_audit(path)
    assert sat["layers"] == [{"name": "dw", "op": "Conv", "kernel": "depthwise", "pairs": 0,
                              "overflowing_pairs": 0, "share": 0.0}]
    assert sat["pairs"] == 0 and not sat["affects_file"]
