"""The training recipe's parts (edgekit.train.recipe): schedule, augmentation, weight averaging, BatchNorm momentum."""
from __future__ import annotations

import numpy as np
import pytest

import edgekit  # noqa: F401
from edgekit.core.data import make_synthetic, make_tf_dataset


def test_warmup_cosine_schedule():
    from edgekit.train.recipe import warmup_cosine

    lr = warmup_cosine(1e-3, warmup_steps=10, total_steps=110)
    values = [float(lr(step)) for step in range(111)]
    assert values[0] == 0.0 and values[5] == pytest.approx(5e-4) and values[10] == pytest.approx(1e-3)
    assert values[60] == pytest.approx(5e-4, rel=1e-4) and values[110] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # decays monotonically after warm-up
    short = warmup_cosine(1e-3, warmup_steps=50, total_steps=100)  # warm-up capped at a tenth of the run
    assert float(short(10)) == pytest.approx(1e-3) and float(short(5)) == pytest.approx(5e-4)


def test_flip_shift_moves_pixels_exactly():
    import tensorflow as tf

    from edgekit.train.recipe import flip_shift

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
    from edgekit.train.recipe import training_batches

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

    from edgekit.core.networks import build_model
    from edgekit.train.recipe import EmaValidation, adam, evaluate

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
    from edgekit.train.recipe import batchnorm_momentum

    assert batchnorm_momentum(20 * 422) == 0.99 and batchnorm_momentum(1000) == 0.99
    assert batchnorm_momentum(42) == pytest.approx(1 - 10 / 42)
    assert batchnorm_momentum(5) == 0.5
