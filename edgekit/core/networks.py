"""The reference networks, one registry. Every network outputs *logits* (no softmax):
losses use from_logits=True, exports keep logits, and agreement is argmax of logits.

All layers are ones tensorflow-model-optimization can wrap for QAT (Dense, Conv2D,
BatchNormalization folded into the conv, ReLU, Add, pooling, GlobalAveragePooling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


def build_cnn(input_shape, num_classes: int, dropout: float = 0.0):
    """The reference CNN (Conv 32, pool, Conv 64, pool, Dense), optionally with dropout before the
    classifier. None by default: at 35k parameters it underfits rather than overfits once trained
    on flipped/shifted images, and dropout only slowed it down (measured: 0.9124 vs 0.9171)."""
    k = _keras()
    layers = [
        k.layers.InputLayer(input_shape=input_shape, name="image"),
        k.layers.Conv2D(32, 3, activation="relu"),
        k.layers.MaxPooling2D(2),
        k.layers.Conv2D(64, 3, activation="relu"),
        k.layers.MaxPooling2D(2),
        k.layers.Flatten(),
    ]
    if dropout:
        layers.append(k.layers.Dropout(dropout))
    return k.Sequential([*layers, k.layers.Dense(num_classes, name="logits")], name="cnn")


def _conv_bn(x, filters: int, strides: int = 1, relu: bool = True, name: str = "", gamma: str = "ones"):
    k = _keras()
    x = k.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                        kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = k.layers.BatchNormalization(gamma_initializer=gamma, name=f"{name}_bn")(x)
    return k.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual_block(x, filters: int, strides: int, name: str, zero_init: bool = False):
    """Two 3x3 conv+BN; identity shortcut, or 1x1 projection + BN when the shape changes.
    `zero_init`: the second BN starts at scale 0, so the block starts as its shortcut."""
    k = _keras()
    shortcut = x
    y = _conv_bn(x, filters, strides, relu=True, name=f"{name}_a")
    y = _conv_bn(y, filters, 1, relu=False, name=f"{name}_b", gamma="zeros" if zero_init else "ones")
    if strides != 1 or x.shape[-1] != filters:
        shortcut = k.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                   kernel_initializer="he_normal", name=f"{name}_proj_conv")(x)
        shortcut = k.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = k.layers.Add(name=f"{name}_add")([y, shortcut])
    return k.layers.ReLU(name=f"{name}_out")(y)


RESNET_STAGES = ((16, 1, 1), (32, 2, 1), (64, 2, 1))  # (channels, stride of the first block, blocks)


def build_resnet(input_shape, num_classes: int, stages=RESNET_STAGES, zero_init: bool = False):
    """A small ResNet: stem, three stages of 16/32/64 channels, downsampling by 2 between
    stages (28 -> 14 -> 7), global average pooling, Dense (logits)."""
    k = _keras()
    inputs = k.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, 16, name="stem")
    for i, (filters, strides, blocks) in enumerate(stages):
        for j in range(blocks):
            suffix = "" if j == 0 else f"_{j + 1}"
            x = _residual_block(x, filters, strides if j == 0 else 1, name=f"stage{i + 1}{suffix}",
                                zero_init=zero_init)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = k.layers.Dense(num_classes, name="logits")(x)
    return k.Model(inputs, outputs, name="resnet")


@dataclass(frozen=True)
class Network:
    """One row of the registry: how to build it and how it trains by default (train.py's recipe:
    Adam, linear warm-up then cosine decay to zero, early stopping on validation accuracy)."""
    name: str
    build: Callable
    epochs: int                # default training epochs (early stopping may end sooner)
    learning_rate: float       # peak Adam rate of the warm-up + cosine schedule
    description: str
    flip: bool = False         # augmentation: random horizontal flip (garments keep their class mirrored)
    shift_px: int = 0          # augmentation: random shift of up to this many pixels each way
    clean_epochs: int = 0      # epochs before augmentation starts: it slows early progress, helps late
    ema_epochs: float = 0.0    # > 0: validate, keep and save a moving average of the weights over ~this many epochs
    epoch_cost: float = 1.0    # time of one epoch relative to the MLP's, for the progress estimate only


# Measured on Fashion-MNIST, seed 0, 2-core CPU (bench/bench_train.py; experiments in the report).
NETWORKS: dict[str, Network] = {n.name: n for n in [
    # 0.8965 test accuracy; augmentation and weight averaging did not help this one
    Network("mlp", build_mlp, epochs=30, learning_rate=1e-3, description="Flatten-Dense256-Dropout-Dense"),
    # 0.9171; flip/shift from epoch 5 on, averaged weights: reaches the reference's 0.894 by epoch 4
    Network("cnn", build_cnn, epochs=30, learning_rate=3e-3, description="Conv32-Pool-Conv64-Pool-Dense",
            epoch_cost=5.0, flip=True, shift_px=1, clean_epochs=4, ema_epochs=0.25),
    # flip + 1-pixel shifts: flips alone overfit (0.926), 2-pixel shifts underfit in 15 epochs (0.923)
    Network("resnet", build_resnet, epochs=20, learning_rate=3e-3,
            description="ResNet 16/32/64, BN, projection shortcuts, GAP", epoch_cost=18.0, flip=True, shift_px=1, ema_epochs=0.25),
]}


def get_network(name: str) -> Network:
    try:
        return NETWORKS[name]
    except KeyError as e:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(NETWORKS)}") from e


def build_model(name: str, input_shape=(28, 28, 1), num_classes: int = 10):
    """Build a registry network by name; outputs logits."""
    return get_network(name).build(tuple(input_shape), int(num_classes))
