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

    from edgekit.convert.finetune import finetune_qat

    from edgekit.convert.quantize import make_qat_model

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

    from edgekit.convert.finetune import finetune_qat

    from edgekit.convert.quantize import make_qat_model, output_kind

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
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model

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


# ----------------------------------------------------------------------------- squeeze-excite, swish

def _squeeze_excite():
    """MobileNetV3's squeeze-excite at 32x32: GlobalAveragePooling(keepdims) -> 1x1 Conv (bias)
    -> ReLU -> 1x1 Conv -> hard-sigmoid as raw TF ops (TFOpLambda) -> Multiply; a logits head.
    Both 1x1 convs have 8 x 16 weights, so their sizes cannot tell them apart."""
    import tensorflow as tf
    import tf_keras as k

    k.utils.set_random_seed(0)
    inp = k.Input((32, 32, 3), name="image")
    x = k.layers.Rescaling(1 / 255.0, name="rescale")(inp)
    x = k.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = k.layers.ReLU(name="stem_relu")(k.layers.BatchNormalization(name="stem_bn")(x))
    s = k.layers.GlobalAveragePooling2D(keepdims=True, name="se/pool")(x)
    s = k.layers.ReLU(name="se/relu")(k.layers.Conv2D(8, 1, name="se/reduce")(s))
    s = k.layers.Conv2D(16, 1, name="se/expand")(s)
    s = tf.nn.relu6(s + 3.0) * (1.0 / 6.0)
    x = k.layers.Multiply(name="se/mul")([x, s])
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, k.layers.Dense(10, name="logits")(x), name="se")


@pytest.fixture(scope="module")
def se_qat():
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model

    float_model = _squeeze_excite()
    qat = make_qat_model(float_model)
    x, y = _data(16)
    finetune_qat(qat, x, y, epochs=1, learning_rate=1e-4, batch_size=8)
    return float_model, qat


def test_conv_before_relu_keeps_its_weight_quantizer(se_qat):
    """tfmot's LayerReLUQuantize gives a Conv followed by a ReLU a NoOpQuantizeConfig, dropping
    its weight quantizer too (the SE reduce conv trained float and had no QAT codes); it now
    keeps the weights quantized and only loses the fake-quant between it and the ReLU."""
    from edgekit.convert.onnx_int8 import qat_weight_codes

    _, qat = se_qat
    codes = qat_weight_codes(qat)
    assert {"quant_stem", "quant_se/reduce", "quant_se/expand", "quant_logits"} <= set(codes)
    reduce_vars = {v.name.split("/")[-1] for v in qat.get_layer("quant_se/reduce").weights}
    assert "kernel_min:0" in reduce_vars and not any("activation" in n for n in reduce_vars)


def test_onnx_weight_without_qat_codes_stays_float_never_a_guess(se_qat, tmp_path):
    """A Conv whose QAT layer cannot be named keeps its float weights (listed in the stats),
    and the file loads with the rest int8; the weight-size guess took the other 1x1 conv."""
    import onnx
    import onnxruntime as ort

    from edgekit.convert.onnx_int8 import encode_weights, keras_to_onnx, qat_weight_codes, rewrite_qat_onnx

    _, qat = se_qat
    codes = qat_weight_codes(qat)
    del codes["quant_se/reduce"]  # as if tfmot had left it unquantized
    proto, stats = rewrite_qat_onnx(keras_to_onnx(qat, 17, "image"), codes)
    assert stats["weights"] == 3
    assert len(stats["float_weights"]) == 1 and "se/reduce" in stats["float_weights"][0]
    encode_weights(proto, "u8u8")
    onnx.checker.check_model(proto)
    path = tmp_path / "partial.onnx"
    onnx.save(proto, str(path))
    x, _ = _data(4, seed=2)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    ref = qat.predict(x, verbose=0)
    # the float conv computes what the QAT model's fake-quantized one does, up to its weight
    # rounding: a fraction of the logits' range, not a different function
    assert np.abs(y - ref).max() <= 0.1 * (ref.max() - ref.min()) and np.all(y.argmax(1) == ref.argmax(1))


def test_squeeze_excite_converts_to_int8_tflite_and_onnx(se_qat, tmp_path):
    import onnxruntime as ort

    from edgekit.convert import converters as convert
    from edgekit.convert.quantize import representative_set

    float_model, qat = se_qat
    x, _ = _data(16, seed=1)
    inputs = convert.ConversionInputs(float_model=float_model, qat_model=qat,
                                      representative=representative_set(x, 8))
    convert.make_tflite_int8_qat.convert(inputs, tmp_path / "se.tflite")
    convert.make_onnx_int8_qat.convert(inputs, tmp_path / "se.onnx")
    y = ort.InferenceSession(str(tmp_path / "se.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x[:4]})[0]
    ref = qat.predict(x[:4], verbose=0)
    r = {v.name.split("/")[-1]: float(v.numpy()) for v in qat.get_layer("quant_logits").weights
         if "post_activation" in v.name}
    step = (r["post_activation_max:0"] - r["post_activation_min:0"]) / 255
    # every weight on the QAT grid, the float hard-sigmoid and Multiply computed in float by
    # both: 1 step of output rounding plus 1 for a rounding flip upstream (test_onnx_int8)
    assert np.abs(y - ref).max() <= 2.01 * step


def _swish_net(depth: int = 3, init_std: float = 0.01):
    """EfficientNet's blocks at 32x32: Rescaling, Normalization (not adapted: mean 0, variance 1),
    Conv-BN-swish stem, then depthwise-BN-swish, a squeeze-excite with swish/sigmoid convs,
    projection conv-BN and a residual Add. Small initial weights: BatchNorm's moving statistics
    (0 and 1 at init) then do not describe the data, as in any untrained network."""
    import tf_keras as k

    k.utils.set_random_seed(0)
    init = k.initializers.RandomNormal(stddev=init_std)
    inp = k.Input((32, 32, 3), name="image")
    x = k.layers.Normalization(name="norm")(k.layers.Rescaling(1 / 255.0, name="rescale")(inp))
    x = k.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, kernel_initializer=init, name="stem")(x)
    x = k.layers.Activation("swish", name="stem_swish")(k.layers.BatchNormalization(name="stem_bn")(x))
    for i in range(depth):
        y = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False, depthwise_initializer=init, name=f"dw{i}")(x)
        y = k.layers.Activation("swish", name=f"dw{i}_swish")(k.layers.BatchNormalization(name=f"dw{i}_bn")(y))
        s = k.layers.GlobalAveragePooling2D(keepdims=True, name=f"se{i}_pool")(y)
        s = k.layers.Conv2D(4, 1, activation="swish", kernel_initializer=init, name=f"se{i}_reduce")(s)
        s = k.layers.Conv2D(16, 1, activation="sigmoid", kernel_initializer=init, name=f"se{i}_expand")(s)
        y = k.layers.Multiply(name=f"se{i}_mul")([y, s])
        y = k.layers.Conv2D(16, 1, use_bias=False, kernel_initializer=init, name=f"pw{i}")(y)
        x = k.layers.Add(name=f"add{i}")([x, k.layers.BatchNormalization(name=f"pw{i}_bn")(y)])
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, k.layers.Dense(10, activation="softmax", name="head")(x), name="swish")


def test_warm_start_ranges_cover_what_training_mode_batchnorm_outputs():
    """Fine-tuning runs BatchNorm on batch statistics. Ranges read in inference mode only (moving
    statistics 0/1: the raw conv output, std ~0.01 here) clipped the training-mode outputs (std 1)
    to a few percent, the signal died block by block (loss exactly ln 10) and on EfficientNetB0
    the gradients overflowed to NaN. The float model's state is left as it was."""
    import tf_keras

    from edgekit.convert.finetune import warm_start_ranges

    from edgekit.convert.quantize import make_qat_model

    float_model = _swish_net()
    qat = make_qat_model(float_model)
    x, _ = _data(16)
    before = [v.numpy().copy() for v in float_model.non_trainable_variables]
    assert warm_start_ranges(qat, x, batch_size=8) > 0
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, float_model.non_trainable_variables))
    names = ["stem_bn", "dw0_bn", "dw2_bn", "pw2_bn"]
    probe = tf_keras.Model(float_model.inputs, [float_model.get_layer(n).output for n in names])
    for name, out in zip(names, probe(x[:8], training=True)):
        r = {v.name.split("/")[-1].split(":")[0]: float(v.numpy()) for v in qat.get_layer(f"quant_{name}").weights
             if v.name.split("/")[-1].startswith("output_")}
        assert r["output_min"] <= 0.9 * float(np.min(out)) and r["output_max"] >= 0.9 * float(np.max(out)), name


def test_swish_network_fine_tunes_to_finite_weights_and_a_live_signal():
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model

    qat = make_qat_model(_swish_net())
    x, y = _data(16)
    fit = finetune_qat(qat, x, y, epochs=2, learning_rate=1e-4, batch_size=8)
    assert all(np.isfinite(fit["loss"])) and all(np.all(np.isfinite(v.numpy())) for v in qat.weights)
    assert abs(fit["loss"][-1] - np.log(10)) > 1e-3  # not the uniform output of a dead signal


def test_diverging_fine_tuning_is_a_one_line_model_error():
    """A learning rate of 1e30 makes the weights overflow within a step or two: fine-tuning must
    say so, not hand a NaN model to the converters."""
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model

    qat = make_qat_model(_swish_net(depth=1, init_std=0.1))
    x, y = _data(16)
    with pytest.raises(ModelError, match="diverged") as info:
        finetune_qat(qat, x, y, epochs=2, learning_rate=1e30, batch_size=8)
    msg = str(info.value)
    assert "\n" not in msg and ("non-finite, first '" in msg or "loss became" in msg)
    assert "qat_learning_rate" in msg
