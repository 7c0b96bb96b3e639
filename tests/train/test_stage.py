"""`edgekit train` on seeded synthetic data: what it writes, reproducibility, re-runs (recipe: test_recipe.py)."""
from __future__ import annotations

import dataclasses
import io
import json

import pytest

import edgekit  # noqa: F401
from edgekit.core import rundir
from edgekit.core.config import TrainConfig
from edgekit.core.data import load_dataset
from edgekit.errors import ConfigError, RunDirError
from edgekit.core.progress import Progress
from conftest import TINY_TRAIN, copy_run

TINY = TrainConfig(**TINY_TRAIN)


def _train_section(run) -> dict:
    return rundir.load_manifest(run)["stages"]["train"]


def _quiet_train(run, config=TINY, models=("mlp",), force=False):
    from edgekit.train.stage import train

    stream = io.StringIO()
    section = train(run, config, models=models, force=force, progress=Progress(stream=stream))
    return section, stream.getvalue()


def test_train_writes_model_history_and_manifest(trained_run):
    import tf_keras

    from edgekit.train.recipe import evaluate

    section = _train_section(trained_run)
    assert section["dataset"]["name"] == "synthetic" and len(section["dataset"]["sha256"]) == 64
    data = load_dataset("synthetic")
    for name in ("mlp", "cnn"):
        rec = section["models"][name]
        assert rec["status"] == "ok" and rec["model"] == f"train/{name}/model.keras"
        assert [f["path"] for f in rec["files"]] == [f"train/{name}/model.keras", f"train/{name}/history.json"]
        assert rundir.outputs_intact(trained_run, rec["files"])
        assert rec["config"]["epochs"] == 3 and rec["config"]["network"] == name and rec["device"] == "cpu"
        assert rec["input_shape"] == [28, 28, 1] and rec["num_classes"] == 10
        assert rec["versions"]["tensorflow"] and rec["seconds"] > 0
        m = rec["metrics"]
        assert set(m) >= {"test_accuracy", "test_loss", "val_accuracy", "epochs_run", "best_epoch"}
        assert m["test_accuracy"] > 0.9  # the synthetic task is easy: a trained model nails it

        model = tf_keras.models.load_model(trained_run / rec["model"])  # no custom objects needed
        assert model.count_params() == rec["params"]
        assert all(w.dtype == "float32" for w in model.weights)
        accuracy, loss = evaluate(model, data.x_test, data.y_test)  # the file is the model the record describes
        assert accuracy == pytest.approx(m["test_accuracy"], abs=1e-9)
        assert loss == pytest.approx(m["test_loss"], rel=1e-5)

        history = json.loads((trained_run / "train" / name / "history.json").read_text())
        n = m["epochs_run"]
        for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"):
            assert len(history[key]) == n, key
        assert m["val_accuracy"] == max(history["val_accuracy"])
        assert history["val_accuracy"][m["best_epoch"] - 1] == m["val_accuracy"]


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    config = dataclasses.replace(TINY, epochs=2)
    a, _ = _quiet_train(tmp_path / "a", config)
    b, _ = _quiet_train(tmp_path / "b", config)
    c, _ = _quiet_train(tmp_path / "c", dataclasses.replace(config, seed=1))
    ha = json.loads((tmp_path / "a/train/mlp/history.json").read_text())
    hb = json.loads((tmp_path / "b/train/mlp/history.json").read_text())
    hc = json.loads((tmp_path / "c/train/mlp/history.json").read_text())
    assert a["models"]["mlp"]["metrics"] == b["models"]["mlp"]["metrics"]
    assert ha["loss"] == hb["loss"] and ha["val_loss"] == hb["val_loss"]
    assert hc["loss"] != ha["loss"]


def test_rerun_reuses_fresh_models(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    before = _train_section(run)["models"]
    section, log = _quiet_train(run, models=("mlp", "cnn"))
    assert section["models"] == before  # same records: same files, same finish time
    assert log.count("reused") == 2


def test_other_settings_without_force_raise_and_keep_the_finished_model(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    before = rundir.load_manifest(run)
    with pytest.raises(RunDirError, match="pass --force to retrain it there, or use a new --out") as e:
        _quiet_train(run, dataclasses.replace(TINY, epochs=4), models=("cnn",))
    assert "\n" not in str(e.value) and "'cnn'" in str(e.value)
    assert rundir.load_manifest(run)["stages"]["train"] == before["stages"]["train"]


def test_force_retrains(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    old = _train_section(run)["models"]
    section, log = _quiet_train(run, dataclasses.replace(TINY, epochs=2), force=True)
    new = section["models"]
    assert new["mlp"]["config"]["epochs"] == 2 and new["mlp"]["key"] != old["mlp"]["key"]
    assert new["mlp"]["finished_utc"] >= old["mlp"]["finished_utc"] and "epoch 2/2" in log
    assert rundir.outputs_intact(run, new["mlp"]["files"])
    assert new["cnn"] == old["cnn"]  # not asked for: untouched


def test_damaged_output_is_retrained_with_the_same_settings(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    old = _train_section(run)["models"]["mlp"]
    (run / "train/mlp/model.keras").write_bytes(b"truncated")
    section, log = _quiet_train(run)
    assert "reused" not in log and section["models"]["mlp"]["key"] == old["key"]
    assert rundir.outputs_intact(run, section["models"]["mlp"]["files"])


def test_interrupted_run_keeps_the_models_it_finished(tmp_path, monkeypatch):
    import edgekit.train.stage as train_module

    real = train_module.fit_network

    def interrupted_at_cnn(name, *args, **kwargs):
        if name == "cnn":
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.setattr(train_module, "fit_network", interrupted_at_cnn)
    with pytest.raises(KeyboardInterrupt):
        _quiet_train(tmp_path / "run", dataclasses.replace(TINY, epochs=1), models=("mlp", "cnn"))
    models = _train_section(tmp_path / "run")["models"]
    assert set(models) == {"mlp"} and rundir.outputs_intact(tmp_path / "run", models["mlp"]["files"])
    assert not (tmp_path / "run/train/cnn").exists()


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path):
    section, _ = _quiet_train(tmp_path / "run", dataclasses.replace(TINY, epochs=12, patience=1))
    m = section["models"]["mlp"]["metrics"]
    history = json.loads((tmp_path / "run/train/mlp/history.json").read_text())
    assert m["epochs_run"] < 12  # the synthetic validation accuracy plateaus at once
    assert m["epochs_run"] == m["best_epoch"] + 1
    assert m["val_accuracy"] == max(history["val_accuracy"])


def test_limit_trains_on_the_first_images_and_is_validated(tmp_path):
    section, _ = _quiet_train(tmp_path / "run", dataclasses.replace(TINY, epochs=1, limit=300))
    assert section["dataset"]["train_size"] == 300 and section["dataset"]["limit"] == 300
    with pytest.raises(ConfigError, match="--limit must be at least 2"):
        _quiet_train(tmp_path / "other", dataclasses.replace(TINY, limit=1))


def test_options_a_cpu_cannot_honour_fail_before_any_work(tmp_path):
    from edgekit.core.devices import visible_gpus

    if visible_gpus():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="--mixed-precision needs a GPU"):
        _quiet_train(tmp_path / "run", dataclasses.replace(TINY, mixed_precision=True))
    with pytest.raises(ConfigError, match="--device gpu"):
        _quiet_train(tmp_path / "run", dataclasses.replace(TINY, device="gpu"))
    assert not (tmp_path / "run").exists()


def test_unknown_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        _quiet_train(tmp_path / "run", models=("vgg",))


def test_a_short_resnet_run_trains_its_batchnorm_with_the_short_run_momentum():
    import tf_keras

    from edgekit.core.data import make_synthetic
    from edgekit.core.devices import resolve_placement
    from edgekit.core.networks import get_network
    from edgekit.train.recipe import batchnorm_momentum
    from edgekit.train.stage import fit_network, resolve_config

    data = make_synthetic(n_train=640, n_test=64)
    placement = resolve_placement()
    resolved = resolve_config(TrainConfig(dataset="synthetic", epochs=1, batch_size=64), get_network("resnet"),
                              placement)
    trained = fit_network("resnet", data, resolved, placement)
    bns = [layer for layer in trained.model.layers if isinstance(layer, tf_keras.layers.BatchNormalization)]
    steps = -(-int(0.9 * 640) // 64)  # the validation split is held out of the 640
    assert bns and {layer.momentum for layer in bns} <= {batchnorm_momentum(steps), batchnorm_momentum(steps - 1)}
    assert all(layer.momentum < 0.99 for layer in bns)
