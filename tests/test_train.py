"""`edgekit train` on seeded synthetic data: what it writes, reproducibility, re-runs, and the recipe's parts."""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

import edgekit  # noqa: F401
from edgekit import rundir
from edgekit.config import TrainConfig
from edgekit.data import load_dataset, make_synthetic, make_tf_dataset
from edgekit.errors import ConfigError, RunDirError
from edgekit.progress import Progress
from conftest import TINY_TRAIN, copy_run

TINY = TrainConfig(**TINY_TRAIN)


def _train_section(run) -> dict:
    return rundir.load_manifest(run)["stages"]["train"]


def _quiet_train(run, config=TINY, models=("mlp",), force=False):
    from edgekit.train import train

    stream = io.StringIO()
    section = train(run, config, models=models, force=force, progress=Progress(stream=stream))
    return section, stream.getvalue()


def test_train_writes_model_history_and_manifest(trained_run):
    import tf_keras

    from edgekit.train import evaluate

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
    import edgekit.train as train_module

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
    from edgekit.devices import visible_gpus

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


def test_warmup_cosine_schedule():
    from edgekit.train import warmup_cosine

    lr = warmup_cosine(1e-3, warmup_steps=10, total_steps=110)
    values = [float(lr(step)) for step in range(111)]
    assert values[0] == 0.0 and values[5] == pytest.approx(5e-4) and values[10] == pytest.approx(1e-3)
    assert values[60] == pytest.approx(5e-4, rel=1e-4) and values[110] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # decays monotonically after warm-up
    short = warmup_cosine(1e-3, warmup_steps=50, total_steps=100)  # warm-up capped at a tenth of the run
    assert float(short(10)) == pytest.approx(1e-3) and float(short(5)) == pytest.approx(5e-4)


def test_flip_shift_moves_pixels_exactly():
    import tensorflow as tf

    from edgekit.train import flip_shift

    x = np.random.default_rng(0).random((4, 6, 7, 1), dtype=np.float32)
    out = flip_shift(tf.constant(x), tf.constant([True, False, True, False]),
                     tf.constant([0.0, 0.0, 1.0, -2.0]), tf.constant([0.0, 1.0, 0.0, 0.0])).numpy()
    np.testing.assert_array_equal(out[0], x[0, :, ::-1])                  # mirrored
    down = np.zeros_like(x[1]); down[1:] = x[1, :-1]
    np.testing.assert_array_equal(out[1], down)                            # one pixel down
    mirrored_right = np.zeros_like(x[2]); mirrored_right[:, 1:] = x[2, :, ::-1][:, :-1]
    np.testing.assert_array_equal(out[2], mirrored_right)                  # mirrored, one right
    left = np.zeros_like(x[3]); left[:, :-2] = x[3, :, 2:]
    np.testing.assert_array_equal(out[3], left)                            # two pixels left


def test_augmentation_is_seeded_new_each_epoch_and_starts_after_the_clean_epochs():
    from edgekit.train import training_batches

    data = make_synthetic(n_train=40, n_test=1)
    plain = data.x_train.astype(np.float32) / 255.0

    def epochs(seed, clean_epochs=0):
        ds, steps = training_batches(data.x_train, data.y_train, batch=16, epochs=3, seed=seed, flip=True,
                                     shift_px=2, clean_epochs=clean_epochs)
        assert steps == 3
        x = np.concatenate([x.numpy() for x, _ in ds])
        return [x[:40], x[40:80], x[80:]]

    a, b, c = epochs(0), epochs(0), epochs(1)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[1], a[2]) and not np.array_equal(a[0], c[0])
    # pixels are moved, never changed: every augmented image is a flip/shift of an original
    assert set(np.unique(a[0])) <= set(np.unique(plain)) | {0.0}
    late = epochs(0, clean_epochs=2)
    originals = {img.tobytes() for img in plain}
    assert all(img.tobytes() in originals for img in np.concatenate(late[:2]))  # clean epochs: untouched
    assert sum(img.tobytes() not in originals for img in late[2]) > 20       # then augmented


def test_ema_validation_scores_and_keeps_the_average_and_trains_on_the_raw_weights():
    import tf_keras

    from edgekit.models import build_model
    from edgekit.train import EmaValidation, adam, evaluate

    data = make_synthetic(n_train=256, n_test=64)
    ds = make_tf_dataset(data.x_train, data.y_train, 32, shuffle=True, seed=0)

    class Probe(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.at_begin, self.at_end = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.at_begin.append(self.model.get_weights())

        def on_epoch_end(self, epoch, logs=None):
            self.at_end.append(self.model.get_weights())

    tf_keras.utils.set_random_seed(0)
    model = build_model("mlp")
    model.compile(optimizer=adam(1e-3, ema_momentum=0.9),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    before, ema, after = Probe(), EmaValidation(data.x_test, data.y_test), Probe()
    history = model.fit(ds, epochs=2, callbacks=[before, ema, after], verbose=0).history
    raw_end, avg_end = before.at_end[0], after.at_end[0]
    assert any(not np.array_equal(r, a) for r, a in zip(raw_end, avg_end))  # the average was swapped in
    for restored, raw in zip(after.at_begin[1], raw_end):                    # and out again to train on
        np.testing.assert_array_equal(restored, raw)
    accuracy, loss = evaluate(model, data.x_test, data.y_test)               # the model ends averaged
    assert history["val_accuracy"][-1] == accuracy and history["val_loss"][-1] == pytest.approx(loss)


def test_batchnorm_momentum_is_keras_default_for_real_runs_and_lower_for_short_ones():
    from edgekit.train import batchnorm_momentum

    assert batchnorm_momentum(20 * 422) == 0.99 and batchnorm_momentum(1000) == 0.99
    assert batchnorm_momentum(42) == pytest.approx(1 - 10 / 42)
    assert batchnorm_momentum(5) == 0.5


def test_a_short_resnet_run_trains_its_batchnorm_with_the_short_run_momentum():
    import tf_keras

    from edgekit.data import make_synthetic
    from edgekit.devices import resolve_placement
    from edgekit.models import get_network
    from edgekit.train import batchnorm_momentum, fit_network, resolve_config

    data = make_synthetic(n_train=640, n_test=64)
    placement = resolve_placement()
    resolved = resolve_config(TrainConfig(dataset="synthetic", epochs=1, batch_size=64), get_network("resnet"),
                              placement)
    trained = fit_network("resnet", data, resolved, placement)
    bns = [layer for layer in trained.model.layers if isinstance(layer, tf_keras.layers.BatchNormalization)]
    steps = -(-int(0.9 * 640) // 64)  # the validation split is held out of the 640
    assert bns and {layer.momentum for layer in bns} <= {batchnorm_momentum(steps), batchnorm_momentum(steps - 1)}
    assert all(layer.momentum < 0.99 for layer in bns)
