"""Data sources on small files written here: IDX (plain/.gz), .npz, MNIST, Fashion-MNIST,
synthetic; every bad-data case; the validation split and the tf.data pipeline."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from edgekit.core import data
from edgekit.core.data import IDX_FILES, load_dataset, make_synthetic, split_validation
from edgekit.errors import DataError

N_TRAIN, N_TEST = 40, 12


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    return b"\x00\x00\x08" + bytes([a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def tiny_arrays(seed: int = 0, num_classes: int = 10, hw=(28, 28)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (N_TRAIN, *hw), dtype=np.uint8),
            "y_train": (np.arange(N_TRAIN) % num_classes).astype(np.uint8),
            "x_test": rng.integers(0, 256, (N_TEST, *hw), dtype=np.uint8),
            "y_test": (np.arange(N_TEST) % num_classes).astype(np.uint8)}


def write_idx_folder(folder: Path, arrays: dict, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, stem in IDX_FILES.items():
        raw = idx_bytes(arrays[role])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return folder


def assert_same(ds, arrays):
    for role in ("x_train", "x_test"):
        assert getattr(ds, role).shape == arrays[role].shape + (1,)
        assert getattr(ds, role).dtype == np.uint8
        np.testing.assert_array_equal(getattr(ds, role)[..., 0], arrays[role])
    for role in ("y_train", "y_test"):
        assert getattr(ds, role).dtype == np.int64
        np.testing.assert_array_equal(getattr(ds, role), arrays[role])


def error_of(fn, *args, **kwargs) -> str:
    """The DataError message of a call; it must be one line."""
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------- loaders

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_folder(tmp_path, gz):
    arrays = tiny_arrays()
    folder = write_idx_folder(tmp_path / "idx", arrays, gz=gz)
    ds = load_dataset(str(folder))
    assert_same(ds, arrays)
    assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
    assert ds.describe() == {"name": "idx", "source": str(folder), "train_size": N_TRAIN, "test_size": N_TEST,
                             "input_shape": [28, 28, 1], "num_classes": 10}


def test_idx_gzip_detected_by_content_and_dot_idx_names(tmp_path):
    """Some mirrors name files t10k-images.idx3-ubyte, or keep gzip data without .gz."""
    arrays = tiny_arrays(1)
    folder = tmp_path / "odd"
    folder.mkdir()
    for role, stem in IDX_FILES.items():
        (folder / stem.replace("-idx", ".idx")).write_bytes(gzip.compress(idx_bytes(arrays[role])))
    assert_same(load_dataset(str(folder)), arrays)


def test_idx_other_dtypes(tmp_path):
    """IDX int32 (big-endian on disk) comes back in native byte order."""
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    p = tmp_path / "ints"
    p.write_bytes(b"\x00\x00\x0c\x02" + struct.pack(">2I", 3, 4) + a.tobytes())
    got = data.read_idx(p)
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, np.arange(12).reshape(3, 4))


def test_npz_uint8_and_float_and_channel_axis(tmp_path):
    arrays = tiny_arrays(2)
    p = tmp_path / "set.npz"
    np.savez(p, **arrays)
    assert_same(load_dataset(str(p)), arrays)
    # float [0, 1] images with a channel axis, int32 labels: accepted and normalized exactly
    q = tmp_path / "float.npz"
    np.savez(q, x_train=arrays["x_train"][..., None] / np.float32(255), y_train=arrays["y_train"].astype(np.int32),
             x_test=arrays["x_test"][..., None] / np.float32(255), y_test=arrays["y_test"].astype(np.int32))
    ds = load_dataset(str(q))
    assert_same(ds, arrays)
    assert ds.name == "float"


def test_npz_labels_infer_num_classes(tmp_path):
    arrays = tiny_arrays(3, num_classes=4)
    p = tmp_path / "four.npz"
    np.savez(p, **arrays)
    assert load_dataset(str(p)).num_classes == 4


def test_stray_label_is_refused_unless_num_classes_is_given(tmp_path):
    arrays = tiny_arrays(3, num_classes=10)
    arrays["y_train"] = np.arange(len(arrays["y_train"])) % 10  # every class 0..9 occurs
    arrays["y_train"][0] = 42  # one stray label: inferred 43 classes, 33 of them never seen
    p = tmp_path / "stray.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError) as err:
        load_dataset(str(p))
    msg = str(err.value)
    assert "42" in msg and "--num-classes 43" in msg and "never occur" in msg and "\n" not in msg
    assert load_dataset(str(p), num_classes=43).num_classes == 43  # the user's explicit choice stands
    with pytest.raises(DataError, match="label out of range"):
        load_dataset(str(p), num_classes=10)


def test_mnist_from_npz_file_folder_and_idx(tmp_path):
    arrays = tiny_arrays(4)
    np.savez(tmp_path / "mnist.npz", **arrays)
    assert_same(data.load_mnist(str(tmp_path / "mnist.npz")), arrays)
    ds = load_dataset("mnist", data_dir=str(tmp_path))  # a folder holding mnist.npz
    assert_same(ds, arrays)
    assert ds.name == "mnist" and ds.num_classes == 10
    idx = write_idx_folder(tmp_path / "idx", arrays, gz=True)
    assert_same(load_dataset("mnist", data_dir=str(idx)), arrays)


def test_mnist_from_keras_cache(tmp_path, monkeypatch):
    arrays = tiny_arrays(5)
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".keras" / "datasets" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    np.savez(cache, **arrays)
    ds = load_dataset("mnist")
    assert_same(ds, arrays)
    assert ds.source == str(cache)


def test_mnist_offline_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    msg = error_of(load_dataset, "mnist")
    assert "offline" in msg and str(tmp_path / ".keras" / "datasets" / "mnist.npz") in msg
    assert "--data-dir" in msg
    # a given folder without MNIST in it names the folder and what to put there
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = error_of(load_dataset, "mnist", data_dir=str(empty))
    assert str(empty) in msg and "mnist.npz" in msg and IDX_FILES["x_train"] in msg
    msg = error_of(load_dataset, "mnist", data_dir=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in msg and "not found" in msg


def test_fashion_mnist_overridden_path_and_missing_folder(tmp_path, monkeypatch):
    arrays = tiny_arrays(6)
    folder = write_idx_folder(tmp_path / "fm", arrays, gz=True)
    ds = load_dataset("fashion-mnist", data_dir=str(folder))
    assert_same(ds, arrays)
    assert ds.name == "fashion-mnist" and ds.num_classes == 10
    monkeypatch.setenv("EDGEKIT_FASHION_MNIST_DIR", str(folder))
    assert_same(load_dataset("fashion-mnist"), arrays)
    msg = error_of(load_dataset, "fashion-mnist", data_dir=str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in msg and "dataset-fashion-mnist" in msg and "--data-dir" in msg


@pytest.mark.skipif(not Path(data.FASHION_MNIST_DIR).is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("EDGEKIT_FASHION_MNIST_DIR", raising=False)
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.num_classes == 10 and set(np.unique(ds.y_test)) == set(range(10))
    assert np.bincount(ds.y_train).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255


def test_unknown_source_and_missing_path():
    msg = error_of(load_dataset, "cifar")
    assert "unknown dataset 'cifar'" in msg and "fashion-mnist" in msg
    msg = error_of(load_dataset, "/nonexistent/set.npz")
    assert "/nonexistent/set.npz" in msg and "not found" in msg
    msg = error_of(load_dataset, "/nonexistent/folder")
    assert "/nonexistent/folder" in msg and "not found" in msg


# ------------------------------------------------------------------------------- bad data

def _npz(tmp_path, name="bad.npz", **override) -> Path:
    arrays = {**tiny_arrays(7), **override}
    p = tmp_path / name
    np.savez(p, **{k: v for k, v in arrays.items() if v is not None})
    return p


@pytest.mark.parametrize("override, needles", [
    ({"x_train": np.zeros((N_TRAIN, 28, 28, 3), np.uint8)}, ["[x_train]", "shape (40, 28, 28, 3)", "grayscale"]),
    ({"x_test": np.zeros((N_TEST, 784), np.uint8)}, ["[x_test]", "shape (12, 784)"]),
    ({"y_train": np.zeros((N_TRAIN, 10), np.uint8)}, ["[y_train]", "shape (40, 10)"]),
    ({"x_train": np.full((N_TRAIN, 28, 28), 200.0, np.float32)}, ["[x_train]", "dtype float32", "[200.0, 200.0]"]),
    ({"x_train": np.full((N_TRAIN, 28, 28), -3, np.int16)}, ["[x_train]", "dtype int16"]),
    ({"y_test": np.zeros(N_TEST, np.float32)}, ["[y_test]", "dtype float32", "integer"]),
    ({"y_test": np.full(N_TEST, 10, np.int64)}, ["[y_test]", "label out of range", "0..9"]),
    ({"y_train": np.full(N_TRAIN, -1, np.int64)}, ["[y_train]", "label out of range"]),
    ({"y_train": np.zeros(N_TRAIN - 1, np.uint8)}, ["[y_train]", "39 labels but 40 images"]),
    ({"x_test": np.zeros((N_TEST, 32, 32), np.uint8)}, ["[x_test]", "(32, 32)", "(28, 28)"]),
    ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.uint8)}, ["[x_test]", "empty"]),
], ids=["rgb", "flat", "onehot", "float255", "negative", "float-labels", "label-high", "label-neg",
        "count", "size", "empty"])
def test_bad_npz_contents(tmp_path, override, needles):
    p = _npz(tmp_path, **override)
    msg = error_of(load_dataset, str(p))
    assert str(p) in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_label_out_of_range_in_fashion_mnist_names_the_labels_file(tmp_path):
    arrays = tiny_arrays(8)
    arrays["y_train"] = arrays["y_train"].copy()
    arrays["y_train"][3] = 12  # 10 classes
    folder = write_idx_folder(tmp_path / "fm", arrays, gz=True)
    msg = error_of(load_dataset, "fashion-mnist", data_dir=str(folder))
    assert str(folder / "train-labels-idx1-ubyte.gz") in msg and "label out of range (12" in msg


def test_npz_missing_keys_and_unreadable(tmp_path):
    p = _npz(tmp_path, y_test=None, x_test=None)
    msg = error_of(load_dataset, str(p))
    assert str(p) in msg and "missing arrays ['x_test', 'y_test']" in msg
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    msg = error_of(load_dataset, str(junk))
    assert str(junk) in msg and "not a readable .npz" in msg
    obj = tmp_path / "obj.npz"
    np.savez(obj, x_train=np.array([None, 1], dtype=object), y_train=[0], x_test=[0], y_test=[0])
    msg = error_of(load_dataset, str(obj))
    assert str(obj) in msg and "not a readable .npz" in msg


@pytest.fixture()
def good_idx(tmp_path) -> Path:
    return write_idx_folder(tmp_path / "idx", tiny_arrays(9))


def test_truncated_idx_data_and_header(good_idx):
    f = good_idx / IDX_FILES["x_train"]
    raw = f.read_bytes()
    f.write_bytes(raw[:-100])
    msg = error_of(load_dataset, str(good_idx))
    assert str(f) in msg and "truncated" in msg and "(40, 28, 28)" in msg
    f.write_bytes(raw[:9])  # magic + part of the first dimension
    msg = error_of(load_dataset, str(good_idx))
    assert str(f) in msg and "truncated IDX header" in msg
    f.write_bytes(raw + b"\0")
    assert "padded" in error_of(load_dataset, str(good_idx))


def test_corrupt_and_truncated_gz(good_idx):
    f = good_idx / IDX_FILES["y_test"]
    gz = f.with_name(f.name + ".gz")
    f.unlink()
    gz.write_bytes(b"\x1f\x8b" + bytes(range(200)))  # gzip magic, garbage after
    msg = error_of(load_dataset, str(good_idx))
    assert str(gz) in msg and "corrupt" in msg
    gz.write_bytes(gzip.compress(idx_bytes(tiny_arrays(9)["y_test"]))[:-12])  # cut off the end
    msg = error_of(load_dataset, str(good_idx))
    assert str(gz) in msg and "truncated gzip" in msg


def test_bad_magic(good_idx):
    f = good_idx / IDX_FILES["x_test"]
    f.write_bytes(b"\x00\x01\x08\x03" + f.read_bytes()[4:])
    msg = error_of(load_dataset, str(good_idx))
    assert str(f) in msg and "bad magic number 0x00010803" in msg
    f.write_bytes(b"")
    assert "bad magic" in error_of(load_dataset, str(good_idx))


def test_missing_files(good_idx, tmp_path):
    (good_idx / IDX_FILES["y_train"]).unlink()
    msg = error_of(load_dataset, str(good_idx))
    assert str(good_idx) in msg and "missing train-labels-idx1-ubyte[.gz]" in msg
    msg = error_of(data.read_idx, tmp_path / "nothing-idx1-ubyte")
    assert str(tmp_path / "nothing-idx1-ubyte") in msg and "file not found" in msg
    msg = error_of(data.load_npz, tmp_path / "absent.npz")
    assert str(tmp_path / "absent.npz") in msg and "file not found" in msg


# ------------------------------------------------------------------------------- splits, pipeline

def test_split_validation_disjoint_seeded_and_from_train_only():
    ds = make_synthetic(n_train=300, n_test=50, seed=3)
    ids = np.arange(len(ds.y_train))  # track rows by id: the split only ever sees training rows
    x_tr, y_tr, x_val, y_val = split_validation(ids, ds.y_train, 0.1, seed=0)
    assert len(x_val) == 30 and len(x_tr) == 270
    assert set(x_tr).isdisjoint(x_val) and set(x_tr) | set(x_val) == set(ids)
    np.testing.assert_array_equal(y_val, ds.y_train[x_val])
    again = split_validation(ids, ds.y_train, 0.1, seed=0)
    np.testing.assert_array_equal(again[2], x_val)
    assert not np.array_equal(split_validation(ids, ds.y_train, 0.1, seed=1)[2], x_val)
    # on images: every validation image is a training image, none is a test image
    xi_tr, _, xi_val, _ = split_validation(ds.x_train, ds.y_train, 0.1, seed=0)
    train_rows = {r.tobytes() for r in ds.x_train}
    test_rows = {r.tobytes() for r in ds.x_test}
    assert all(r.tobytes() in train_rows and r.tobytes() not in test_rows for r in xi_val)
    with pytest.raises(DataError, match="too few"):
        split_validation(ids[:1], ds.y_train[:1], 0.1, seed=0)


def test_tf_dataset_batches_float01_shuffled(synthetic):
    x, y = synthetic.x_train[:100], synthetic.y_train[:100]
    ds = data.make_tf_dataset(x, y, batch_size=32, shuffle=True, seed=5)
    assert type(ds).__name__ == "_PrefetchDataset"
    batches = list(ds.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [32, 32, 32, 4]
    xb, yb = batches[0]
    assert xb.dtype == np.float32 and xb.shape == (32, 28, 28, 1) and yb.dtype == np.int64
    assert 0.0 <= min(b[0].min() for b in batches) and max(b[0].max() for b in batches) <= 1.0
    got_x = np.concatenate([b[0] for b in batches])
    got_y = np.concatenate([b[1] for b in batches])
    # every sample exactly once, pixels scaled by 1/255 and still paired with their labels
    order = [int(np.flatnonzero((x[..., 0] == np.round(g[..., 0] * 255)).all(axis=(1, 2)))[0]) for g in got_x]
    assert sorted(order) == list(range(100)) and order != list(range(100))
    np.testing.assert_array_equal(got_y, y[order])
    np.testing.assert_allclose(got_x, x[order] / 255.0, atol=1e-7)
    first = np.concatenate([b[1] for b in data.make_tf_dataset(x, y, 32, shuffle=True, seed=5).as_numpy_iterator()])
    np.testing.assert_array_equal(first, got_y)  # seeded: the same first epoch
    plain = np.concatenate([b[1] for b in data.make_tf_dataset(x, y, 32, shuffle=False).as_numpy_iterator()])
    np.testing.assert_array_equal(plain, y)


# ------------------------------------------------------------------------------- synthetic

def test_synthetic_seeded():
    a, b, c = make_synthetic(200, 50, seed=1), make_synthetic(200, 50, seed=1), make_synthetic(200, 50, seed=2)
    for role in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, role), getattr(b, role))
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (200, 28, 28, 1) and a.x_test.shape == (50, 28, 28, 1)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64
    assert a.num_classes == 10 and set(np.unique(a.y_train)) == set(range(10))


def test_synthetic_learnable_by_logistic_regression():
    """Softmax regression in numpy, 20 full-batch steps: far above the 10% of chance."""
    ds = make_synthetic(n_train=1000, n_test=300, seed=0)
    x = data.to_float(ds.x_train).reshape(len(ds.x_train), -1)
    xt = data.to_float(ds.x_test).reshape(len(ds.x_test), -1)
    w, b = np.zeros((x.shape[1], 10), np.float32), np.zeros(10, np.float32)
    onehot = np.eye(10, dtype=np.float32)[ds.y_train]
    for _ in range(20):
        z = x @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(x)
        w -= 0.5 * x.T @ g
        b -= 0.5 * g.sum(axis=0)
    acc = float(((xt @ w + b).argmax(axis=1) == ds.y_test).mean())
    assert acc > 0.9, acc


# ------------------------------------------------------------------------------- calibration

def test_load_calibration(tmp_path):
    p = tmp_path / "cal.npz"
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    np.savez(p, x=x, y=np.arange(8) % 3)
    cx, cy = data.load_calibration(p, (28, 28, 1))
    assert cx.dtype == np.float32 and cx.shape == (8, 28, 28, 1)
    np.testing.assert_allclose(cx[..., 0], x / 255.0, atol=1e-7)
    assert cy.dtype == np.int64 and cy.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    np.savez(p, x=np.zeros((4, 28, 28, 1), np.float32))
    assert data.load_calibration(p, (28, 28, 1))[1] is None
    np.savez(p, images=x)
    assert "no array 'x'" in error_of(data.load_calibration, p, (28, 28, 1))
    np.savez(p, x=np.zeros((4, 32, 32, 1), np.float32))
    assert "(32, 32, 1)" in error_of(data.load_calibration, p, (28, 28, 1))
    np.savez(p, x=x, y=np.zeros(3, np.int64))
    assert "'y' must be integer labels" in error_of(data.load_calibration, p, (28, 28, 1))
    assert "not found" in error_of(data.load_calibration, tmp_path / "none.npz", (28, 28, 1))
