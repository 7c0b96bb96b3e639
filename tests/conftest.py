"""Shared tiny fixtures: seeded synthetic data, one small training run, one export of it.

Built once per session and reused; tests that change a run work on a copy (`copy_run`).
Nothing here touches the network.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("EDGEKIT_OFFLINE", "1")  # MNIST must never try to download in tests

import edgekit  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

TINY_TRAIN = dict(dataset="synthetic", epochs=3, batch_size=64, seed=0)


@pytest.fixture(scope="session")
def synthetic():
    from edgekit.core.data import make_synthetic

    return make_synthetic()


@pytest.fixture(scope="session")
def synthetic_npz(tmp_path_factory, synthetic) -> Path:
    """The synthetic set as a data set .npz (x_train, y_train, x_test, y_test)."""
    p = tmp_path_factory.mktemp("data") / "synthetic.npz"
    np.savez(p, x_train=synthetic.x_train[..., 0], y_train=synthetic.y_train,
             x_test=synthetic.x_test[..., 0], y_test=synthetic.y_test)
    return p


@pytest.fixture(scope="session")
def tiny_profile():
    """The default profile (every variant) with small QAT and calibration budgets."""
    from edgekit.core.config import load_profile

    return dataclasses.replace(load_profile("default"), representative_samples=100, qat_epochs=1.0)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory with the MLP and the CNN trained on synthetic data (read-only: copy to change)."""
    from edgekit.core.config import TrainConfig
    from edgekit.train.stage import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(run, TrainConfig(**TINY_TRAIN), models=("mlp", "cnn"))
    return run


@pytest.fixture(scope="session")
def exported_run(trained_run, tmp_path_factory, tiny_profile) -> Path:
    """`trained_run` plus every default-profile variant of the CNN (read-only: copy to change)."""
    from edgekit.export.stage import export_run

    run = copy_run(trained_run, tmp_path_factory.mktemp("exported") / "run")
    export_run(run, tiny_profile, models=("cnn",))
    return run


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a fixture run directory (manifest paths are relative, so copies work)."""
    shutil.copytree(src, dst)
    return dst


MOBILE_SIZE = 32


def build_tiny_mobile(seed: int = 0, softmax: bool = False):
    """The blocks of the stock mobile classifiers at 32x32, untrained: Rescaling, ZeroPadding2D,
    Conv-BN-ReLU6, depthwise convolutions, hard-swish written as raw TF ops (tf_keras turns them
    into TFOpLambda layers, as MobileNetV3 has), residual Adds, global pooling, a Dense head
    (logits, or softmax as tf_keras.applications build it). BatchNorm at its init folds every
    bias to zeros, which tf2onnx then shares between Convs: the case that broke onnx-int8-ptq."""
    import tensorflow as tf
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(seed)

    def hard_swish(x):
        return x * tf.nn.relu6(x + 3.0) / 6.0

    def conv_bn(x, filters, kernel=1, strides=1, act="relu6"):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x) if act == "relu6" else (hard_swish(x) if act == "hs" else x)

    def block(x, expand, out, act):
        y = conv_bn(x, expand, act=act)
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU(6.0)(y) if act == "relu6" else hard_swish(y)
        y = conv_bn(y, out, act=None)
        return layers.Add()([x, y]) if x.shape[-1] == out else y

    inp = keras.Input((MOBILE_SIZE, MOBILE_SIZE, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = conv_bn(x, 16, kernel=3, strides=2, act="hs")
    x = block(x, 32, 16, "relu6")
    x = block(x, 32, 16, "hs")
    x = block(x, 48, 24, "relu6")
    x = block(x, 48, 24, "hs")
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out, name="tiny_mobile")


def mobile_calibration(n: int = 16, seed: int = 0) -> np.ndarray:
    """Random images in the model's input range (0..255), as a user without data would give."""
    return np.random.default_rng(seed).uniform(0, 255, (n, MOBILE_SIZE, MOBILE_SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_mobile_file(tmp_path_factory) -> Path:
    """build_tiny_mobile() saved as a .keras file (read-only)."""
    path = tmp_path_factory.mktemp("mobile") / "tiny_mobile.keras"
    build_tiny_mobile().save(path)
    return path
