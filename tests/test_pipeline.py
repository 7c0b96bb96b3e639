"""`edgekit run` end to end on synthetic data, including a run killed mid-stage and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgekit.core import rundir
from edgekit.cli import main

RUN_ARGS = ["run", "--quick", "--dataset", "synthetic", "--network", "mlp,cnn", "--epochs", "3"]


def _manifest(run: Path) -> dict:
    try:
        return json.loads((run / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _ok_variants(m: dict) -> dict:
    out = {}
    for net, rec in m.get("stages", {}).get("export", {}).get("models", {}).items():
        for vname, v in rec.get("variants", {}).items():
            if v.get("status") == "ok":
                out[(net, vname)] = v
    return out


def _all_files(m: dict) -> list[dict]:
    files = []
    for section in m.get("stages", {}).values():
        files += section.get("files", [])
        for rec in section.get("models", {}).values():
            files += rec.get("files", [])
            files += (rec.get("qat") or {}).get("files", [])
            for v in rec.get("variants", {}).values():
                files += v.get("files", [])
    return files


def test_run_killed_mid_export_resumes_and_finishes(tmp_path, capsys):
    run = tmp_path / "run"
    env = dict(os.environ, EDGEKIT_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", *RUN_ARGS, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if _ok_variants(_manifest(run)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the test could interrupt its export stage"
        assert _ok_variants(_manifest(run)), "no variant finished within the deadline"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    before = _manifest(run)
    trained = {n: r["files"] for n, r in before["stages"]["train"]["models"].items()}
    finished = _ok_variants(before)
    assert set(trained) == {"mlp", "cnn"}

    code = main(RUN_ARGS + ["--out", str(run)])
    captured = capsys.readouterr()
    assert code in (0, 1)  # 1 only if the gate fails; the table says why
    after = _manifest(run)
    # finished work was reused, not redone
    for net, files in trained.items():
        assert after["stages"]["train"]["models"][net]["files"] == files
    for key, v in finished.items():
        assert _ok_variants(after)[key]["file"] == v["file"]
        assert _ok_variants(after)[key]["seconds"] == v["seconds"]
    assert "reused" in captured.err
    # every artifact the manifest lists exists and matches its hash
    files = _all_files(after)
    assert len(files) >= 10
    assert rundir.outputs_intact(run, files)
    for name in ("results.json", "results.csv", "check.json", "report.md", "report.html", "summary.txt"):
        assert (run / name).is_file(), name
    # the summary table and the report path are printed
    assert "fastest runtime" in captured.out and "report.html" in captured.out
    # the Keras row is scored on the same test images as the variants (a subset under --quick)
    for net, rec in after["stages"]["export"]["models"].items():
        keras_row = next(line for line in captured.out.splitlines() if line.split()[:2] == [net, "keras-fp32"])
        assert keras_row.split()[3] == f"{rec['float_accuracy']:.4f}"
    assert f"on {after['stages']['export']['data']['samples']} images" in captured.out
    assert code == 0, captured.out[-3000:]

    # a second run reuses everything, including the bench results
    t0 = time.monotonic()
    assert main(RUN_ARGS + ["--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "results.json is current" in err
    assert _manifest(run)["stages"]["bench"]["files"] == after["stages"]["bench"]["files"]
    assert time.monotonic() - t0 < 60
