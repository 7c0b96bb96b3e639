"""The package as users get it: a wheel that is a complete install, subprocess entry points that
start after the layout move, and a run directory made by the flat layout (0.1) that still works."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import copy_run

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_RUN = ROOT / "tests" / "fixtures" / "run_v0_1"


def _env() -> dict:
    """The environment minus anything that would put the source tree on the child's path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEKIT_PROFILES")}


def test_a_wheel_is_a_complete_install(tmp_path):
    """Build the wheel from a copy of the source, install it (not editable, no dependencies) into a
    fresh virtualenv that borrows this one's dependencies through a .pth line, then run the
    installed `edgekit export --help` and load every profile from the installed package data."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("edgekit", "export", "pyproject.toml", "README.md"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, src / name, **(
            {"symlinks": True, "ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("edgekit-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # numpy etc., no edgekit
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                           str(wheel)], capture_output=True, text=True, cwd=tmp_path)
    if inst.returncode != 0 and "no such option: --python" in inst.stderr:
        pytest.skip("this pip cannot install into another interpreter (--python needs pip >= 22.3)")
    assert inst.returncode == 0, inst.stderr
    where = subprocess.run([str(py), "-c", "import edgekit; print(edgekit.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=_env())
    assert where.returncode == 0 and where.stdout.strip().startswith(str(site)), (where.stdout, where.stderr)
    helped = subprocess.run([str(venv / "bin" / "edgekit"), "export", "--help"], capture_output=True, text=True,
                            cwd=tmp_path, env=_env())
    assert helped.returncode == 0 and "--profile" in helped.stdout, helped.stderr
    shipped = sorted(p.stem for p in (ROOT / "export").glob("*.toml"))
    code = ("import json\nfrom edgekit.core.config import available_profiles, load_profile, profiles_dir\n"
            "names = available_profiles()\n"
            "print(json.dumps([str(profiles_dir()), names, [load_profile(n).name for n in names]]))")
    loaded = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env())
    assert loaded.returncode == 0, loaded.stderr
    folder, names, profiles = json.loads(loaded.stdout)
    assert folder.startswith(str(site)) and names == shipped and profiles == shipped


def _module(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", name, *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=300)


def test_every_subprocess_entry_point_starts(tmp_path):
    """The bench worker, the emulation runner and the contained export worker, started as the
    stages start them (`python -m ...` from another folder), each do real work."""
    from edgekit.bench.job import BenchJob

    job = tmp_path / "job.json"
    job.write_text(BenchJob("onnxruntime", (), {}, ({},), (1,), (1,), None, False, 1, (None,), 1).to_json())
    bench = _module("edgekit.bench.worker", str(job), cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    assert [json.loads(line)["type"] for line in bench.stdout.splitlines()] == ["ready"]

    features = _module("edgekit.verify.emulation", "--features", cwd=tmp_path)
    assert features.returncode == 0, features.stderr
    assert isinstance(json.loads(features.stdout), dict)

    from edgekit.core.config import load_profile, profile_to_dict

    work = tmp_path / "contained"
    work.mkdir()
    (work / "job.json").write_text(json.dumps({
        "model": str(tmp_path / "missing.keras"), "out": str(tmp_path / "out"), "calibration": None,
        "profile": profile_to_dict(load_profile("default")), "force": False, "quiet": True}))
    worker = _module("edgekit.export.contained_worker", str(work / "job.json"), cwd=tmp_path)
    assert worker.returncode == 1, worker.stderr
    error = json.loads((work / "result.json").read_text())["error"]
    assert "missing.keras" in error["message"], error
    for name in ("edgekit.bench.worker", "edgekit.verify.emulation", "edgekit.export.contained_worker"):
        usage = _module(name, cwd=tmp_path)
        assert usage.returncode == 2 and "usage: python -m " + name in usage.stderr, (name, usage.stderr)


def test_a_run_directory_made_before_the_layout_still_passes_and_resumes(tmp_path):
    """tests/fixtures/run_v0_1 was made by the flat layout (tests/fixtures/make_run_v0_1.py): it
    still passes `edgekit check`, and export and bench resume on it (re-doing only what this
    machine's CPU or versions make stale) and it passes again."""
    from edgekit.bench import bench_run
    from edgekit.cli import main
    from edgekit.core.config import profile_from_dict
    from edgekit.core.progress import Progress
    from edgekit.export import export_run

    run = copy_run(FIXTURE_RUN, tmp_path / "run")
    assert main(["--quiet", "check", "--run", str(run)]) == 0
    before = json.loads((run / "manifest.json").read_text())["stages"]["export"]
    export_run(run, profile_from_dict(before["profile"]), progress=Progress(quiet=True))
    bench_run(run, runtimes=("litert", "onnxruntime"), quick=True, progress=Progress(quiet=True))
    assert main(["--quiet", "check", "--run", str(run)]) == 0
    after = json.loads((run / "manifest.json").read_text())["stages"]["export"]
    assert set(after["models"]["cnn"]["variants"]) == set(before["models"]["cnn"]["variants"])
    assert all(v["status"] == "ok" for v in after["models"]["cnn"]["variants"].values())
