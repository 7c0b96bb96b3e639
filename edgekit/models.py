"""The reference networks, one registry. Every network outputs *logits* (no softmax):
losses use from_logits=True, exports keep logits, and agreement is argmax of logits.

All layers are ones tensorflow-model-optimization can wrap for QAT (Dense, Conv2D,
BatchNormalization folded into the conv, ReLU, Add, pooling, GlobalAveragePooling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from edgekit.errors import ConfigError


def _keras():
    import tf_keras

    return tf_keras


def build_mlp(input_shape, num_classes: int):
    """The reference MLP: Flatten, Dense 256 ReLU, Dropout 0.2, Dense (logits)."""
    k = _keras()
    return k.Sequential([
        k.layers.InputLayer(input_shape=input_shape, name="image"),
        k.layers.Flatten(),
        k.layers.Dense(256, activation="relu"),
        k.layers.Dropout(0.2),
        k.layers.Dense(num_classes, name="logits"),
    ], name="mlp")


def build_cnn(input_shape, num_classes: int, dropout: float = 0.3):
    """The reference CNN (Conv 32, pool, Conv 64, pool, Dense) with dropout before the classifier."""
    k = _keras()
    return k.Sequential([
        k.layers.InputLayer(input_shape=input_shape, name="image"),
        k.layers.Conv2D(32, 3, activation="relu"),
        k.layers.MaxPooling2D(2),
        k.layers.Conv2D(64, 3, activation="relu"),
        k.layers.MaxPooling2D(2),
        k.layers.Flatten(),
        k.layers.Dropout(dropout),
        k.layers.Dense(num_classes, name="logits"),
    ], name="cnn")


def _conv_bn(x, filters: int, strides: int = 1, relu: bool = True, name: str = ""):
    k = _keras()
    x = k.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                        kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = k.layers.BatchNormalization(name=f"{name}_bn")(x)
    return k.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual_block(x, filters: int, strides: int, name: str):
    """Two 3x3 conv+BN; identity shortcut, or 1x1 projection + BN when the shape changes."""
    k = _keras()
    shortcut = x
    y = _conv_bn(x, filters, strides, relu=True, name=f"{name}_a")
    y = _conv_bn(y, filters, 1, relu=False, name=f"{name}_b")
    if strides != 1 or x.shape[-1] != filters:
        shortcut = k.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                   kernel_initializer="he_normal", name=f"{name}_proj_conv")(x)
        shortcut = k.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = k.layers.Add(name=f"{name}_add")([y, shortcut])
    return k.layers.ReLU(name=f"{name}_out")(y)


def build_resnet(input_shape, num_classes: int):
    """A small ResNet: stem, three stages of 16/32/64 channels, downsampling by 2 between
    stages (28 -> 14 -> 7), global average pooling, Dense (logits)."""
    k = _keras()
    inputs = k.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, 16, name="stem")
    for i, (filters, strides) in enumerate([(16, 1), (32, 2), (64, 2)]):
        x = _residual_block(x, filters, strides, name=f"stage{i + 1}")
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = k.layers.Dense(num_classes, name="logits")(x)
    return k.Model(inputs, outputs, name="resnet")


@dataclass(frozen=True)
class Network:
    """One row of the registry: how to build it and how it trains by default."""
    name: str
    build: Callable
    epochs: int            # default training epochs (early stopping may end sooner)
    learning_rate: float   # peak Adam rate of the warm-up + cosine schedule
    description: str
    flip: bool = False     # augmentation: random horizontal flip (clothes keep their class mirrored)
    shift_px: int = 0      # augmentation: random shift of up to this many pixels each way
    clean_epochs: int = 0  # epochs before augmentation starts (it slows early progress, helps late)
    weight_decay: float = 0.0  # decoupled (AdamW-style), times the learning rate; not on biases/BN
    ema_momentum: float = 0.0  # > 0: validate and keep a moving average of the weights (train.EmaValidation)


NETWORKS: dict[str, Network] = {n.name: n for n in [
    Network("mlp", build_mlp, epochs=30, learning_rate=1e-3, description="Flatten-Dense256-Dropout-Dense"),
    Network("cnn", build_cnn, epochs=15, learning_rate=2e-3, description="Conv32-Pool-Conv64-Pool-Dense"),
    Network("resnet", build_resnet, epochs=15, learning_rate=3e-3,
            description="ResNet 16/32/64, BN, projection shortcuts, GAP"),
]}


def get_network(name: str) -> Network:
    try:
        return NETWORKS[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(NETWORKS)}") from None


def build_model(name: str, input_shape=(28, 28, 1), num_classes: int = 10):
    """Build a registry network by name; outputs logits."""
    return get_network(name).build(tuple(input_shape), int(num_classes))
