"""Partial QAT (layers tfmot cannot wrap stay float), the loss matching the head, ModelError
refusals, and the int8 QAT conversions of such a model: a small MobileNetV3-like network at
32x32, runs in seconds."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgekit.errors import ModelError


def _mini(head: str | None = "softmax", classes: int = 10):
    """Rescaling, ZeroPadding2D, Conv+BN, hard-swish as raw TF ops (TFOpLambda), depthwise conv,
    ReLU6, residual Add, GlobalAveragePooling, Dense head (softmax or logits)."""
    import tensorflow as tf
    import tf_keras as k

    inp = k.Input((32, 32, 3), name="image")
    x = k.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    x = k.layers.ZeroPadding2D(1, name="pad")(x)
    x = k.layers.Conv2D(8, 3, strides=2, use_bias=False, name="stem_conv")(x)
    x = k.layers.BatchNormalization(name="stem_bn")(x)
    x = x * tf.nn.relu6(x + 3.0) / 6.0  # hard-swish: three TFOpLambda layers and a relu6 op
    y = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = k.layers.BatchNormalization(name="dw_bn")(y)
    y = k.layers.ReLU(6.0, name="dw_relu6")(y)
    y = k.layers.Conv2D(8, 1, use_bias=False, name="pw")(y)
    y = k.layers.BatchNormalization(name="pw_bn")(y)
    x = k.layers.Add(name="residual")([x, y])
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, k.layers.Dense(classes, activation=head, name="head")(x), name="mini")


def _data(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 32, 32, 3), dtype=np.float32) * 255).astype(np.float32), rng.integers(0, 10, n)


@pytest.fixture(scope="module")
def mini_qat():
    import tf_keras

    from edgekit.convert.quantize import finetune_qat, make_qat_model

    tf_keras.utils.set_random_seed(0)
    float_model = _mini("softmax")
    qat = make_qat_model(float_model)
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = finetune_qat(qat, x, y, epochs=1, learning_rate=1e-4, batch_size=16)
    return float_model, qat, fit, [str(w.message) for w in caught]


def test_partial_qat_wraps_what_tfmot_supports_and_leaves_the_rest_float(mini_qat):
    from edgekit.convert.quantize import qat_float_layers

    float_model, qat, fit, _ = mini_qat
    wrapped = {l.layer.name for l in qat.layers if type(l).__name__.startswith("QuantizeWrapper")}
    assert {"stem_conv", "dw", "pw", "residual", "gap", "head", "pad", "dw_relu6"} <= wrapped
    assert {"stem_bn", "dw_bn", "pw_bn"} <= wrapped  # folded into their convs, not left float
    left = qat_float_layers(qat)
    classes = {type(qat.get_layer(n)).__name__ for n in left}
    assert "rescale" in left and classes == {"Rescaling", "TFOpLambda"}
    assert fit["float_layers"] == left
    assert np.isfinite(fit["loss"][0])
    # the float model is untouched: still one inbound node per layer, still predicts
    assert all(len(l._inbound_nodes) == 1 for l in float_model.layers if type(l).__name__ != "InputLayer")


def test_finetune_uses_the_loss_matching_the_head(mini_qat):
    import tf_keras

    from edgekit.convert.quantize import finetune_qat, make_qat_model, output_kind

    _, qat, fit, caught = mini_qat
    assert fit["output"] == "softmax" and output_kind(qat) == "softmax"
    assert not any("from_logits" in m for m in caught), caught  # no "produced by a Softmax" warning
    assert qat.loss.get_config()["from_logits"] is False

    logits = make_qat_model(_mini(None))
    x, y = _data(16)
    assert finetune_qat(logits, x, y, epochs=1, learning_rate=1e-4, batch_size=16)["output"] == "logits"
    assert logits.loss.get_config()["from_logits"] is True

    inp = tf_keras.Input((8,))
    h = tf_keras.layers.Dense(4)(inp)
    sm = tf_keras.layers.Activation("softmax")(tf_keras.layers.Reshape((4,))(h))
    assert output_kind(tf_keras.Model(inp, sm)) == "softmax"
    assert output_kind(tf_keras.Model(inp, tf_keras.layers.Softmax()(h))) == "softmax"


def _lambda_model():
    import tf_keras as k

    inp = k.Input((32, 32, 3))
    x = k.layers.Conv2D(4, 3)(inp)
    x = k.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    return k.Model(inp, k.layers.Dense(10)(k.layers.GlobalAveragePooling2D()(x)))


def _nested_model():
    import tf_keras as k

    inner = k.Sequential([k.layers.Conv2D(4, 3, input_shape=(32, 32, 3))], name="backbone")
    inp = k.Input((32, 32, 3))
    return k.Model(inp, k.layers.Dense(10)(k.layers.GlobalAveragePooling2D()(inner(inp))))


def _nothing_quantizable():
    import tf_keras as k

    inp = k.Input((32, 32, 3))
    return k.Model(inp, k.layers.LayerNormalization(name="norm")(k.layers.Rescaling(0.5)(inp)))


@pytest.mark.parametrize("build, names", [
    (_lambda_model, ["'double'", "Lambda"]),
    (_nested_model, ["'backbone'", "Sequential"]),
    (_nothing_quantizable, ["no layer"]),
])
def test_unsupported_models_raise_one_line_model_error(build, names):
    from edgekit.convert.quantize import make_qat_model

    with pytest.raises(ModelError) as info:
        make_qat_model(build())
    msg = str(info.value)
    assert all(n in msg for n in names) and "\n" not in msg and "float variants are still exported" in msg


def test_finetune_failure_is_a_model_error(mini_qat):
    from edgekit.convert.quantize import finetune_qat, make_qat_model

    qat = make_qat_model(_mini("softmax", classes=3))
    x, _ = _data(8)
    with pytest.raises(ModelError, match="fine-tuning"):  # labels 3..9 beyond 3 classes
        finetune_qat(qat, x, np.full(8, 9), epochs=1, learning_rate=1e-4, batch_size=8)


def test_partial_qat_model_converts_to_int8_tflite_and_onnx(mini_qat, tmp_path):
    import onnxruntime as ort

    from edgekit.convert import converters as convert
    from edgekit.errors import ConfigError
    from edgekit.convert.quantize import representative_set
    from edgekit.core.variants import VARIANTS

    float_model, qat, _, _ = mini_qat
    x, _ = _data(16, seed=1)
    inputs = convert.ConversionInputs(float_model=float_model, qat_model=qat,
                                      representative=representative_set(x, 8))
    for name in ("tflite-int8-qat", "onnx-int8-qat"):
        path = tmp_path / f"{name}.{name.split('-')[0]}"
        VARIANTS[name].make(inputs, path)  # also checks the declared io_dtype
        ins, outs = convert.io_details(path)
        assert ins[0]["dtype"] == ("int8" if name.startswith("tflite") else "float32")
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tmp_path / "tflite-int8-qat.tflite"))
    assert all(t["dtype"] != np.float32 for t in it.get_tensor_details())  # full integer, no float op
    sess = ort.InferenceSession(str(tmp_path / "onnx-int8-qat.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"image": x[:4]})[0]
    assert np.allclose(y.sum(1), 1.0, atol=0.05)  # the softmax head's probabilities
    with pytest.raises(ConfigError, match="left float|calibration"):  # float layers need calibration
        convert.make_tflite_int8_qat.convert(convert.ConversionInputs(float_model, qat, None), tmp_path / "x.tflite")
