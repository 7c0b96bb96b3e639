"""Data sources: Fashion-MNIST (Debian's IDX files), MNIST (Keras cache, a file or a folder),
any IDX folder or .npz by path, and seeded synthetic data for tests.

Every source returns the same thing: uint8 images of shape (N, H, W, 1) and int64 labels.
Models see float32 in [0, 1] (`to_float`); int8 models see the same values quantized with
scale 1/255, zero point -128, which maps a uint8 pixel exactly.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError, DataError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
KERAS_CACHE_MNIST = "~/.keras/datasets/mnist.npz"
IDX_FILES = {  # role -> file stem; a ".gz" copy is accepted too
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays of one source; images uint8 (N, H, W, 1), labels int64 (N,)."""
    name: str
    source: str           # where it came from (files), for the manifest
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "train_size": int(len(self.y_train)),
                "test_size": int(len(self.y_test)), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> the float32 [0, 1] inputs every edgekit model takes."""
    return x.astype(np.float32) / np.float32(255.0)


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Hold out a seeded, shuffled validation split from the *training* arrays.

    Callers pass only the training split, so test images can never leak into validation."""
    if len(x) != len(y):
        raise DataError(f"{len(x)} images but {len(y)} labels; cannot split off a validation set")
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    n_val = max(1, int(round(len(y) * fraction)))
    if n_val >= len(y):
        raise DataError(f"{len(y)} training samples are too few to hold out a validation split "
                        f"({fraction:.0%}); use more training data (a larger --limit)")
    order = np.random.default_rng(seed).permutation(len(y))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def limit_training(data: Dataset, limit: int | None) -> Dataset:
    """The first `limit` training images (the test set stays whole, so accuracies stay comparable)."""
    if limit is None:
        return data
    if limit < 2:
        raise ConfigError(f"--limit must be at least 2 (one image to train on, one to validate), got {limit}")
    return dataclasses.replace(data, x_train=data.x_train[:limit], y_train=data.y_train[:limit])


def data_sha256(data: Dataset) -> str:
    """What train and export record to prove they saw the same images (shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def make_tf_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0):
    """A tf.data pipeline: shuffle uint8 in memory, batch, scale to float after batching, prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int64)))
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# File readers

def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally .gz), checking magic, dimensions and length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found; check the path or re-download the data set") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e}); check the path and its permissions") from e
    if raw[:2] == b"\x1f\x8b" or path.suffix == ".gz":  # gzip by content, whatever the name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e}); re-download or "
                            f"re-extract the file") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{raw[:4].hex() or 'empty'}); "
                        f"expected MNIST-style IDX data (magic 0x000008NN), re-download the file")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; the file is incomplete, re-download it")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: truncated or padded IDX data: header says {dims} "
                        f"({expected} bytes) but {len(raw) - header} bytes follow; re-download it")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_folder(folder: str | os.PathLike, name: str | None = None, num_classes: int | None = None) -> Dataset:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; pass the folder that holds the IDX files")
    arrays, files = {}, {}
    for role, stem in IDX_FILES.items():
        f = _find_idx(folder, stem)
        if f is None:
            raise DataError(f"{folder}: missing {stem}[.gz]; an IDX folder needs "
                            f"{', '.join(IDX_FILES.values())} (each optionally .gz)")
        arrays[role] = read_idx(f)
        files[role] = str(f)
    return _checked(name or folder.name, str(folder), arrays, num_classes, files)


def load_npz(path: str | os.PathLike, name: str | None = None, num_classes: int | None = None) -> Dataset:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found; pass an existing .npz with {', '.join(NPZ_KEYS)}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; a data set .npz needs "
                                f"{', '.join(NPZ_KEYS)} (found {z.files})")
            arrays = {k: z[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), EOFError...
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {e}); re-create it "
                        f"with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from e
    return _checked(name or path.stem, str(path), arrays, num_classes,
                    {k: f"{path}[{k}]" for k in NPZ_KEYS})


def _checked(name: str, source: str, arrays: dict, num_classes: int | None, files: dict[str, str]) -> Dataset:
    """Validate shapes, dtypes and labels; normalize to uint8 (N, H, W, 1) and int64 labels.

    `files` maps each array (x_train, ...) to where it came from, so an error names the file."""
    def where(role: str) -> str:
        return files.get(role, f"{source} {role}")

    out = {}
    for split in ("train", "test"):
        xr, yr = f"x_{split}", f"y_{split}"
        x, y = np.asarray(arrays[xr]), np.asarray(arrays[yr])
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != 3:
            raise DataError(f"{where(xr)}: images have shape {x.shape}; expected grayscale images "
                            f"(N, H, W) or (N, H, W, 1)")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(f"{where(yr)}: labels have shape {y.shape}; expected integer class ids of shape (N,)")
        if len(y) != len(x):
            raise DataError(f"{where(yr)}: {len(y)} labels but {len(x)} images in the {split} split; "
                            f"images and labels must pair up")
        if len(y) == 0:
            raise DataError(f"{where(xr)}: the {split} split is empty")
        if x.dtype != np.uint8:
            if np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all() and 0.0 <= x.min() and x.max() <= 1.0:
                x = np.round(x * 255.0).astype(np.uint8)  # float [0, 1] images are accepted
            elif np.issubdtype(x.dtype, np.integer) and 0 <= x.min() and x.max() <= 255:
                x = x.astype(np.uint8)
            else:
                raise DataError(f"{where(xr)}: images have dtype {x.dtype}"
                                + (f" with values in [{x.min()}, {x.max()}]"
                                   if np.issubdtype(x.dtype, np.number) else "")
                                + "; expected uint8 pixels 0..255 or float in [0, 1]")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where(yr)}: labels have dtype {y.dtype}; expected integer class ids 0..K-1")
        out[xr], out[yr] = x[..., None], y.astype(np.int64)
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DataError(f"{where('x_test')}: test images are {out['x_test'].shape[1:3]} but train images "
                        f"are {out['x_train'].shape[1:3]}; both splits must have one image size")
    n = num_classes or int(out["y_train"].max()) + 1
    if num_classes is None:
        _check_no_stray_label(out["y_train"], n, where("y_train"))
    for split in ("train", "test"):
        y = out[f"y_{split}"]
        if y.min() < 0 or y.max() >= n:
            bad = y[(y < 0) | (y >= n)]
            raise DataError(f"{where(f'y_{split}')}: label out of range ({int(bad[0])}; min {y.min()}, "
                            f"max {y.max()}); labels must be 0..{n - 1}")
    return Dataset(name=name, source=source, num_classes=n, **out)


def _check_no_stray_label(y: np.ndarray, n: int, where: str) -> None:
    """The class count is inferred as max label + 1, so one stray label (a 42 among 0..9) would
    silently make a 43-class model; stop when classes below the maximum never occur."""
    counts = np.bincount(y[y >= 0], minlength=n)
    unseen = np.flatnonzero(counts == 0)
    if len(unseen):
        top = int(y.max())
        shown = ", ".join(str(int(c)) for c in unseen[:5]) + (", ..." if len(unseen) > 5 else "")
        raise DataError(f"{where}: labels go up to {top} but {len(unseen)} of the {n} classes 0..{top} never "
                        f"occur in the training split ({shown}); fix the stray labels, or pass "
                        f"--num-classes {n} if those classes are meant to be empty")


# ---------------------------------------------------------------------------------------------
# Named sources

def load_fashion_mnist(data_dir: str | None = None) -> Dataset:
    folder = Path(data_dir or os.environ.get("EDGEKIT_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST not found in {folder}; install it with "
                        f"'apt-get install dataset-fashion-mnist' or pass --data-dir FOLDER with its IDX files")
    return load_idx_folder(folder, name="fashion-mnist", num_classes=10)


def keras_mnist_cache() -> Path:
    """Where `tf_keras.datasets.mnist.load_data()` keeps mnist.npz (~ is read from $HOME)."""
    return Path(KERAS_CACHE_MNIST).expanduser()


def offline() -> bool:
    return os.environ.get("EDGEKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def load_mnist(data_dir: str | None = None, allow_download: bool | None = None) -> Dataset:
    """MNIST from a given .npz or IDX folder, else the Keras cache, else a Keras download
    (never when EDGEKIT_OFFLINE=1)."""
    if data_dir:
        p = Path(data_dir).expanduser()
        if p.is_file():
            return load_npz(p, name="mnist", num_classes=10)
        if (p / "mnist.npz").is_file():
            return load_npz(p / "mnist.npz", name="mnist", num_classes=10)
        if p.is_dir() and _find_idx(p, IDX_FILES["x_train"]):
            return load_idx_folder(p, name="mnist", num_classes=10)
        where = "not found" if not p.exists() else "holds no MNIST"
        raise DataError(f"{p}: {where}; put mnist.npz (x_train, y_train, x_test, y_test) in that folder, "
                        f"or the four IDX files ({', '.join(IDX_FILES.values())}, each optionally .gz)")
    cache = keras_mnist_cache()
    if cache.is_file():
        return load_npz(cache, name="mnist", num_classes=10)
    if allow_download is None:
        allow_download = not offline()
    if not allow_download:
        raise DataError(f"MNIST is not available offline: put mnist.npz (x_train, y_train, x_test, y_test) "
                        f"at {cache}, or pass --data-dir with mnist.npz or the four MNIST IDX files")
    import tf_keras

    try:
        (x_tr, y_tr), (x_te, y_te) = tf_keras.datasets.mnist.load_data()  # downloads into the cache
    except Exception as e:  # network, proxy, disk: say what happened and what to do instead
        raise DataError(f"MNIST download failed ({type(e).__name__}: {e}); put mnist.npz at {cache} "
                        f"or pass --data-dir with mnist.npz or the four MNIST IDX files") from e
    return _checked("mnist", str(cache), {"x_train": x_tr, "y_train": y_tr, "x_test": x_te,
                                               "y_test": y_te}, 10, {})


def make_synthetic(n_train: int = 2000, n_test: int = 500, num_classes: int = 10, seed: int = 0,
                   shape: tuple[int, int] = (28, 28)) -> Dataset:
    """Seeded, learnable data: one random blob template per class, shifted and noised.

    A small network separates the classes with clear logit margins in a few hundred steps,
    which int8 parity tests need (near-tie logits make top-1 agreement meaningless).
    """
    h, w = shape
    trng = np.random.default_rng(1234)  # templates fixed across seeds: same task, new samples
    templates = (trng.random((num_classes, h // 4, w // 4)) > 0.5).astype(np.float32)
    templates = np.kron(templates, np.ones((4, 4), np.float32))
    templates = np.pad(templates, ((0, 0), (0, h - templates.shape[1]), (0, w - templates.shape[2])))

    def sample(n: int, rng: np.random.Generator):
        y = rng.integers(0, num_classes, n)
        shifts = rng.integers(-1, 2, size=(n, 2))
        x = np.stack([np.roll(templates[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shifts)])
        x = 0.75 * x + 0.25 * rng.random((n, h, w))
        return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), y

    rng = np.random.default_rng(seed)
    x_tr, y_tr = sample(n_train, rng)
    x_te, y_te = sample(n_test, rng)
    return _checked("synthetic", f"synthetic(seed={seed})",
                    {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, num_classes, {})


SOURCES = {
    "fashion-mnist": lambda data_dir: load_fashion_mnist(data_dir),
    "mnist": lambda data_dir: load_mnist(data_dir),
    "synthetic": lambda data_dir: make_synthetic(),
}


def load_dataset(name_or_path: str, data_dir: str | None = None, num_classes: int | None = None) -> Dataset:
    """A named source (fashion-mnist, mnist, synthetic) or a path to an IDX folder or .npz.
    `num_classes` (paths only) fixes the class count instead of inferring it from the labels."""
    if name_or_path in SOURCES:
        return SOURCES[name_or_path](data_dir)
    p = Path(name_or_path).expanduser()
    if p.suffix == ".npz":
        return load_npz(p, num_classes=num_classes)
    if p.is_dir():
        return load_idx_folder(p, num_classes=num_classes)
    if p.exists():
        raise DataError(f"{p}: not a data set; pass a .npz with {', '.join(NPZ_KEYS)} or a folder of IDX files")
    if os.sep in name_or_path or name_or_path.startswith("~"):
        raise DataError(f"{p}: not found; pass an existing IDX folder or .npz, or one of {', '.join(SOURCES)}")
    raise DataError(f"unknown dataset '{name_or_path}'; use {', '.join(SOURCES)}, "
                    f"a folder of IDX files or a .npz with {', '.join(NPZ_KEYS)}")


def load_calibration(path: str | os.PathLike, input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """A user's calibration/evaluation sample for `export --model`: an .npz with `x` (float
    model inputs) and optionally `y` (labels). Returned as float32 of the model's input shape."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: calibration file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            key = "x" if "x" in z.files else ("x_train" if "x_train" in z.files else None)
            if key is None:
                raise DataError(f"{path}: no array 'x' in the .npz (found {z.files}); save it with numpy.savez(path, x=inputs, y=labels)")
            x = z[key]
            y = z["y"] if "y" in z.files else (z["y_train"] if key == "x_train" and "y_train" in z.files else None)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    want = tuple(int(d) for d in input_shape)
    if tuple(x.shape[1:]) != want:
        if tuple(x.shape[1:]) + (1,) == want:
            x = x[..., None]
        else:
            raise DataError(f"{path}: calibration inputs have shape {tuple(x.shape[1:])} per sample but "
                            f"the model takes {want}; save inputs of shape (N, {', '.join(map(str, want))})")
    if x.dtype == np.uint8:
        x = to_float(x)
    x = x.astype(np.float32)
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: 'y' must be integer labels of shape ({len(x)},), got {y.shape} {y.dtype}")
        y = y.astype(np.int64)
    return x, y
