"""Weight bytes: the constant tensors of a file, counted exactly, for every format and variant."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError, ModelError
from edgekit.verify.weight_bytes import weight_bytes

N_IN, N_HID, N_OUT = 16, 8, 4
KERNELS = N_IN * N_HID + N_HID * N_OUT   # 160 weight elements
BIASES = N_HID + N_OUT                   # 12 bias elements


@pytest.fixture(scope="module")
def dense_files(tmp_path_factory):
    """tflite-fp32, onnx-fp32 and tflite-int8-ptq of a two-layer Dense model (no reshapes, so no
    shape constants), made by edgekit.convert.converters. Biases are non-zero: a converter may drop an
    all-zero bias, which would make the expected count depend on that choice."""
    import tf_keras as k

    from edgekit.convert.converters import ConversionInputs
    from edgekit.core.variants import EXPORT_VARIANTS as VARIANTS

    d = tmp_path_factory.mktemp("wb")
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.InputLayer(input_shape=(N_IN,)), k.layers.Dense(N_HID, activation="relu"),
                          k.layers.Dense(N_OUT)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    inputs = ConversionInputs(float_model=model, qat_model=None,
                              representative=rng.random((64, N_IN), dtype=np.float32))
    files = {}
    for name in ("tflite-fp32", "onnx-fp32", "tflite-int8-ptq"):
        files[name] = d / f"{name}{VARIANTS[name].suffix}"
        VARIANTS[name].make(inputs, files[name])
    return model, files


def test_float_files_count_exactly_the_keras_weights(dense_files):
    model, files = dense_files
    keras_bytes = sum(w.nbytes for w in model.get_weights())
    assert keras_bytes == 4 * (KERNELS + BIASES)
    assert weight_bytes(files["tflite-fp32"]) == keras_bytes
    assert weight_bytes(files["onnx-fp32"]) == keras_bytes
    # the files themselves are larger: framing, names, signatures
    assert files["tflite-fp32"].stat().st_size > keras_bytes


def test_int8_tflite_counts_int8_kernels_and_int32_biases(dense_files):
    """Full-integer TFLite: 1 byte per kernel element, 4 per bias (int32), nothing else stored as
    a buffer (scales are tensor metadata): 160 + 48 = 208 bytes, 208 / 688 = 0.302 of fp32."""
    _, files = dense_files
    assert weight_bytes(files["tflite-int8-ptq"]) == KERNELS + 4 * BIASES


def test_onnx_counts_initializers_and_constant_nodes(tmp_path):
    """A hand-built graph: float32 [3, 4] initializer (48 bytes), int32 [4] initializer (16),
    an int8 [5] Constant node (5), and an If whose branches hold a float32 [2] Constant each (8 + 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    b = numpy_helper.from_array(np.arange(4, dtype=np.int32), "b")
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.arange(5, dtype=np.int8)))

    def branch(name: str, value: float):
        node = helper.make_node("Constant", [], [f"{name}_out"],
                                value=numpy_helper.from_array(np.full(2, value, np.float32)))
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])
        return helper.make_graph([node], name, [], [out])

    cond = helper.make_node("If", ["flag"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", 2.0))
    graph = helper.make_graph([const, cond], "g", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[w, b])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert weight_bytes(path) == 48 + 16 + 5 + 8 + 8


def test_unreadable_and_unknown_files(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelError, match="bad.tflite: cannot read the TFLite flatbuffer"):
        weight_bytes(bad)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\xff\xff\xff not protobuf")
    with pytest.raises(ModelError, match="bad.onnx: cannot read the ONNX file"):
        weight_bytes(bad_onnx)
    with pytest.raises(ConfigError, match="not '.h5'"):
        weight_bytes(tmp_path / "model.h5")
