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
