"""The run directory: atomic writes, hashes, stage keys, freshness and the manifest."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from edgekit.core import rundir
from edgekit.core.config import TrainConfig
from edgekit.errors import RunDirError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".manifest.lock")


# ------------------------------------------------------------------------------- atomic writes

def test_atomic_path_renames_on_success_and_keeps_the_suffix(tmp_path):
    final = tmp_path / "sub" / "model.keras"
    with rundir.atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.suffix == ".keras" and tmp.name.startswith(".model.")
        assert not tmp.exists() and not final.exists()  # the writer creates it
        tmp.write_bytes(b"weights")
    assert final.read_bytes() == b"weights"
    assert leftovers(final.parent) == ["model.keras"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="converter broke"):
        with rundir.atomic_path(final) as tmp:
            tmp.write_bytes(b"half a model")
            raise ValueError("converter broke")
    assert leftovers(tmp_path) == []
    # an existing artifact survives a failed rewrite untouched
    final.write_bytes(b"good")
    with pytest.raises(ValueError):
        with rundir.atomic_path(final) as tmp:
            tmp.write_bytes(b"bad")
            raise ValueError
    assert final.read_bytes() == b"good" and leftovers(tmp_path) == ["model.tflite"]
    # a folder artifact (SavedModel) half written: removed too
    with pytest.raises(KeyboardInterrupt):
        with rundir.atomic_path(tmp_path / "saved") as tmp:
            (tmp / "variables").mkdir(parents=True)
            raise KeyboardInterrupt
    assert leftovers(tmp_path) == ["model.tflite"]


def test_atomic_path_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(RunDirError, match="nothing was written"):
        with rundir.atomic_path(tmp_path / "x.onnx"):
            pass
    assert leftovers(tmp_path) == []


def test_atomic_path_replaces_folders_and_files(tmp_path):
    target = tmp_path / "saved_model"
    for content in (b"v1", b"v2"):
        with rundir.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_bytes(content)
        assert (target / "saved_model.pb").read_bytes() == content
    with rundir.atomic_path(target) as tmp:  # a file replaces the folder
        tmp.write_bytes(b"file now")
    assert target.read_bytes() == b"file now"
    with rundir.atomic_path(target) as tmp:  # and a folder replaces the file
        tmp.mkdir()
        (tmp / "a").write_text("x")
    assert (target / "a").read_text() == "x"
    assert leftovers(tmp_path) == ["saved_model"]


@dataclasses.dataclass(frozen=True)
class _Rec:
    path: Path
    value: float


def test_atomic_write_helpers_and_json_conversion(tmp_path):
    assert rundir.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert rundir.atomic_write_text(tmp_path / "t.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    obj = {"f32": np.float32(0.5), "i64": np.int64(7), "arr": np.arange(3), "nan": float("nan"),
           "np_nan": np.float32("nan"), "nan_in_array": np.array([1.0, np.nan]), "tuple": (1, 2),
           "path": Path("a/b"), "rec": _Rec(Path("x.onnx"), 1.5), 3: "int key"}
    p = rundir.atomic_write_json(tmp_path / "o.json", obj)
    text = p.read_text()
    assert "NaN" not in text  # strict JSON: NaN becomes null
    assert json.loads(text) == {"f32": 0.5, "i64": 7, "arr": [0, 1, 2], "nan": None, "np_nan": None,
                                "nan_in_array": [1.0, None], "tuple": [1, 2], "path": "a/b",
                                "rec": {"path": "x.onnx", "value": 1.5}, "3": "int key"}
    assert rundir.read_json(p)["i64"] == 7
    assert leftovers(tmp_path) == ["b.bin", "o.json", "t.txt"]


def test_read_json_errors(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        rundir.read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RunDirError, match="not valid JSON"):
        rundir.read_json(tmp_path / "bad.json")


# ------------------------------------------------------------------------------- hashes, records

def test_sha256_and_file_record(tmp_path):
    f = tmp_path / "run" / "export" / "cnn" / "m.tflite"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"abc" * 1000)
    assert rundir.sha256_file(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    rec = rundir.file_record(tmp_path / "run", f)
    assert rec == {"path": "export/cnn/m.tflite", "size_bytes": 3000, "sha256": hashlib.sha256(b"abc" * 1000).hexdigest()}
    assert rundir.resolve(tmp_path / "run", rec["path"]) == f
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"z")
    assert rundir.file_record(tmp_path / "run", outside)["path"] == str(outside.resolve())
    assert rundir.resolve(tmp_path / "run", str(outside)) == outside


def test_sha256_of_folder_sees_names_and_contents(tmp_path):
    d = tmp_path / "saved"
    (d / "variables").mkdir(parents=True)
    (d / "saved_model.pb").write_bytes(b"graph")
    (d / "variables" / "v.data").write_bytes(b"weights")
    h0 = rundir.sha256_file(d)
    assert rundir.size_bytes(d) == 12
    (d / "variables" / "v.data").write_bytes(b"weightz")
    h1 = rundir.sha256_file(d)
    (d / "variables" / "v.data").rename(d / "variables" / "w.data")
    h2 = rundir.sha256_file(d)
    assert len({h0, h1, h2}) == 3


# ------------------------------------------------------------------------------- stage keys

def test_stage_key_stable_and_sensitive():
    cfg = {"epochs": 3, "lr": 0.01, "net": "cnn"}
    k = rundir.stage_key("train", cfg, ["aa"])
    assert len(k) == 16 and k == rundir.stage_key("train", dict(reversed(list(cfg.items()))), ["aa"])
    assert k == rundir.stage_key("train", {**cfg, "lr": np.float64(0.01)}, ("aa",))
    assert k != rundir.stage_key("train", {**cfg, "epochs": 4}, ["aa"])
    assert k != rundir.stage_key("train", cfg, ["ab"])
    assert k != rundir.stage_key("train", cfg, [])
    assert k != rundir.stage_key("export", cfg, ["aa"])
    a, b = TrainConfig(dataset="synthetic"), TrainConfig(dataset="synthetic", seed=1)
    assert rundir.stage_key("train", a) == rundir.stage_key("train", TrainConfig(dataset="synthetic"))
    assert rundir.stage_key("train", a) != rundir.stage_key("train", b)


def test_stage_key_same_in_another_process():
    """No per-process salt (hash randomization, dict order): keys survive a restart."""
    cfg = {"b": [1, 2.5, None], "a": {"z": "x", "y": True}}
    code = ("from edgekit import rundir; "
            f"print(rundir.stage_key('export', {cfg!r}, ['f00d']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == rundir.stage_key("export", cfg, ["f00d"])


def test_is_fresh(tmp_path):
    run = tmp_path / "run"
    f = run / "train" / "mlp" / "model.keras"
    rundir.atomic_write_bytes(f, b"model")
    key = rundir.stage_key("train", {"x": 1})
    rec = {"status": "ok", "key": key, "files": [rundir.file_record(run, f)]}
    assert rundir.is_fresh(run, rec, key)
    assert not rundir.is_fresh(run, rec, rundir.stage_key("train", {"x": 2}))
    assert not rundir.is_fresh(run, {**rec, "status": "failed"}, key)
    assert not rundir.is_fresh(run, None, key) and not rundir.is_fresh(run, {}, key)
    f.write_bytes(b"modem")  # same size, different content
    assert not rundir.is_fresh(run, rec, key)
    f.unlink()
    assert not rundir.is_fresh(run, rec, key)


# ------------------------------------------------------------------------------- manifest

def test_update_manifest_round_trip(tmp_path):
    run = tmp_path / "run"
    assert rundir.load_manifest(run)["stages"] == {}  # no manifest yet: an empty one
    with pytest.raises(RunDirError, match="has no 'train' stage; run edgekit train"):
        rundir.require_stage(run, "train", "run edgekit train")

    def add_model(m):
        rundir.stage(m, "train").setdefault("models", {})["cnn"] = {"status": "ok", "acc": np.float32(0.5)}

    m1 = rundir.update_manifest(run, add_model)
    on_disk = json.loads((run / "manifest.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["edgekit_version"] == "0.1.0"
    assert on_disk["stages"]["train"]["models"]["cnn"] == {"status": "ok", "acc": 0.5}
    assert on_disk["created_utc"] == m1["created_utc"]
    m2 = rundir.update_manifest(run, lambda m: rundir.stage(m, "export").update(profile="default"))
    assert m2["created_utc"] == m1["created_utc"]
    assert set(rundir.load_manifest(run)["stages"]) == {"train", "export"}
    assert rundir.require_stage(run, "export", "hint") == {"profile": "default"}
    assert leftovers(run) == ["manifest.json"]

    def broken(m):
        m["stages"]["train"] = "garbage"
        raise RuntimeError("mutation failed half way")

    with pytest.raises(RuntimeError):
        rundir.update_manifest(run, broken)
    assert json.loads((run / "manifest.json").read_text())["stages"]["train"]["models"]["cnn"]["status"] == "ok"


def test_update_manifest_is_safe_across_threads(tmp_path):
    run = tmp_path / "run"

    def bump(m):
        m.setdefault("stages", {}).setdefault("count", {"n": 0})["n"] += 1

    threads = [threading.Thread(target=lambda: [rundir.update_manifest(run, bump) for _ in range(10)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rundir.load_manifest(run)["stages"]["count"]["n"] == 40


def test_bad_manifests(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "stages": {}}))
    with pytest.raises(RunDirError, match="schema_version 99"):
        rundir.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="not a manifest"):
        rundir.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(RunDirError, match="not valid JSON"):
        rundir.update_manifest(tmp_path, lambda m: None)


def test_versions():
    from edgekit.runtimes import RUNTIME_DISTS
    v = rundir.versions(RUNTIME_DISTS)
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    assert v["tensorflow"] == metadata.version("tensorflow") and v["tf-keras"] == metadata.version("tf-keras")
    assert v["numpy"] == np.__version__ and v["edgekit"] == "0.1.0"
    assert isinstance(v["cpu"], str) and v["cpu"] and v["cpu_count"] >= 1
    json.dumps(v)  # it goes into manifest.json and results.json as is


def test_utc_now_is_parseable():
    import datetime as dt

    t = dt.datetime.fromisoformat(rundir.utc_now())
    assert t.tzinfo is not None and math.isclose(t.timestamp(), dt.datetime.now(dt.timezone.utc).timestamp(), abs_tol=5)


def test_out_below_a_regular_file_is_the_users_error_with_path_and_reason(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    for out in (blocker / "run", blocker / "deeper" / "run"):
        with pytest.raises(RunDirError) as err:
            rundir.update_manifest(out, lambda m: None)
        msg = str(err.value)
        assert str(out) in msg and f"{blocker} is a file" in msg and "--out" in msg
    with pytest.raises(RunDirError, match="a file with that name is in the way"):
        rundir.make_dir(blocker)
    assert blocker.read_text() == "a file, not a folder"  # nothing was written over the user's file


def test_manifest_accessors_read_without_creating():
    m = {"stages": {"train": {"models": {"cnn": {"accuracy": 0.9}}}, "bench": "not a dict"}}
    assert rundir.section(m, "train")["models"]["cnn"]["accuracy"] == 0.9
    assert rundir.section(m, "export") == {} and "export" not in m["stages"]
    assert rundir.section(m, "bench") == {}               # a damaged section reads as absent
    assert rundir.section({}, "train") == {} and rundir.section({"stages": []}, "train") == {}
    assert rundir.model_records(m, "train") == {"cnn": {"accuracy": 0.9}}
    assert rundir.model_record(m, "train", "cnn") == {"accuracy": 0.9}
    assert rundir.model_record(m, "train", "mlp") == {} and rundir.model_record(m, "export", "cnn") == {}
