"""The size verdict against the route's expected size: real files of a tiny separable-conv model
(where a fixed 0.32 ratio fails files that are as small as their routes make them), files broken
on purpose (a weight left float), and the rules on tensors written by hand."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.verify.expected_size import (DYNAMIC_MIN_ELEMENTS, ExpectedSize, _price, expected_size,
                                          expected_size_row, judge_size)
from edgekit.verify.file_tensors import ConstTensor, file_tensors


def tiny_separable(seed: int = 0):
    """About 15 KiB as TFLite: a stem Conv, three separable convolutions, a Dense head. Non-zero
    biases (random), as a trained model has: converters drop all-zero ones."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(seed)
    bias = {"bias_initializer": "random_normal"}
    inp = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2d", **bias)(inp)
    x = layers.SeparableConv2D(16, 3, padding="same", activation="relu", name="separable_conv2d", **bias)(x)
    x = layers.SeparableConv2D(32, 3, strides=2, padding="same", activation="relu", name="separable_conv2d_1", **bias)(x)
    x = layers.SeparableConv2D(32, 3, padding="same", activation="relu", name="separable_conv2d_2", **bias)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, name="dense", **bias)(x), name="tiny_sep")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    from edgekit.convert.converters import (ConversionInputs, make_onnx_int8_ptq, make_tflite_dynamic,
                                            make_tflite_fp16, make_tflite_fp32, make_tflite_int8_ptq)

    x = np.random.default_rng(0).uniform(0, 1, (32, 28, 28, 1)).astype(np.float32)
    inputs = ConversionInputs(float_model=tiny_separable(), qat_model=None, representative=x)
    out = tmp_path_factory.mktemp("tiny_sep")
    makers = {"tflite-fp32": make_tflite_fp32, "tflite-fp16": make_tflite_fp16,
              "tflite-dynamic": make_tflite_dynamic, "tflite-int8-ptq": make_tflite_int8_ptq,
              "onnx-int8-ptq": make_onnx_int8_ptq}
    paths = {}
    for name, make in makers.items():
        paths[name] = out / f"{name}.{name.split('-')[0]}"
        make.convert(inputs, paths[name])
    return paths


CLASSES = {"tflite-fp32": "float", "tflite-fp16": "fp16", "tflite-dynamic": "dynamic",
           "tflite-int8-ptq": "int8-ptq", "onnx-int8-ptq": "int8-ptq"}


def test_the_size_verdict_of_a_tiny_model_passes_when_every_quantizable_tensor_is_int8(tiny_files):
    """Every route's file is within 5% of its expectation, although the fixed 0.32 ratio of the
    default profile fails the dynamic-range file (small tensors stay float by design)."""
    from edgekit.verify.weight_bytes import weight_bytes

    fp32 = weight_bytes(tiny_files["tflite-fp32"])
    for name, path in tiny_files.items():
        wb = weight_bytes(path)
        exp = expected_size(path, CLASSES[name])
        assert exp.stored_bytes == wb            # the same tensors weight_bytes counts
        verdict = judge_size(wb, exp)
        assert verdict.passed, (name, verdict.reason)
        assert verdict.limit == 0.05 and abs(verdict.value) <= 0.05
        assert not exp.over()
        json.dumps(exp.to_dict())                # the record is JSON
    assert weight_bytes(tiny_files["tflite-dynamic"]) / fp32 > 0.32


def test_the_dynamic_range_reason_names_what_stayed_float_and_why(tiny_files):
    exp = expected_size(tiny_files["tflite-dynamic"], "dynamic")
    kept = exp.kept()
    assert kept["dynamic-small"]["tensors"] >= 5 and kept["dynamic-bias"]["tensors"] >= 4
    reason = judge_size(exp.stored_bytes, exp).reason
    assert "under 1024 elements" in reason and "biases" in reason and "dense/MatMul" in reason
    # exactly one weight of the model has >= 1024 elements (32x1x1x32), and it is int8
    int8 = [t for t in exp.tensors if t.stored_dtype == "int8"]
    assert [t.shape for t in int8] == [(32, 1, 1, 32)]


def test_onnx_int8_prices_scales_zero_points_and_int32_biases(tiny_files):
    """The ONNX file is far above 0.32 of fp32 on this model because of per-channel scales and
    int32 biases, and exactly what those rules predict."""
    exp = expected_size(tiny_files["onnx-int8-ptq"], "int8-ptq")
    assert exp.expected_bytes == exp.stored_bytes
    assert "onnx-bias" in exp.kept()
    roles = {t.role for t in file_tensors(tiny_files["onnx-int8-ptq"])}
    assert {"weight", "bias", "qparam", "activation_qparam"} <= roles


def test_the_size_verdict_fails_when_a_weight_that_should_be_int8_is_float(tiny_files):
    """The fp32 file judged as a dynamic-range file: its 1024-element weight should be int8."""
    exp = expected_size(tiny_files["tflite-fp32"], "dynamic")
    verdict = judge_size(exp.stored_bytes, exp)
    assert verdict.passed is False and verdict.value > 0.05
    assert "separable_conv2d_2/separable_conv2d (32, 1, 1, 32) float32 4096 B, expected int8 1024 B" \
        in verdict.reason


def test_an_onnx_int8_file_with_one_float_weight_fails(tiny_files, tmp_path):
    """The failure tf2onnx's QAT route once had, on one tensor: the biggest weight stored float32
    and read by its Conv directly (its DequantizeLinear, scale and zero point removed)."""
    import onnx
    from onnx import numpy_helper

    from edgekit.verify.weight_bytes import weight_bytes

    model = onnx.load(str(tiny_files["onnx-int8-ptq"]))
    inits = {t.name: t for t in model.graph.initializer}
    dq = max((n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits),
             key=lambda n: int(np.prod(inits[n.input[0]].dims)))
    weight = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
    for name in dq.input:
        model.graph.initializer.remove(inits[name])
    model.graph.node.remove(dq)
    model.graph.initializer.append(numpy_helper.from_array(weight, dq.output[0]))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))

    exp = expected_size(broken, "int8-ptq")
    verdict = judge_size(weight_bytes(broken), exp)
    assert verdict.passed is False
    assert [t.shape for t in exp.over()] == [weight.shape]
    assert f"{weight.shape} float32 {weight.nbytes} B, expected 8-bit" in verdict.reason


def _t(role: str, shape: tuple[int, ...], dtype: str = "float32", channels: int = 1) -> ConstTensor:
    n = int(np.prod(shape)) if shape else 1
    return ConstTensor(name="t", shape=shape, dtype=dtype, nbytes=n * np.dtype(dtype).itemsize, role=role,
                       op="CONV_2D", channels=channels)


def test_route_rules_on_single_tensors():
    small, big = _t("weight", (DYNAMIC_MIN_ELEMENTS - 1,)), _t("weight", (DYNAMIC_MIN_ELEMENTS,))
    assert _price("tflite dynamic", small).expected_bytes == 4 * (DYNAMIC_MIN_ELEMENTS - 1)
    assert _price("tflite dynamic", small).why == "dynamic-small"
    assert _price("tflite dynamic", big).expected_bytes == DYNAMIC_MIN_ELEMENTS
    assert _price("tflite fp16", big).expected_bytes == 2 * DYNAMIC_MIN_ELEMENTS
    assert _price("tflite int8", _t("bias", (16,))).expected_bytes == 64
    assert _price("tflite int8", _t("other", ())).expected_bytes == 1
    # ONNX: 8-bit weight + float32 scale and 8-bit zero point per channel; int32 bias + scale + zero point
    assert _price("onnx int8", _t("weight", (16, 8, 3, 3), channels=16)).expected_bytes == 16 * 72 + 16 * 5
    assert _price("onnx int8", _t("bias", (16,), channels=16)).expected_bytes == 16 * 12
    assert _price("onnx int8", _t("qparam", (16,))).expected_bytes == 0
    # shapes and axes cost what they cost on every route
    shape = _t("other", (4, 2), dtype="int32")
    assert _price("tflite int8", shape).expected_bytes == 32 and _price("tflite int8", shape).why == "not-float"


def test_tolerance_is_inclusive_and_smaller_files_pass():
    exp = ExpectedSize(route="tflite int8", expected_bytes=1000, stored_bytes=1000, tensors=())
    assert judge_size(1050, exp).passed and not judge_size(1051, exp).passed
    assert judge_size(700, exp).passed                      # a converter that shares more is fine
    assert judge_size(1100, exp, tolerance=0.10).passed
    missing = judge_size(None, exp)
    assert missing.passed is None and missing.value is None and "not measured" in missing.reason


def test_the_gate_judges_from_the_record_alone(tiny_files):
    """judge_size on the JSON record gives the verdict and reason it gives on the live expectation."""
    exp = expected_size(tiny_files["tflite-fp32"], "dynamic")
    rec = json.loads(json.dumps(exp.to_dict()))
    assert judge_size(exp.stored_bytes, rec) == judge_size(exp.stored_bytes, exp)
    row = expected_size_row(0.05, exp.stored_bytes, rec)
    assert row["name"] == "max_expected_size_excess" and row["passed"] is False and row["limit"] == 0.05
    assert row["expected_weight_bytes"] == exp.expected_bytes and "expected int8" in row["note"]
    assert expected_size_row(0.05, None, None)["passed"] is None
