"""report.md / report.html / plots/*.png rendered from real run directories (see test_check.build_run)."""
from __future__ import annotations

import base64
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from edgekit import rundir
from edgekit.cli import main
from edgekit.errors import RunDirError
from edgekit.report import PLOTS, render_report
from test_check import VARIANTS, bench_record, build_run, time_blocks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    run = build_run(tmp_path_factory.mktemp("report") / "run", broken={"onnx-int8-ptq": "coarse"})
    assert render_report(run) == run / "report.html"
    return run


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs(rendered):
    import matplotlib.image as mpimg

    for stem in PLOTS:
        path = rendered / "plots" / f"{stem}.png"
        width, height = _png_size(path.read_bytes())
        assert 400 <= width <= 3000 and 200 <= height <= 4000
        pixels = mpimg.imread(path)  # decodes: not just a header
        assert pixels.shape[:2] == (height, width)
        assert pixels[..., :3].std() > 0.05  # something is drawn on the white canvas


def test_html_is_self_contained_with_every_plot_embedded(rendered):
    page = (rendered / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [alt for alt, _ in images] == list(PLOTS.values())
    for (alt, b64), stem in zip(images, PLOTS):
        assert base64.b64decode(b64) == (rendered / "plots" / f"{stem}.png").read_bytes()
    # nothing fetched from elsewhere: no external scripts, stylesheets, images or fonts
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<link" not in page and "<script" not in page and "@import" not in page and "url(" not in page
    assert "<style>" in page and page.rstrip().endswith("</html>")


def test_markdown_tables_carry_the_measured_figures(rendered):
    md = (rendered / "report.md").read_text()
    results = json.loads((rendered / "results.json").read_text())
    manifest = json.loads((rendered / rundir.MANIFEST).read_text())
    summary = md.split("### Latency and accuracy (batch 1, 1 thread)")[1].split("###")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| lin |")]
    assert len(rows) == 1 + len(VARIANTS)  # the Keras reference and every variant, batch 1 only
    for rec in results["records"]:
        if rec["batch"] == 1:
            cells = next(r for r in rows if f"| {rec['variant']} |" in r).split(" | ")
            assert cells[3] == f"{100 * rec['accuracy']:.2f}"
            assert float(cells[6]) == pytest.approx(rec["p50_ms"], rel=5e-3)
    parity = md.split("### Export parity")[1].split("###")[0]
    v = manifest["stages"]["export"]["models"]["lin"]["variants"]["tflite-int8-ptq"]
    line = next(r for r in parity.splitlines() if "| tflite-int8-ptq |" in r)
    assert f"| {v['file']['size_bytes'] / 1024:.1f} |" in line and "| 0.259 |" in line
    # the broken variant's gate failure is in the report, by how much
    gate = md.split("### Gate")[1].split("###")[0]
    assert "FAILED" in gate and "onnx-int8-ptq" in gate and "max_accuracy_drop" in gate and "over by" in gate
    assert "<details><summary>All measurements (12)</summary>" in md


def test_report_without_manifest_and_with_failed_records(rendered, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    results = json.loads((rendered / "results.json").read_text())
    results["records"][3].update(status="failed", error="RuntimeError: delegate refused the model\nstack")
    rundir.atomic_write_json(run / "results.json", results)
    assert main(["report", "--run", str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    md = (run / "report.md").read_text()
    assert "### Failed measurements" in md and "delegate refused the model" in md and "stack" not in md
    assert "### Gate" not in md and "### Export parity" not in md  # nothing to say without an export
    assert all((run / "plots" / f"{stem}.png").exists() for stem in PLOTS)


def test_no_measurements_leaves_no_stale_plots(rendered, tmp_path):
    run = shutil.copytree(rendered, tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    for rec in results["records"]:
        rec.update(status="failed", error="killed")
    rundir.atomic_write_json(run / "results.json", results)
    render_report(run)
    assert not (run / "plots" / "accuracy_latency.png").exists()
    assert not (run / "plots" / "latency_runtime.png").exists()
    assert (run / "plots" / "size_variant.png").exists()  # sizes come from the manifest too
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1


def test_missing_results_says_to_run_bench(tmp_path):
    with pytest.raises(RunDirError, match="edgekit bench"):
        render_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 99, "records": []}))
    with pytest.raises(RunDirError, match="schema_version 99"):
        render_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_latency_axis_is_log_only_for_wide_ranges():
    """Eager Keras (~30 ms) next to LiteRT (~0.3 ms) needs a log axis; close figures read better linear."""
    from matplotlib.figure import Figure

    from edgekit.report import _latency_axis

    wide, close = Figure().add_subplot(), Figure().add_subplot()
    assert _latency_axis(wide, [0.3, 0.5, 31.0], bars=True) == ", log scale"
    assert _latency_axis(close, [0.3, 0.5, 0.9], bars=True) == ""
    assert wide.get_xscale() == "log" and close.get_xscale() == "linear"
    assert close.get_xlim()[0] == 0 and close.get_xlim()[1] > 0.9


# ------------------------------------------------------------------ a real export, measured with edgekit's runtimes

@pytest.fixture(scope="module")
def measured_export(exported_run, synthetic, tmp_path_factory) -> Path:
    """conftest's exported_run plus a results.json measured here: every exported file on its
    runtime (LiteRT, ONNX Runtime) and the Keras model, batch 1, 1 thread, 5 repeat blocks."""
    from conftest import copy_run
    from edgekit.data import to_float
    from edgekit.runtimes import runtime_for

    run = copy_run(exported_run, tmp_path_factory.mktemp("measured") / "run")
    m = rundir.load_manifest(run)
    x, y = to_float(synthetic.x_test[:200]), synthetic.y_test[:200]
    files = {"keras-fp32": ("keras", "float", m["stages"]["train"]["models"]["cnn"]["model"])}
    for vname, v in m["stages"]["export"]["models"]["cnn"]["variants"].items():
        if v.get("file"):  # a variant whose conversion failed has nothing to time
            files[vname] = (v["format"], v["variant_class"], v["file"]["path"])
    records, ref = [], None
    for vname, (fmt, cls, rel) in files.items():
        rt = runtime_for(run / rel)
        session = rt.open(run / rel, threads=1)
        out = session.predict(x)
        ref = out if ref is None else ref  # keras-fp32 comes first
        all_ms, p50s = time_blocks(session.bind(session.prepare(x[:1])), repeats=5, runs=20)
        rec = bench_record("cnn", vname, fmt, cls, 1, (run / rel).stat().st_size, float(np.mean(out.argmax(1) == y)),
                      float(np.mean(out.argmax(1) == ref.argmax(1))), len(y), all_ms, p50s)
        rec.update(runtime=rt.name, runtime_options={k: v[0] for k, v in rt.options.items()})
        records.append(rec)
    rundir.atomic_write_json(run / "results.json", {"schema_version": 1, "created_utc": rundir.utc_now(),
                                                    "environment": rundir.versions(), "settings": {"repeats": 5},
                                                    "records": records})
    render_report(run)
    return run


def test_report_of_a_real_export(measured_export):
    md = (measured_export / "report.md").read_text()
    summary = md.split("### Latency and accuracy (batch 1, 1 thread)")[1].split("###")[0]
    assert "| cnn | keras-fp32 | keras |" in summary
    for v in ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq", "tflite-int8-qat"):
        assert f"| cnn | {v} | litert xnnpack=on |" in summary
    for v in ("onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat"):
        assert f"| cnn | {v} | onnxruntime graph_optimization=all |" in summary
    parity = md.split("### Export parity")[1].split("###")[0]
    assert parity.count("| cnn |") == 8 and parity.count("| ok |") == 8
    assert "### Gate" in md and "PASSED" in md.split("### Gate")[1].split("###")[0]
    page = (measured_export / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    for stem in PLOTS:
        _png_size((measured_export / "plots" / f"{stem}.png").read_bytes())
