"""A layer left float that feeds a quantized one (Rescaling, the raw-TF-op hard-swish of the mobile
blocks) gets a QAT-learned output range, so both int8 QAT routes read it from QAT: the TFLite
file's HARD_SWISH loads (its int8 kernel refuses an output scale under input scale / 128, which a
range calibrated on an untrained BatchNorm's inference-mode outputs gave), and the ONNX file runs
every convolution in integer kernels, a zero Pad included."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import build_tiny_mobile, mobile_calibration


@pytest.fixture(scope="module")
def mobile_qat():
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model

    float_model = build_tiny_mobile()
    qat = make_qat_model(float_model)
    x = mobile_calibration(64, seed=1)
    finetune_qat(qat, x, np.random.default_rng(2).integers(0, 10, len(x)), epochs=1, learning_rate=1e-4,
                 batch_size=64)
    return float_model, qat, x


def test_float_layer_feeding_a_quantized_one_gets_a_warm_started_output_range(mobile_qat):
    from edgekit.convert.quantize import qat_float_layers

    _, qat, _ = mobile_qat
    left_float = set(qat_float_layers(qat))
    for layer in qat.layers:   # no quantized layer reads a float tensor
        if type(layer).__name__.startswith("QuantizeWrapper"):
            prev = layer._inbound_nodes[-1].inbound_layers
            assert not {p.name for p in (prev if isinstance(prev, list) else [prev])} & left_float, layer.name
    added = {layer.name: layer for layer in qat.layers if type(layer).__name__ == "QuantizeLayer"}
    hard_swish_ends = ["tf.math.truediv"] + [f"tf.math.truediv_{i}" for i in range(1, 5)]
    assert set(added) == {f"{name}_quantize" for name in ["rescaling", *hard_swish_ends]}
    for name, quant in added.items():
        lo, hi = (float(v.numpy()) for v in quant.weights if v.name.endswith(("_min:0", "_max:0")))
        assert lo < 0 < hi and (lo, hi) != (-6.0, 6.0), name   # warm-started, not tfmot's start


def test_tflite_int8_qat_hard_swish_loads_with_qat_ranges(mobile_qat, tmp_path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekit.convert import converters as convert
    from edgekit.convert.quantize import representative_set

    float_model, qat, x = mobile_qat
    path = tmp_path / "qat.tflite"
    convert.make_tflite_int8_qat.convert(convert.ConversionInputs(float_model, qat, representative_set(x, 32)), path)
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()   # HARD_SWISH's Prepare: output scale must exceed input scale / 128
    scale = {t["index"]: t["quantization"][0] for t in it.get_tensor_details()}
    swish = [op for op in it._get_ops_details() if op["op_name"] == "HARD_SWISH"]
    assert len(swish) == 5
    for op in swish:
        assert scale[op["outputs"][0]] > scale[op["inputs"][0]] / 128 * 1.5
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s, zp = inp["quantization"]
    it.set_tensor(inp["index"], np.clip(np.rint(x[:1] / s + zp), -128, 127).astype(np.int8))
    it.invoke()
    s, zp = out["quantization"]
    got = (it.get_tensor(out["index"]).astype(np.float32) - zp) * s
    want = qat(x[:1], training=False).numpy()
    assert float(np.dot(got.ravel(), want.ravel()) / np.linalg.norm(got) / np.linalg.norm(want)) > 0.9


def test_onnx_int8_qat_runs_every_conv_in_integer_kernels(mobile_qat, tmp_path):
    import onnxruntime as ort

    from edgekit.convert.onnx_int8 import qat_onnx_int8
    from edgekit.verify.audit import audit_int8

    _, qat, x = mobile_qat
    path = tmp_path / "qat.onnx"
    stats = qat_onnx_int8(qat, path)
    assert stats["float_weights"] == []
    audit = audit_int8(path)
    assert audit["passed"] and audit["integer_mac_fraction"] == 1.0, audit["reason"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:16]})[0]
    want = qat(x[:16], training=False).numpy()
    assert 10 * np.log10((want ** 2).sum() / ((got - want) ** 2).sum()) > 12   # dB; logits of ~2 steps std


def test_zero_pad_runs_on_codes_padding_with_the_zero_point():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.convert.onnx_graph import _Graph
    from edgekit.convert.onnx_rewrite import propagate_quantized

    inits = [numpy_helper.from_array(np.asarray(0.05, np.float32), "s"),
             numpy_helper.from_array(np.asarray(100, np.uint8), "zp"),
             numpy_helper.from_array(np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
             helper.make_node("Pad", ["dq", "pads"], ["padded"]),
             helper.make_node("Relu", ["padded"], ["y"])]
    graph = helper.make_graph(nodes, "pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.asarray([[[[-1.0, 2.0], [0.5, -3.0]]]], np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(model)
    assert propagate_quantized(_Graph(model)) == 1
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    assert list(pad.input)[:3] == ["q", "pads", "zp"]   # pads the codes with the zero point: 0.0 exactly
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model), before)
