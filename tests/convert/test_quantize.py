"""QAT wrapping and fine-tuning, and calibration sets."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError, ModelError


def _model_with(layer_factory):
    import tf_keras as k

    inp = k.Input((28, 28, 1), name="image")
    x = k.layers.Conv2D(4, 3, activation="relu")(inp)
    x = layer_factory(x)
    x = k.layers.Flatten()(x)
    return k.Model(inp, k.layers.Dense(10, name="logits")(x))


@pytest.mark.parametrize("factory, name, cls", [  # LayerNormalization, Multiply: now left float
    (lambda x: __import__("tf_keras").layers.Lambda(lambda t: t * 2.0, name="double")(x), "double", "Lambda"),
])
def test_make_qat_model_names_the_layer_tfmot_cannot_quantize(factory, name, cls):
    from edgekit.convert.quantize import make_qat_model

    with pytest.raises(ModelError) as info:
        make_qat_model(_model_with(factory))
    msg = str(info.value)
    assert f"'{name}'" in msg and cls in msg and "float variants are still exported" in msg
    assert "\n" not in msg


@pytest.fixture(scope="module")
def cnn(trained_run):
    from edgekit.runtimes.keras_tf import load_keras_model

    return load_keras_model(trained_run / "train/cnn/model.keras")


def test_finetune_qat_fractional_epochs_and_warm_started_ranges(cnn, synthetic):
    from edgekit.core.data import to_float
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model

    qat = make_qat_model(cnn)
    hist = finetune_qat(qat, synthetic.x_train, synthetic.y_train, epochs=0.25, learning_rate=1e-4, batch_size=100)
    assert hist["steps"] == 5 and len(hist["loss"]) == 1 and np.isfinite(hist["loss"][0])
    assert hist["warm_started_ranges"] == 3  # the two convs and the logits (pooling has no range)
    ranges = {v.name: float(v.numpy()) for v in qat.weights if "post_activation_m" in v.name}
    conv_min = [val for n, val in ranges.items() if "conv2d" in n and n.endswith("min:0")]
    assert conv_min and all(v == 0.0 for v in conv_min)  # ReLU outputs: the range starts at 0, not -6
    y = qat.predict(to_float(synthetic.x_test[:100]), verbose=0)
    assert np.mean(y.argmax(1) == synthetic.y_test[:100]) >= 0.9


def test_finetune_qat_rejects_zero_epochs_and_mismatched_labels(cnn, synthetic):
    from edgekit.convert.finetune import finetune_qat
    from edgekit.convert.quantize import make_qat_model

    qat = make_qat_model(cnn)
    with pytest.raises(ConfigError, match="epochs"):
        finetune_qat(qat, synthetic.x_train, synthetic.y_train, epochs=0, learning_rate=1e-4)
    with pytest.raises(ConfigError, match="labels"):
        finetune_qat(qat, synthetic.x_train, synthetic.y_train[:10], epochs=1, learning_rate=1e-4)


def test_representative_set_is_seeded_float_and_bounded(synthetic):
    from edgekit.convert.quantize import representative_set

    a = representative_set(synthetic.x_train, 50, seed=1)
    b = representative_set(synthetic.x_train, 50, seed=1)
    c = representative_set(synthetic.x_train, 50, seed=2)
    assert a.shape == (50, 28, 28, 1) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(representative_set(synthetic.x_train[:30], 50)) == 30
    with pytest.raises(ConfigError):
        representative_set(synthetic.x_train, 0)
