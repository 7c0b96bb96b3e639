"""The three networks: shapes, sizes, logits, the ResNet's structure, QAT-wrappable, and learning."""
from __future__ import annotations

import numpy as np
import pytest

import edgekit  # noqa: F401
from edgekit.errors import ConfigError
from edgekit.core.networks import NETWORKS, build_model, get_network

PARAMS = {  # counted by hand: a change here is a change of architecture, on purpose or not
    "mlp": 784 * 256 + 256 + 256 * 10 + 10,                               # 203,530
    "cnn": (9 * 32 + 32) + (9 * 32 * 64 + 64) + (5 * 5 * 64 * 10 + 10),   # 34,826
    "resnet": 78_426,
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_builds_with_the_right_shapes_and_size(name):
    model = build_model(name)
    assert tuple(model.input_shape) == (None, 28, 28, 1)
    assert tuple(model.output_shape) == (None, 10)
    assert model.count_params() == PARAMS[name]
    model5 = build_model(name, input_shape=(28, 28, 1), num_classes=5)
    assert tuple(model5.output_shape) == (None, 5)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_outputs_are_logits_not_probabilities(name):
    x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    out = build_model(name)(x, training=False).numpy()
    assert (out < 0).any(), "softmax outputs are never negative: the last layer must emit logits"
    assert not np.allclose(out.sum(axis=1), 1.0)


def test_resnet_is_a_real_small_resnet():
    """Two 3x3 conv+BN per block, identity or 1x1 projection shortcuts, 16/32/64 stages with
    downsampling (28 -> 14 -> 7), global average pooling."""
    import tf_keras

    model = build_model("resnet")
    adds = [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Add)]
    assert len(adds) == 3
    for stage, (filters, size) in enumerate([(16, 28), (32, 14), (64, 7)], start=1):
        a, b = model.get_layer(f"stage{stage}_a_conv"), model.get_layer(f"stage{stage}_b_conv")
        assert a.kernel_size == b.kernel_size == (3, 3) and a.filters == b.filters == filters
        assert isinstance(model.get_layer(f"stage{stage}_a_bn"), tf_keras.layers.BatchNormalization)
        assert isinstance(model.get_layer(f"stage{stage}_b_bn"), tf_keras.layers.BatchNormalization)
        assert tuple(model.get_layer(f"stage{stage}_add").output_shape[1:]) == (size, size, filters)
    names = {layer.name for layer in model.layers}
    assert "stage1_proj_conv" not in names  # same shape: identity shortcut
    assert model.get_layer("stage2_proj_conv").kernel_size == (1, 1)
    assert isinstance(model.get_layer("gap"), tf_keras.layers.GlobalAveragePooling2D)


def test_resnet_can_be_wrapped_for_qat():
    """The one network with BatchNorm, Add and GAP: tfmot must wrap every layer of it."""
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(build_model("resnet"))
    assert qat.count_params() > PARAMS["resnet"]  # quantizer variables were added


@pytest.mark.parametrize("name", list(NETWORKS))
def test_loss_falls_in_a_few_steps(name):
    import tf_keras

    from edgekit.core.data import make_synthetic, to_float

    data = make_synthetic(n_train=128, n_test=10)
    x, y = to_float(data.x_train), data.y_train
    tf_keras.utils.set_random_seed(0)
    model = build_model(name)
    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # the training-mode loss of each epoch (a tiny fit leaves BatchNorm's moving averages unsettled)
    losses = model.fit(x, y, epochs=6, batch_size=32, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0], f"{name}: loss per epoch {losses}"


def test_unknown_network_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'vgg'; choose one of mlp, cnn, resnet"):
        get_network("vgg")
