"""The run directory: atomic writes, file hashes, stage keys and the shared `manifest.json`.

Stages talk only through this folder. Each stage writes its files under a temporary name and
renames them, then records them (path, size, sha256) in the manifest under a key hashed from
the stage, its config and its inputs' hashes, so a re-run can tell finished work from stale.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgekit.errors import RunDirError

MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so Keras/ONNX accept it); rename on success.

    On any exception the temporary file or folder is removed and `path` is left untouched:
    a failed write never leaves a half-written artifact under its final name.
    """
    path = Path(path)
    make_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers create it themselves (some write folders, e.g. SavedModel)
    try:
        yield tmp
        if not tmp.exists():
            raise RunDirError(f"internal: nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # a folder artifact (SavedModel) cannot be renamed over atomically
        elif tmp.is_dir() and (path.exists() or path.is_symlink()):
            path.unlink()  # a folder replacing a file: rename() would refuse
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, Paths and dataclasses -> plain JSON types."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalar or array (NaN inside too)
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise RunDirError(f"{path} does not exist; run the stage that writes it first") from e
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is not valid JSON ({e}); delete it and re-run the stage") from e


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files in sorted order (SavedModel folders)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def file_record(run_dir: str | os.PathLike, path: str | os.PathLike) -> dict:
    """What the manifest says of one artifact: run-relative path, size and hash."""
    path = Path(path)
    try:
        rel = str(path.resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        rel = str(path.resolve())
    return {"path": rel, "size_bytes": size_bytes(path), "sha256": sha256_file(path)}


def resolve(run_dir: str | os.PathLike, rel: str) -> Path:
    """A manifest path back to a file path (manifest paths are relative to the run dir)."""
    p = Path(rel)
    return p if p.is_absolute() else Path(run_dir) / p


def stage_key(stage: str, config: Any, input_hashes: list[str] | tuple[str, ...] = ()) -> str:
    """A stable key from stage name + resolved config + input hashes; equal key = same work."""
    blob = json.dumps({"stage": stage, "config": to_jsonable(config), "inputs": list(input_hashes)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def outputs_intact(run_dir: str | os.PathLike, records: list[dict]) -> bool:
    """True when every recorded file still exists with its recorded sha256."""
    for rec in records:
        p = resolve(run_dir, rec["path"])
        if not p.exists() or sha256_file(p) != rec["sha256"]:
            return False
    return True


def is_fresh(run_dir: str | os.PathLike, record: dict | None, key: str) -> bool:
    """A finished record with the same key whose files are intact: safe to skip re-doing it."""
    if not record or record.get("key") != key or record.get("status") != "ok":
        return False
    return outputs_intact(run_dir, record.get("files", []))


def empty_manifest() -> dict:
    from edgekit.core.version import __version__
    return {"schema_version": MANIFEST_SCHEMA_VERSION, "edgekit_version": __version__,
            "created_utc": utc_now(), "updated_utc": utc_now(), "stages": {}}


def load_manifest(run_dir: str | os.PathLike) -> dict:
    p = Path(run_dir) / MANIFEST
    if not p.exists():
        return empty_manifest()
    m = read_json(p)
    if not isinstance(m, dict):
        raise RunDirError(f"{p} is not a manifest (a JSON {type(m).__name__}, not an object); "
                          f"use a new --out directory")
    if m.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise RunDirError(f"{p} has schema_version {m.get('schema_version')}, expected "
                          f"{MANIFEST_SCHEMA_VERSION}; use a new --out directory")
    return m


def make_dir(path: str | os.PathLike) -> Path:
    """mkdir -p, with the user's path and the reason in the error (a file in the way, no
    permission) instead of an OSError's traceback: --out is the user's input."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise RunDirError(f"{path}: cannot create this directory: a file with that name is in the way; "
                          f"choose another --out") from e
    except NotADirectoryError as e:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        raise RunDirError(f"{path}: cannot create this directory: {blocker} is a file, not a directory; "
                          f"choose another --out") from e
    except PermissionError as e:
        raise RunDirError(f"{path}: cannot create this directory: permission denied; "
                          f"choose a writable --out") from e
    except OSError as e:
        raise RunDirError(f"{path}: cannot create this directory ({e.strerror}); choose another --out") from e
    return path


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    make_dir(run_dir)
    with open(run_dir / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_manifest(run_dir: str | os.PathLike, mutate: Callable[[dict], None]) -> dict:
    """Load, mutate in place, write atomically. Call it after each finished unit of work
    (one model trained, one variant exported) so an interrupted run keeps what it finished."""
    run_dir = Path(run_dir)
    with _locked(run_dir):
        m = load_manifest(run_dir)
        mutate(m)
        m["updated_utc"] = utc_now()
        atomic_write_json(run_dir / MANIFEST, m)
    return m


def stage(manifest: dict, name: str) -> dict:
    """The stage's section of the manifest, created empty if absent."""
    return manifest.setdefault("stages", {}).setdefault(name, {})


def section(manifest: dict, name: str) -> dict:
    """The stage's section of the manifest for reading: {} if absent (never creates it)."""
    stages = manifest.get("stages")
    found = stages.get(name) if isinstance(stages, dict) else None
    return found if isinstance(found, dict) else {}


def model_records(manifest: dict, stage_name: str) -> dict[str, dict]:
    """Per-model records of a stage (`stages.<stage>.models`), {} if none: train's networks,
    export's models (each with its variants)."""
    models = section(manifest, stage_name).get("models")
    return models if isinstance(models, dict) else {}


def model_record(manifest: dict, stage_name: str, model: str) -> dict:
    """One model's record in a stage, {} if the stage has not recorded it."""
    return model_records(manifest, stage_name).get(model) or {}


def require_stage(run_dir: str | os.PathLike, name: str, hint: str) -> dict:
    """The stage's section, or a one-line error saying which command produces it."""
    found = section(load_manifest(run_dir), name)
    if not found:
        raise RunDirError(f"{Path(run_dir) / MANIFEST} has no '{name}' stage; {hint}")
    return found


# Distributions that shape an exported file besides the runtimes' own (edgekit.runtimes dists).
CONVERTER_DISTS = ("tensorflow-model-optimization", "tf2onnx", "onnx", "numpy")


def versions(runtime_dists: Sequence[str] = ()) -> dict:
    """Versions of everything that shapes a result, for the manifest and results.json. The stages
    pass the runtimes' distributions (`edgekit.runtimes.RUNTIME_DISTS`): core does not know the runtimes."""
    from importlib import metadata

    from edgekit.core.machine import cpu_model, describe

    cpu = describe()
    out = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
           "cpu_flags": cpu["int8_flags"], "cpu_class": cpu["cpu_class"]}
    for dist in dict.fromkeys(["edgekit", *runtime_dists, *CONVERTER_DISTS]):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
