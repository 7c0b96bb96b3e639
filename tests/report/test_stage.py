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

from edgekit.runtimes import RUNTIME_DISTS

from edgekit.core import rundir
from edgekit.cli import main
from edgekit.errors import RunDirError
from edgekit.gate.check import check_run
from edgekit.report.plots import PLOTS
from edgekit.report.stage import render_report
from gate.test_check import VARIANTS, bench_record, build_run, time_blocks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    run = build_run(tmp_path_factory.mktemp("report") / "run", broken={"onnx-int8-ptq": "coarse"})
    check_run(run)  # check.json: the verdict the report shows
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
    parity = md.split("<summary>Export parity</summary>")[1].split("</details>")[0]
    v = manifest["stages"]["export"]["models"]["lin"]["variants"]["tflite-int8-ptq"]
    line = next(r for r in parity.splitlines() if "| tflite-int8-ptq |" in r)
    assert f"| {v['file']['size_bytes'] / 1024:.1f} |" in line and "| 0.259 |" in line
    # the broken variant's gate failure is in the report, by how much
    verdict = md.split("### Verdict")[1].split("###")[0]
    assert "Gate FAILED" in verdict and "lin onnx-int8-ptq" in verdict
    gate = md.split("### Gate details")[1].split("###")[0]
    assert "onnx-int8-ptq" in gate and "max_accuracy_drop" in gate and "over by" in gate
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
    assert "Gate not evaluated" in md  # nothing to judge without an export
    assert "### Files" not in md and "Export parity" not in md
    assert all((run / "plots" / f"{stem}.png").exists() for stem in PLOTS)


def test_no_measurements_leaves_no_stale_plots(rendered, tmp_path):
    run = shutil.copytree(rendered, tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    for rec in results["records"]:
        rec.update(status="failed", error="killed")
    rundir.atomic_write_json(run / "results.json", results)
    check_run(run)  # check.json: the verdict the report shows
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

    from edgekit.report.plots import _latency_axis

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
    from edgekit.core.data import to_float
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
    # the bench's secondary option sets are scored on fewer images (bench.SECONDARY_SAMPLES): here
    # LiteRT's builtin kernels on the first 100 of the 200, as a real run's xnnpack=off rows are
    fmt, cls, rel = files["tflite-fp32"]
    session = runtime_for(run / rel).open(run / rel, threads=1, xnnpack=False)
    out = session.predict(x[:100])
    all_ms, p50s = time_blocks(session.bind(session.prepare(x[:1])), repeats=5, runs=20)
    rec = bench_record("cnn", "tflite-fp32", fmt, cls, 1, (run / rel).stat().st_size,
                       float(np.mean(out.argmax(1) == y[:100])), float(np.mean(out.argmax(1) == ref.argmax(1)[:100])),
                       100, all_ms, p50s)
    rec.update(runtime="litert", runtime_options={"xnnpack": False})
    records.append(rec)
    rundir.atomic_write_json(run / "results.json", {"schema_version": 1, "created_utc": rundir.utc_now(),
                                                    "environment": rundir.versions(RUNTIME_DISTS), "settings": {"repeats": 5},
                                                    "records": records})
    check_run(run)  # check.json: the verdict the report shows
    render_report(run)
    return run


def test_report_of_a_real_export(measured_export):
    md = (measured_export / "report.md").read_text()
    summary = md.split("### Latency and accuracy (batch 1, 1 thread)")[1].split("###")[0]
    assert "| cnn | keras-fp32 | keras t1 b1 |" in summary
    for v in ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq", "tflite-int8-qat"):
        assert f"| cnn | {v} | litert xnnpack=on t1 b1 |" in summary
    for v in ("onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat"):
        assert f"| cnn | {v} | onnxruntime graph_optimization=all t1 b1 |" in summary
    parity = md.split("<summary>Export parity</summary>")[1].split("</details>")[0]
    assert parity.count("| cnn |") == 8 and parity.count("| ok |") == 8
    result = check_run(measured_export)
    verdict = md.split("### Verdict")[1].split("###")[0]
    assert ("Gate PASSED" in verdict) == result.passed and f"{len(result.rows)} checks" in verdict
    files = md.split("### Files")[1].split("###")[0]
    assert files.count("| cnn |") == 8  # one row per exported file
    page = (measured_export / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    for stem in PLOTS:
        _png_size((measured_export / "plots" / f"{stem}.png").read_bytes())
    # one accuracy column, two image sets: every row says how many images it was scored on
    header = next(line for line in summary.splitlines() if line.startswith("| model |"))
    assert "| images |" in header
    off = next(line for line in summary.splitlines() if "| litert xnnpack=off t1 b1 |" in line)
    on = next(line for line in summary.splitlines() if "| cnn | tflite-fp32 | litert xnnpack=on t1 b1 |" in line)
    assert "| 100 |" in off and "| 200 |" in on


# ------------------------------------------------------------------ what a user sees first

def _section(md: str, title: str) -> str:
    return md.split(f"### {title}")[1].split("\n### ")[0]


def test_html_opens_with_verdict_then_cpu_then_files_then_plots(rendered):
    page = (rendered / "report.html").read_text()
    order = [page.index('<div class="verdict fail">'), page.index("CPU: "), page.index("<h2>Files</h2>"),
             page.index("<img ")]
    assert order == sorted(order)
    # bench settings are there, but folded
    settings = page.index("<summary><h2>Bench settings</h2></summary>")
    assert page.rfind("<details>", 0, settings) > page.rfind("</details>", 0, settings)
    assert "warmup_runs" in page[settings:page.index("</details>", settings)]
    # every table scrolls inside its own box rather than widening the page
    assert page.count("<table>") == page.count('<div class="scroll"><table>') > 0
    md = (rendered / "report.md").read_text()
    assert md.index("### Verdict") < md.index("### Machine") < md.index("### Files") < md.index("### Latency")
    assert "<details><summary>Bench settings</summary>" in md


def test_files_table_has_one_row_per_file_with_the_gate_verdict(rendered):
    md = (rendered / "report.md").read_text()
    files = _section(md, "Files")
    rows = {line.split(" | ")[1]: line for line in files.splitlines() if line.startswith(("| lin |", "| **lin** |"))}
    assert sorted(rows) == sorted(VARIANTS)
    result = check_run(rendered)
    for variant, line in rows.items():
        failed = [r.check for r in result.rows if r.variant == variant and not r.passed]
        assert line.split(" | ")[2] == ("FAIL" if failed else "pass")
        assert all(check in line for check in failed)
    assert "max_accuracy_drop: over by" in rows["onnx-int8-ptq"]


def test_failed_and_skipped_variants_keep_a_row_with_their_reason(rendered, tmp_path):
    run = shutil.copytree(rendered, tmp_path / "run")
    m = rundir.load_manifest(run)
    variants = m["stages"]["export"]["models"]["lin"]["variants"]
    error = ("ConversionError: the converter rejected the model because " + "a very long reason " * 20).strip()
    variants["onnx-int8-ptq"].update(status="failed", error=error + "\nTraceback (most recent call last): ...",
                                     file=None, files=[], parity=None, audit=None)
    variants["tflite-int8-ptq"].update(status="skipped", error="needs calibration data: pass --calibration-data",
                                       file=None, files=[], parity=None, audit=None)
    (run / "export" / "lin" / "onnx-int8-ptq.onnx").unlink()
    rundir.atomic_write_json(run / rundir.MANIFEST, m)
    check_run(run)  # check.json: the verdict the report shows
    render_report(run)
    md = (run / "report.md").read_text()
    files = _section(md, "Files")
    failed = next(line for line in files.splitlines() if "| onnx-int8-ptq |" in line)
    skipped = next(line for line in files.splitlines() if "| tflite-int8-ptq |" in line)
    assert "| FAIL |" in failed and "export failed: ConversionError" in failed and "Traceback" not in failed
    assert error[:300] in failed  # the whole first line, not a 200-character stub
    assert "| FAIL |" in skipped and "export skipped: needs calibration data" in skipped
    assert "Gate FAILED" in _section(md, "Verdict")
    page = (run / "report.html").read_text()
    assert f'<td class="wrap">export failed: {error[:60]}' in page  # long errors wrap in their cell


def test_cpu_from_machine_record_or_older_environment_or_nothing(rendered, tmp_path):
    """results.json "machine" (edgekit.core.machine.describe()), else the older environment.cpu* fields,
    else "unknown": the report renders in all three cases."""
    for name, change in (("new", lambda r: None),
                         ("old", lambda r: r.pop("machine", None)),
                         ("none", lambda r: (r.pop("machine", None), r.update(environment={})))):
        run = shutil.copytree(rendered, tmp_path / name)
        data = json.loads((run / "results.json").read_text())
        change(data)
        rundir.atomic_write_json(run / "results.json", data)
        check_run(run)  # check.json: the verdict the report shows
        render_report(run)
        cpu = _section((run / "report.md").read_text(), "Machine")
        env, m = data.get("environment") or {}, data.get("machine")
        if name == "new":
            assert f"CPU: {m['cpu_model']}" in cpu and f"class {m['cpu_class']}" in cpu
            assert f"int8 flags: {' '.join(m['int8_flags'])}" in cpu
            assert ("with int8 dot-product" if m["int8_dot_product"] else "no int8 dot-product") in cpu
        elif name == "old":
            assert f"CPU: {env['cpu']}" in cpu and f"class {env['cpu_class']}" in cpu
            assert f"int8 flags: {' '.join(env['cpu_flags'])}" in cpu
        else:
            assert "CPU: unknown CPU" in cpu and "class unknown" in cpu and "int8 flags: not recorded" in cpu


def test_int8_against_fp32_says_which_is_faster_and_names_the_fastest_passing_file(rendered):
    """Whichever way this machine's timings fall, the sentence must match results.json."""
    results = json.loads((rendered / "results.json").read_text())
    at1 = [r for r in results["records"] if r["batch"] == 1 and r["threads"] == 1 and r["format"] != "keras"]
    i8 = min((r for r in at1 if r["variant_class"].startswith("int8")), key=lambda r: r["p50_ms"])
    fp = min((r for r in at1 if r["variant_class"] == "float"), key=lambda r: r["p50_ms"])
    failing = {r.variant for r in check_run(rendered).rows if not r.passed}
    best = min((r for r in at1 if r["variant"] not in failing), key=lambda r: r["p50_ms"])
    line = next(x for x in _section((rendered / "report.md").read_text(), "Machine").splitlines()
                if x.startswith("- lin:"))
    assert ("int8 is SLOWER than fp32" in line) == (i8["p50_ms"] > fp["p50_ms"])
    assert f"`{i8['variant']}`" in line and f"`{fp['variant']}`" in line
    assert f"Fastest file that passes the gate: `{best['variant']}`" in line
    assert "onnx-int8-ptq" not in line.split("passes the gate")[1]  # the broken one fails the gate


def test_kernel_fidelity_and_saturation_are_shown_when_recorded(rendered, tmp_path):
    run = shutil.copytree(rendered, tmp_path / "run")
    m = rundir.load_manifest(run)
    v = m["stages"]["export"]["models"]["lin"]["variants"]["tflite-int8-ptq"]
    v["kernel_fidelity"] = {"runtime": "onnxruntime", "fast": "graph_optimization=all",
                            "reference": "graph_optimization=disable", "samples": 2000, "agreement": 0.9765,
                            "max_abs_diff": 2.18, "avoid": "ONNX Runtime graph optimizations on this CPU"}
    v["audit"]["saturation"] = {"encoding": "u8s8", "share": 0.0125, "overflowing_pairs": 5,
                                "pairs": 400, "affects_file": True}
    v["weight_bytes"] = 3000
    rundir.atomic_write_json(run / rundir.MANIFEST, m)
    check_run(run)  # check.json: the verdict the report shows
    render_report(run)
    md = (run / "report.md").read_text()
    row = next(line for line in _section(md, "Files").splitlines() if "| tflite-int8-ptq |" in line)
    assert "| 97.65 |" in row and "| 2.9 |" in row and "avoid ONNX Runtime graph optimizations" in row
    audit = next(line for line in _section(md, "int8 audit and kernel fidelity").splitlines()
                 if "| tflite-int8-ptq |" in line)
    assert "1.25% of pairs (5 of 400); affects this file" in audit and "| 2,000 / 2,000 |" in audit
    # absent everywhere else: rendered without them, no failure
    assert "| - |" in next(line for line in _section(md, "Files").splitlines() if "| tflite-fp32 |" in line)


def test_verdict_comes_from_check_json_and_a_stale_one_is_not_shown(rendered, tmp_path):
    """The report reads the gate from check.json (written by check); once results.json changes,
    that verdict no longer describes the run and the report says to run the gate again."""
    run = shutil.copytree(rendered, tmp_path / "run")
    gate = json.loads((run / "check.json").read_text())
    assert gate["passed"] is False and gate["profile"] and {"model", "variant", "check", "value", "limit", "passed",
                                                            "note", "runtime", "measured", "compared",
                                                            "noisy"} <= set(gate["rows"][0])
    assert "Gate FAILED" in _section((run / "report.md").read_text(), "Verdict")
    results = json.loads((run / "results.json").read_text())
    results["records"][0]["p50_ms"] *= 2
    rundir.atomic_write_json(run / "results.json", results)
    render_report(run)
    verdict = _section((run / "report.md").read_text(), "Verdict")
    assert "Gate not evaluated" in verdict and "edgekit check" in verdict
    assert main(["report", "--run", str(run)]) == 0  # the CLI runs the gate first, then the report
    assert "Gate FAILED" in _section((run / "report.md").read_text(), "Verdict")
    assert rundir.load_manifest(run)["stages"]["report"]["files"][0]["path"] == "report.md"
