"""`edgekit train`: the reference networks, trained well and reproducibly, into a run directory.

One recipe for every network (edgekit.train.recipe; its numbers live in models.NETWORKS). The
validation split is held out from the training set; the test set is touched once, at the end,
for the record.

Each finished model is written to the manifest at once, keyed by its resolved settings and the
data's hash, so an interrupted run keeps what it finished and a re-run skips it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

import tf_keras

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import rundir
from edgekit.core.config import NETWORK_NAMES, TrainConfig
from edgekit.core.data import Dataset, data_sha256, limit_training, load_dataset, make_tf_dataset, split_validation
from edgekit.core.devices import Placement, float32_model, placement_scope, resolve_placement, with_float32_logits
from edgekit.errors import ConfigError, RunDirError
from edgekit.core.networks import Network, get_network
from edgekit.core.progress import Progress
from edgekit.train.recipe import (EVAL_BATCH, SCHEDULE, EmaValidation, EpochLog, adam, batchnorm_momentum,
                            deterministic_ops, ema_momentum, evaluate, training_batches, warmup_cosine,
                            without_autotune)


@dataclass(frozen=True)
class Trained:
    """What one training produced (the model is a float32, uncompiled copy with the best weights)."""
    model: object
    history: dict
    metrics: dict
    fit_seconds: float


# ---------------------------------------------------------------------------------------------
# The stage

def train(run_dir, config: TrainConfig, models: Sequence[str] = NETWORK_NAMES, force: bool = False,
          progress: Progress | None = None) -> dict:
    """Train `models` into RUN/train/<net>/ and return the manifest's "train" section.

    A model whose record is current (same settings, same data, files intact) is reused. One
    finished with different settings is kept, and this raises, unless `force` is set.
    """
    progress = progress or Progress(quiet=True)
    if not progress.stage_name:  # called on its own (`edgekit train`), not as a stage of `edgekit run`
        progress.start_stage("train")
    run_dir = Path(run_dir)
    networks = [get_network(n) for n in dict.fromkeys(models)]
    if not networks:
        raise ConfigError("no model to train; pass --model mlp, cnn, resnet or all")
    placement = resolve_placement(config.device, config.mixed_precision, config.xla)
    data = limit_training(load_dataset(config.dataset, config.data_dir, config.num_classes), config.limit)
    data_sha = data_sha256(data)

    finished = rundir.model_records(rundir.load_manifest(run_dir), "train")
    plan: list[tuple[Network, dict, str, bool]] = []
    for net in networks:  # decide everything before training anything: fail fast, not after an hour
        resolved = resolve_config(config, net, placement)
        key = model_key(resolved, data_sha)
        old = finished.get(net.name)
        reuse = not force and rundir.is_fresh(run_dir, old, key)
        if not force and old and old.get("status") == "ok" and old.get("key") != key:
            raise RunDirError(f"{run_dir} already has '{net.name}' trained with other settings or data; "
                              f"pass --force to retrain it there, or use a new --out directory")
        plan.append((net, resolved, key, reuse))

    def record_dataset(m: dict) -> None:
        section = rundir.stage(m, "train")
        section["dataset"] = {**data.describe(), "sha256": data_sha, "limit": config.limit}
        section.setdefault("models", {})
    rundir.update_manifest(run_dir, record_dataset)

    # each network's share of the stage, by its epochs times its relative epoch cost (for the estimate)
    work = {net.name: net.epoch_cost * int(resolved["epochs"]) for net, resolved, _, reuse in plan if not reuse}
    done = 0.0
    for net, resolved, key, reuse in plan:
        if reuse:
            progress.update(f"current (same settings and data); reused {finished[net.name]['model']}", model=net.name)
            continue
        share = work[net.name] / sum(work.values())
        record = train_one(run_dir, net, data, data_sha, resolved, key, placement, progress, span=(done, share))
        done += share

        def add(m: dict, name: str = net.name, record: dict = record) -> None:
            rundir.stage(m, "train").setdefault("models", {})[name] = record
        rundir.update_manifest(run_dir, add)
    return rundir.section(rundir.load_manifest(run_dir), "train")


def train_one(run_dir: Path, net: Network, data: Dataset, data_sha: str, resolved: dict, key: str,
              placement: Placement, progress: Progress, span: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Train one network, write model.keras and history.json, return its manifest record."""
    t0 = time.monotonic()
    trained = fit_network(net.name, data, resolved, placement, progress=progress, span=span)
    out = run_dir / "train" / net.name
    with rundir.atomic_path(out / "model.keras") as tmp:
        trained.model.save(tmp)
    rundir.atomic_write_json(out / "history.json", trained.history)
    m = trained.metrics
    progress.update(f"test_accuracy={m['test_accuracy']:.4f} after {m['epochs_run']} epochs "
                    f"(best {m['best_epoch']}), {time.monotonic() - t0:.0f}s", model=net.name)
    return {
        "status": "ok", "key": key, "config": resolved,
        "files": [rundir.file_record(run_dir, out / "model.keras"), rundir.file_record(run_dir, out / "history.json")],
        "model": f"train/{net.name}/model.keras", "input_shape": list(data.input_shape),
        "num_classes": data.num_classes, "params": int(trained.model.count_params()),
        "metrics": m, "seconds": round(time.monotonic() - t0, 2), "fit_seconds": round(trained.fit_seconds, 2),
        "device": placement.device, "data_sha256": data_sha, "versions": rundir.versions(RUNTIME_DISTS),
        "finished_utc": rundir.utc_now(),
    }


def resolve_config(config: TrainConfig, net: Network, placement: Placement) -> dict:
    """Every setting that decides the result, defaults filled in: recorded, and hashed into the key."""
    d = dataclasses.asdict(config)
    d.update(network=net.name, epochs=config.epochs or net.epochs,
             learning_rate=config.learning_rate or net.learning_rate, device=placement.device,
             schedule=SCHEDULE, ema_epochs=net.ema_epochs, flip=net.flip, shift_px=net.shift_px,
             clean_epochs=net.clean_epochs)
    return d


def model_key(resolved: dict, data_sha: str) -> str:
    """Where the data came from does not matter, only what it is: the hash stands for the path."""
    # num_classes=None (inferred) is left out so that keys of runs made before the option stay valid
    return rundir.stage_key("train", {k: v for k, v in resolved.items() if k not in ("dataset", "data_dir")
                                      and not (k == "num_classes" and v is None)},
                            [data_sha])


# ---------------------------------------------------------------------------------------------
# One network, trained by the recipe

def fit_network(name: str, data: Dataset, resolved: dict, placement: Placement, progress: Progress | None = None,
                callbacks: Sequence = (), span: tuple[float, float] = (0.0, 1.0)) -> Trained:
    """Seeded training of one network on `data` by the resolved settings (see resolve_config).

    Returns a float32 copy of the best weights (by validation accuracy; with `ema_epochs`, of
    the averaged weights). `callbacks` are extra Keras callbacks, run after validation and before
    the best-weights checkpoint (the benchmark's per-epoch test evaluation).
    """
    progress = progress or Progress(quiet=True)
    net = get_network(name)
    seed, batch, epochs = int(resolved["seed"]), int(resolved["batch_size"]), int(resolved["epochs"])
    # Seed first: tf.data's shuffle and random streams derive their seeds from the global one too,
    # and each model's result must not depend on what this process did before.
    tf_keras.utils.set_random_seed(seed)
    x_tr, y_tr, x_val, y_val = split_validation(data.x_train, data.y_train, resolved["val_fraction"], seed)
    train_ds, steps = training_batches(x_tr, y_tr, batch=batch, epochs=epochs, seed=seed, flip=bool(resolved["flip"]),
                                       shift_px=int(resolved["shift_px"]),
                                       clean_epochs=int(resolved["clean_epochs"]))

    def build():
        model = net.build(data.input_shape, data.num_classes)
        momentum = batchnorm_momentum(epochs * steps)
        for layer in model.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.momentum = momentum
        return model

    ema = ema_momentum(float(resolved["ema_epochs"]), steps)
    with deterministic_ops(), placement_scope(placement):
        model = with_float32_logits(build()) if placement.mixed else build()
        schedule = warmup_cosine(float(resolved["learning_rate"]), total_steps=epochs * steps,
                                 warmup_steps=round(resolved["warmup_epochs"] * steps))
        model.compile(optimizer=adam(schedule, ema),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], **placement.compile_kwargs())
        # with averaged weights, validation runs in a callback on them (Keras' own would see the raw ones)
        val_data = None if ema else without_autotune(make_tf_dataset(x_val, y_val, EVAL_BATCH, shuffle=False))
        validation = [EmaValidation(x_val, y_val)] if ema else []
        early = tf_keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=int(resolved["patience"]),
                                                 restore_best_weights=True)
        log = EpochLog(name, epochs, schedule, progress, span)
        t0 = time.monotonic()
        fit = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, validation_data=val_data,
                        callbacks=[*validation, log, *callbacks, early], verbose=0)  # early last: it restores the best
        fit_seconds = time.monotonic() - t0
    clean = float32_model(model, build)
    test_accuracy, test_loss = evaluate(clean, data.x_test, data.y_test)
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    history.update(epoch=list(range(1, len(log.seconds) + 1)), learning_rate=log.learning_rates,
                   epoch_seconds=log.seconds)
    best = int(np.argmax(history["val_accuracy"]))
    metrics = {"test_accuracy": test_accuracy, "test_loss": test_loss,
               "val_accuracy": history["val_accuracy"][best], "epochs_run": len(log.seconds), "best_epoch": best + 1}
    return Trained(model=clean, history=history, metrics=metrics, fit_seconds=fit_seconds)
