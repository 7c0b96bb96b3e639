"""The int8 ONNX routes: the QAT rewrite (int8 weights on the QAT grid) versus tf2onnx's raw QAT
output (float weights: the trap the audit must catch), and ONNX Runtime's static PTQ."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ExportError


@pytest.fixture(scope="module")
def qat(trained_run, synthetic):
    from edgekit.data import to_float
    from edgekit.quantize import finetune_qat, make_qat_model
    from edgekit.runtimes.keras_tf import load_keras_model

    model = load_keras_model(trained_run / "train/cnn/model.keras")
    q = make_qat_model(model)
    finetune_qat(q, to_float(synthetic.x_train), synthetic.y_train, epochs=0.5, learning_rate=1e-4)
    return q


@pytest.fixture(scope="module")
def files(qat, tmp_path_factory):
    import onnx

    from edgekit.onnx_int8 import keras_to_onnx, qat_onnx_int8

    out = tmp_path_factory.mktemp("onnx")
    onnx.save(keras_to_onnx(qat, 17, "image"), str(out / "raw.onnx"))
    stats = qat_onnx_int8(qat, out / "int8.onnx")
    return out / "raw.onnx", out / "int8.onnx", stats


def test_tf2onnx_raw_qat_onnx_fails_the_audit(files, qat):
    """The trap: float32 weight constants. With tfmot's cold ReLU ranges (below 0) ORT also runs
    the convolutions in float; with zero-based ranges ORT 1.2x quantizes the float weights itself
    (its own grid, not QAT's), but the file stays float-sized: the audit fails it either way."""
    from edgekit.onnx_int8 import keras_to_onnx
    from edgekit.quantize import audit_int8

    raw, _, _ = files
    audit = audit_int8(raw)
    assert not audit["passed"]
    assert audit["weight_dtypes"] == {"float32": 34720} and audit["int8_weight_fraction"] == 0.0
    assert "stored as int8" in audit["reason"]

    import onnx

    mins = [v for v in qat.weights if v.name.endswith("post_activation_min:0") and "conv2d" in v.name]
    saved = [float(v.numpy()) for v in mins]
    try:
        for v in mins:
            v.assign(-2.0)
        cold = raw.with_name("cold.onnx")
        onnx.save(keras_to_onnx(qat, 17, "image"), str(cold))
    finally:
        for v, s in zip(mins, saved):
            v.assign(s)
    audit = audit_int8(cold)
    assert not audit["passed"] and audit["integer_mac_fraction"] < 0.05
    assert "MACs run in integer" in audit["reason"] and "FusedConv" in audit["reason"]


def test_rewritten_qat_onnx_is_int8_small_and_matches_the_qat_model(files, qat, synthetic):
    from edgekit.data import to_float
    from edgekit.quantize import audit_int8
    from edgekit.runtimes import open_file

    raw, int8, stats = files
    assert stats["weights"] == 3 and stats["biases"] == 3 and stats["gemm"] == 1
    audit = audit_int8(int8)
    assert audit["passed"], audit["reason"]
    assert audit["weight_dtypes"] == {"int8": 34720}
    assert audit["macs"] == {"integer": 194688 + 2230272 + 16000, "float": 0}
    assert {op["op"].split(".")[-1] for op in audit["ops"]} == {"QLinearConv", "QGemm"}
    assert int8.stat().st_size <= 0.32 * raw.stat().st_size
    x = to_float(synthetic.x_test[:200])
    ref = qat.predict(x, verbose=0)
    y = open_file(int8).predict(x)
    assert np.mean(y.argmax(1) == ref.argmax(1)) >= 0.995
    # re-quantizing the folded weights is exact: only int32 bias rounding can move an output,
    # by at most a step or two of the logits' quantization grid
    r = {v.name.split("/")[-1]: float(v.numpy()) for v in qat.weights if v.name.startswith("quant_logits/post")}
    step = (r["post_activation_max:0"] - r["post_activation_min:0"]) / 255
    assert np.abs(y - ref).max() <= 2.01 * step


def test_qat_grid_is_verified_not_assumed(qat):
    """Codes that do not reproduce tf2onnx's folded weights are refused, never silently used."""
    from edgekit.onnx_int8 import keras_to_onnx, qat_weight_codes, rewrite_qat_onnx

    codes = qat_weight_codes(qat)
    first = next(iter(codes))
    assert codes[first]["codes"].dtype == np.int8 and np.abs(codes[first]["codes"]).max() == 127
    broken = dict(codes)
    broken[first] = dict(codes[first], codes=np.clip(codes[first]["codes"].astype(np.int16) + 3, -127, 127)
                         .astype(np.int8))
    with pytest.raises(ExportError, match="off the QAT int8 grid"):
        rewrite_qat_onnx(keras_to_onnx(qat, 17, "image"), broken)


def test_relu_range_below_zero_becomes_an_integer_clip(qat, tmp_path, synthetic):
    """A QAT ReLU range reaching below 0 (tfmot's cold [-6, 6] start) cannot drop the Relu;
    it becomes Clip(min=zero point) on the integer tensor and the convs stay QLinearConv."""
    import onnx

    from edgekit.data import to_float
    from edgekit.onnx_int8 import qat_onnx_int8
    from edgekit.quantize import audit_int8
    from edgekit.runtimes import open_file

    mins = [v for v in qat.weights if v.name.endswith("post_activation_min:0") and "conv2d" in v.name]
    saved = [float(v.numpy()) for v in mins]
    try:
        for v in mins:
            v.assign(-2.0)
        path = tmp_path / "clip.onnx"
        qat_onnx_int8(qat, path)
        x = to_float(synthetic.x_test[:100])
        ref = qat.predict(x, verbose=0)
    finally:
        for v, s in zip(mins, saved):
            v.assign(s)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Clip") == 2 and "Relu" not in ops
    assert audit_int8(path)["passed"]
    assert np.mean(open_file(path).predict(x).argmax(1) == ref.argmax(1)) >= 0.99


def test_ort_static_ptq_is_int8_and_audited(qat, trained_run, synthetic, tmp_path):
    import onnx

    from edgekit.data import to_float
    from edgekit.onnx_int8 import compact, keras_to_onnx, ptq_onnx_int8
    from edgekit.quantize import audit_int8, representative_set
    from edgekit.runtimes import open_file
    from edgekit.runtimes.keras_tf import load_keras_model

    model = load_keras_model(trained_run / "train/cnn/model.keras")
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(compact(keras_to_onnx(model, 17, "image")), str(fp32))
    ptq = tmp_path / "ptq.onnx"
    ptq_onnx_int8(fp32, representative_set(to_float(synthetic.x_train), 64), ptq)
    audit = audit_int8(ptq)
    assert audit["passed"], audit["reason"]
    assert ptq.stat().st_size <= 0.32 * fp32.stat().st_size
    x = to_float(synthetic.x_test[:100])
    assert np.mean(open_file(ptq).predict(x).argmax(1) == model.predict(x, verbose=0).argmax(1)) >= 0.98


def test_batchnorm_folded_residual_network_requantizes_exactly(synthetic, tmp_path):
    """Conv+BN (folded by tf2onnx into per-channel-rescaled weights) and a residual Add: the
    fitted scales absorb the BN factor, and the whole graph runs on integer kernels."""
    import tf_keras as k

    from edgekit.data import to_float
    from edgekit.onnx_int8 import qat_onnx_int8, qat_weight_codes
    from edgekit.quantize import audit_int8, finetune_qat, make_qat_model
    from edgekit.runtimes import open_file

    inp = k.Input((28, 28, 1), name="image")
    x = k.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = k.layers.ReLU(name="stem_relu")(k.layers.BatchNormalization(name="stem_bn")(x))
    y = k.layers.BatchNormalization(name="b_bn")(k.layers.Conv2D(8, 3, padding="same", use_bias=False, name="b")(x))
    x = k.layers.ReLU(name="out")(k.layers.Add(name="add")([x, y]))
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    model = k.Model(inp, k.layers.Dense(10, name="logits")(x), name="tiny_resnet")
    xs = to_float(synthetic.x_train[:512])
    qat = make_qat_model(model)
    finetune_qat(qat, xs, synthetic.y_train[:512], epochs=1.0, learning_rate=3e-3, batch_size=64)

    path = tmp_path / "bn.onnx"
    stats = qat_onnx_int8(qat, path)
    assert stats["weights"] == 3 and stats["biases"] == 3
    audit = audit_int8(path)
    assert audit["passed"], audit["reason"]
    assert {op["op"].split(".")[-1] for op in audit["ops"]} == {"QLinearConv", "QGemm"}

    import onnx
    from onnx import numpy_helper

    scales = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT and i.dims == [8]]
    qat_scales = [c["scale"] for c in qat_weight_codes(qat).values() if np.ndim(c["scale"]) == 1]
    assert not any(np.allclose(s, q) for s in scales for q in qat_scales)  # BN factor folded in

    xt = to_float(synthetic.x_test[:200])
    ref = qat.predict(xt, verbose=0)
    assert np.mean(open_file(path).predict(xt).argmax(1) == ref.argmax(1)) >= 0.99
