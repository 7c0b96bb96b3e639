"""`edgekit report`: results.json (+ manifest.json) -> report.md, report.html and plots/*.png.

What a user needs first comes first: the gate's verdict, the CPU that measured everything (its
int8 kernels decide whether int8 is faster than fp32), then one row per exported file, failed
and skipped ones included. Details (plots, latency per runtime, int8 audit, export parity,
training, bench settings, every measurement) follow. report.md is tables only, so it pastes
into a pull request; report.html is one self-contained file (edgekit.report.markup) a CI job can
upload as an artifact. The plots come from edgekit.report.plots; the gate's verdict from the check.json
that `edgekit check` writes (edgekit.core.results), so run check first.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgekit.report import plots

from edgekit.core import rundir
from edgekit.report.markup import Figure, Section, Table, html_page, markdown_page
from edgekit.report.views import (
    fastest, float_accuracy, machine_of, record_order, records_at, reference_setting, setting_text, speed_findings,
    speed_sentence, format_speed_lines, judged_kernel_agreement, emulated_cells, saturation_cell, percent as _pct,
    variant_rank, variant_sizes)
from edgekit.core.results import GATE_FILE, CheckRow, load_results, read_gate, setting_label
from edgekit.runtimes import RUNTIMES
from edgekit.core.variants import Role, is_int8_class, keras_variant

PLOTS = plots.PLOTS
RUNTIMES_SHOWN = tuple(sorted(rt.dists[0] for rt in RUNTIMES.values() if rt.dists))  # versions in the header
Gate = dict[tuple[str, str], list[CheckRow]]  # (model, variant) -> that variant's rows in check.json


# ---------------------------------------------------------------- entry point

def render_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html and plots/*.png from the run's results; return report.html."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    manifest = rundir.load_manifest(run_dir)
    ok = [r for r in results["records"] if r.get("status") == "ok"]
    setting = reference_setting(ok)

    pngs = {"accuracy_latency": plots.plot_accuracy_latency(ok, setting, float_accuracy(manifest)),
            "latency_runtime": plots.plot_latency_runtime(ok, setting),
            "size_variant": plots.plot_size_variant(variant_sizes(manifest, results["records"]))}
    for stem, data in pngs.items():
        path = run_dir / "plots" / f"{stem}.png"
        if data is None:
            path.unlink(missing_ok=True)  # no data for it this time: no stale plot from an older run
        else:
            rundir.atomic_write_bytes(path, data)
    figures = [Figure(stem, PLOTS[stem], data) for stem, data in pngs.items() if data is not None]

    sections = report_sections(run_dir, results, manifest)
    title = "edgekit report"
    rundir.atomic_write_text(run_dir / "report.md", markdown_page(title, sections, figures))
    html_path = run_dir / "report.html"
    rundir.atomic_write_text(html_path, html_page(f"{title}: {run_dir.name}", sections, figures))
    if (run_dir / rundir.MANIFEST).exists():  # its own section: re-rendering never makes the results look stale
        files = [rundir.file_record(run_dir, run_dir / n) for n in ("report.md", "report.html")]

        def put(m: dict) -> None:
            rundir.stage(m, "report").update({"status": "ok", "files": files, "finished_utc": rundir.utc_now()})
        rundir.update_manifest(run_dir, put)
    return html_path


def report_sections(run_dir: Path, results: dict, manifest: dict) -> list[Section]:
    """What the report says, in reading order."""
    ok = [r for r in results["records"] if r.get("status") == "ok"]
    setting = reference_setting(ok)
    verdict, gate = _verdict(run_dir, manifest)
    passing = None if gate is None else {k for k, rows in gate.items() if all(r.passed for r in rows)}
    sections = [verdict, _machine(results, ok, setting, passing)]
    files = _files_table(manifest, ok, setting, gate)
    if files is not None:
        data = rundir.section(manifest, "export").get("data") or {}
        sections.append(Section(
            "Files", f"One row per exported file. Accuracy and agreement on the same {data.get('samples', '?')} "
            f"parity images for every row ({data.get('parity', 'test set')}); agreement is top-1 with the file's "
            "reference (the float Keras model, or the QAT model for *-int8-qat). Kernel agreement: the runtime's "
            "fast path against its reference path on the same file. Fastest p50: "
            + (f"{setting_text(setting)}." if setting else "not measured."), files))
    sections += _gate_details(gate)
    sections[-1] = _with_plots(sections[-1])
    sections += _latency_sections(ok, setting)
    audit = _int8_table(manifest)
    if audit is not None:
        sections.append(Section("int8 audit and kernel fidelity", "Integer share of the multiply-accumulates; the "
                                "runtime's fast kernels against the file's own graph, judged on the images whose "
                                "two best logits are more than two output steps apart (a heuristic band: kernels may "
                                "round each requantization one step apart; saturation moves logits by tens of steps); the share of weight pairs whose "
                                "VPMADDUBSW int16 sum could saturate on x86 without VNNI if the weights were U8S8 "
                                "(from the weights alone, on any CPU); and the same parity on emulated CPUs "
                                "(qemu-user, never timed) where the profile asks for them.", audit))
    export_table = _export_table(manifest)
    if export_table is not None:
        sections.append(Section("Export parity", "Each file against its source model on the parity set; drop is in "
                                "accuracy points below the float Keras model; size ratio against the fp32 file of "
                                "the same format.", export_table, folded=True))
    train_table = _train_table(manifest)
    if train_table is not None:
        sections.append(Section("Training", "Float Keras models; accuracy on the test set.", train_table))
    sections.append(Section("Bench settings", f"Run `{run_dir}`, measured {results.get('created_utc', '?')}.",
                            _settings_table(results), folded=True))
    sections += _all_measurements(results["records"], ok)
    return sections


def _with_plots(sec: Section) -> Section:
    return replace(sec, plots_after=True)


# ---------------------------------------------------------------- number formats

def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _kib(v) -> str:
    return "-" if v is None else f"{v / 1024:.1f}"


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _cell(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _first_line(text: str | None, limit: int = 600) -> str:
    """The first line of an error (the rest is usually a traceback), cut at `limit` characters."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


# ---------------------------------------------------------------- verdict and machine

def _verdict(run_dir: Path, manifest: dict) -> tuple[Section, Gate | None]:
    """The gate's verdict as `edgekit check` last wrote it (check.json), when it still describes
    this run's exports and results; and its rows per (model, variant)."""
    if not rundir.section(manifest, "export").get("profile"):
        return Section("Verdict", "Gate not evaluated: the run has no export stage with a profile."), None
    result = read_gate(run_dir)
    if result is None:
        return Section("Verdict", f"Gate not evaluated: no current {GATE_FILE} (the exports or results changed "
                                  f"since, or the gate never ran); run `edgekit check --run {run_dir}`."), None
    gate: Gate = {}
    for r in result.rows:
        if r.model != "-":
            gate.setdefault((r.model, r.variant), []).append(r)
    failed = [r for r in result.rows if not r.passed]
    bad_files = sorted({(r.model, r.variant) for r in failed}, key=lambda k: (k[0], variant_rank(k[1])))
    unmeasured = sum(not r.measured for r in result.rows)
    noisy = sum(r.noisy for r in result.rows)
    where = f"{len(gate)} files (profile {result.profile})"
    if result.passed:
        text = f"Gate PASSED: all {len(result.rows)} checks on {where}"
    else:
        text = (f"Gate FAILED: {len(failed)} of {len(result.rows)} checks on {len(bad_files)} of {where}: "
                + ", ".join(f"{m} {v}" for m, v in bad_files))
    if unmeasured:
        text += f"; {unmeasured} not measured (not failures)"
    if noisy:
        text += f"; {noisy} too noisy to judge"
    if result.baseline:
        text += f"; latency against baseline {result.baseline}"
    return Section("Verdict", text + ".", tone="pass" if result.passed else "fail"), gate


def _machine(results: dict, ok: list[dict], setting, passing) -> Section:
    m = machine_of(results)
    env = results.get("environment") or {}
    flags = m.get("int8_flags")
    dot = m.get("int8_dot_product")
    parts = [f"{m.get('cpu_model') or 'unknown CPU'}"
             + (f" ({m['cpu_count']} cores, {m.get('arch') or '?'})" if m.get("cpu_count") else ""),
             f"class {m.get('cpu_class') or 'unknown'}"
             + ("" if dot is None else f" ({'with' if dot else 'no'} int8 dot-product instructions)"),
             "int8 flags: " + (" ".join(flags) if flags else "none" if flags is not None else "not recorded")]
    versions = ", ".join(f"{k} {env[k]}" for k in RUNTIMES_SHOWN if env.get(k))
    text = "CPU: " + "; ".join(parts) + "." + (f" Runtimes: {versions}." if versions else "")
    cpu = m.get("cpu_class") or m.get("cpu_model") or "unknown CPU"
    lines = tuple(speed_sentence(f, cpu) for f in speed_findings(ok, setting, passing)) if setting else ()
    lines += tuple(format_speed_lines(ok, setting)) if setting else ()
    return Section("Machine", text, lines=lines)


# ---------------------------------------------------------------- one row per file

def _files_table(manifest: dict, ok: list[dict], setting, gate: Gate | None) -> Table | None:
    models = rundir.model_records(manifest, "export")
    if not models:
        return None
    t = Table(("model", "variant", "gate", "accuracy %", "agreement %", "kernel agreement %", "size KiB",
               "weights KiB", "fastest p50 ms", "fastest on", "failed check / reason"),
              numeric=(False, False, False, True, True, True, True, True, True, False, False),
              wrap=(False,) * 9 + (True, True))
    for net, m in sorted(models.items()):
        entries = list(sorted((m.get("variants") or {}).items(), key=lambda kv: variant_rank(kv[0])))
        qat = m.get("qat") or {}
        if qat and qat.get("status", "ok") != "ok":  # the QAT model failed: say so where its files would be
            entries.insert(0, (keras_variant(Role.QAT).name, qat))
        for vname, v in entries:
            rows = None if gate is None else gate.get((net, vname))
            status = v.get("status", "?")
            fid = v.get("kernel_fidelity") or {}
            best = fastest(ok, setting, lambda r: r["model"] == net and r["variant"] == vname) if setting else None
            if rows is not None:
                failed = [r for r in rows if not r.passed]
                verdict = "FAIL" if failed else "pass"
                reasons = [f"export {status}: {_first_line(v.get('error')) or 'no error recorded'}"
                           if r.check == "export" else  # the whole first line, not the gate's short note
                           f"{r.check}: {r.note or f'{_cell(r.value)} vs {_cell(r.limit)}'}"
                           + (f" ({r.runtime})" if r.runtime else "") for r in failed]
            else:
                failed = []
                verdict = status if status != "ok" else ("-" if gate is None else "not judged")
                reasons = [_first_line(v.get("error"))] if status != "ok" and v.get("error") else []
            if fid.get("avoid"):
                reasons.append(f"avoid {fid['avoid']}")
            p = v.get("parity") or {}
            if p.get("judged_by") == "output_error":   # near-tie outputs: agreement recorded, not judged
                snr = (p.get("output_error") or {}).get("snr_db")
                reasons.append("judged by output error" + ("" if snr is None else f" (SNR {snr:.1f} dB)")
                               + ": reference outputs are near ties")
            size = (v.get("file") or {}).get("size_bytes")
            t.add(net, vname, verdict, _pct(p.get("accuracy")), _pct(p.get("agreement")), _pct(judged_kernel_agreement(fid)),
                  _kib(size), _kib(_weight_bytes(v)), _ms(best["p50_ms"]) if best else "-",
                  setting_label(best) if best else "-", "; ".join(x for x in reasons if x) or "-",
                  bad=bool(failed) or status != "ok")
    return t


def _weight_bytes(v: dict) -> int | None:
    w = v.get("weight_bytes", (v.get("file") or {}).get("weight_bytes"))
    return w if isinstance(w, int) and not isinstance(w, bool) else None


def _gate_details(gate: Gate | None) -> list[Section]:
    """Every check that did not plainly pass, with its value, limit and by how much."""
    rows = [r for rows in (gate or {}).values() for r in rows if r.status != "ok"]
    if not rows:
        return []
    t = Table(("status", "model", "variant", "runtime", "check", "value", "limit", "by how much / why"),
              wrap=(False,) * 7 + (True,))
    for r in rows:
        t.add(r.status, r.model, r.variant, r.runtime or "-", r.check, _cell(r.value), _cell(r.limit), r.note or "-",
              bad=not r.passed)
    return [Section("Gate details", "The checks that failed, were too noisy to judge, or could not be measured.", t)]


# ---------------------------------------------------------------- measurements

def _image_note(rows: list[dict]) -> tuple[bool, str]:
    """(show an images column, note): one accuracy column must not mix image sets silently."""
    counts = {r.get("samples") for r in rows if r.get("accuracy") is not None or r.get("agreement") is not None}
    if len(counts) > 1:
        return True, "Rows are scored on different numbers of images (see images): compare accuracy within equal counts."
    n = next(iter(counts), None)
    return False, (f"Every row scored on the same first {n} test images." if n else "")


def _latency_sections(ok: list[dict], setting) -> list[Section]:
    if setting is None:
        return []
    rows = records_at(ok, setting)
    images, note = _image_note(rows)
    ext = next((r for r in rows if "inputs" in r), None)  # files `edgekit bench --model` measured
    head = ("model", "variant", "runtime", "accuracy %", "agreement %", *(("max abs diff",) * bool(ext)),
            *(("images",) * images), "size KiB", "p50 ms", "p90 ms", "img/s")
    t = Table(head, numeric=(False, False, False, *(True,) * (len(head) - 3)))
    for r in rows:
        t.add(r["model"], r["variant"], setting_label(r), _pct(r.get("accuracy")), _pct(r.get("agreement")),
              *((_num(r.get("max_abs_diff"), ".3g"),) * bool(ext)), *((_num(r.get("samples"), ",d"),) * images),
              _kib(r.get("size_bytes")), _ms(r.get("p50_ms")), _ms(r.get("p90_ms")), _num(r.get("throughput_ips"), ",.0f"))
    about = (f"Files made elsewhere, fed {ext['inputs']}; agreement (top-1) and max abs diff are against "
             f"{ext.get('reference') or 'no reference (none given)'}." if ext else
             f"Agreement is top-1 agreement with the float Keras model on the same images. {note}")
    return [Section(f"Latency and accuracy ({setting_text(setting)})", about, t)]


def _all_measurements(records: list[dict], ok: list[dict]) -> list[Section]:
    images, note = _image_note(ok)
    head = ("model", "variant", "runtime", "accuracy %", *(("images",) * images), "p50 ms", "p90 ms", "p99 ms",
            "img/s", "runs", "peak RSS MB")
    full = Table(head, numeric=(False, False, False, *(True,) * (len(head) - 3)))
    for r in sorted(ok, key=record_order):
        full.add(r["model"], r["variant"], setting_label(r), _pct(r.get("accuracy")),
                 *((_num(r.get("samples"), ",d"),) * images), _ms(r.get("p50_ms")), _ms(r.get("p90_ms")),
                 _ms(r.get("p99_ms")), _num(r.get("throughput_ips"), ",.0f"), _num(r.get("runs"), "d"),
                 _num(r.get("peak_rss_mb"), ".0f"))
    out = [Section(f"All measurements ({len(ok)})", "p50/p90/p99 over every timed run; throughput in images per "
                   f"second at the p50. {note}", full, folded=True)]
    # records of files export failed or skipped (stage "export") have their row in Files
    failed = [r for r in records if r.get("status") != "ok" and r.get("stage", "bench") != "export"]
    if failed:
        t = Table(("model", "variant", "runtime", "status", "error"), wrap=(False,) * 4 + (True,))
        for r in sorted(failed, key=record_order):
            t.add(r.get("model"), r.get("variant"), setting_label(r), r.get("status"),
                  _first_line(r.get("error")) or "-", bad=True)
        out.append(Section("Failed measurements", "Settings the bench could not measure.", t))
    return out


def _settings_table(results: dict) -> Table:
    t = Table(("setting", "value"), wrap=(False, True))
    for k, v in (results.get("settings") or {}).items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {b}" for a, b in v.items())
        elif isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        t.add(k, v)
    env = results.get("environment") or {}
    t.add("versions", ", ".join(f"{k} {v}" for k, v in env.items() if v is not None and k not in
                                ("platform", "machine", "cpu", "cpu_count", "cpu_flags", "cpu_class")))
    t.add("platform", env.get("platform"))
    return t


# ---------------------------------------------------------------- export details

def _int8_table(manifest: dict) -> Table | None:
    t = Table(("model", "variant", "encoding", "int8 MACs", "audit", "kernel check", "images judged / all",
               "kernel agreement %", "all-image kernel agreement %", "kernel max diff (steps)", "U8S8 saturation",
               "emulated CPUs: agreement / kernel agreement %", "note"),
              numeric=(False, False, False, True, False, False, True, True, True, True, False, False, False),
              wrap=(False,) * 5 + (True, False, False, False, False, True, True, True))
    for net, m in sorted(rundir.model_records(manifest, "export").items()):
        for vname, v in sorted((m.get("variants") or {}).items(), key=lambda kv: variant_rank(kv[0])):
            if not is_int8_class(v.get("variant_class")) or not v.get("file"):
                continue
            audit = v.get("audit") or {}
            fid = v.get("kernel_fidelity") or {}
            sat = audit.get("saturation") or {}
            encoding = v.get("onnx_int8_encoding") or fid.get("encoding") or sat.get("encoding") or "-"
            kernel = f"{fid.get('runtime')} {fid.get('fast')} vs {fid.get('reference')}" if fid else "-"
            note = [f"avoid {fid['avoid']}"] if fid.get("avoid") else []
            if audit and not audit.get("passed"):
                note.append(audit.get("reason") or "the int8 audit did not pass")
            t.add(net, vname, encoding, _num(audit.get("integer_mac_fraction"), ".3f"),
                  "-" if not audit else "passed" if audit.get("passed") else "FAILED", kernel,
                  f"{_num(fid.get('decisive_samples', fid.get('samples')), ',d')} / {_num(fid.get('samples'), ',d')}",
                  _pct(judged_kernel_agreement(fid)), _pct(fid.get("agreement")),
                  _num(fid.get("max_abs_diff"), ".3g") + (f" ({fid['max_abs_diff_steps']:.3g})"
                                                          if fid.get("max_abs_diff_steps") is not None else ""),
                  saturation_cell(sat), emulated_cells(v), "; ".join(note) or "-", bad=bool(note))
    return t if t.rows else None


def _export_table(manifest: dict) -> Table | None:
    models = rundir.model_records(manifest, "export")
    if not models:
        return None
    t = Table(("model", "variant", "status", "size KiB", "x fp32", "reference", "agreement %", "max abs diff",
               "accuracy %", "drop points", "export checks"),
              numeric=(False, False, False, True, True, False, True, True, True, True, False),
              wrap=(False,) * 9 + (True, True))
    for net, m in sorted(models.items()):
        variants = m.get("variants", {})
        for vname in sorted(variants, key=variant_rank):
            v = variants[vname]
            size = (v.get("file") or {}).get("size_bytes")
            ref = ((variants.get(f"{v.get('format')}-fp32") or {}).get("file") or {}).get("size_bytes")
            p = v.get("parity") or {}
            checks = v.get("checks") or []
            failed = [c.get("name", "?") for c in checks if c.get("passed") is False]
            unmeasured = [c.get("name", "?") for c in checks if c.get("passed") is None]
            cell = ("-" if not checks else f"{len(checks) - len(failed) - len(unmeasured)}/{len(checks)} passed"
                    + (f"; failed: {', '.join(failed)}" if failed else "")
                    + (f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""))
            status = v.get("status", "?")
            if status != "ok" and v.get("error"):
                cell = _first_line(v["error"])
            t.add(net, vname, status, _kib(size), _num(size / ref if size and ref else None, ".3f"),
                  v.get("reference", "-"), _pct(p.get("agreement")), _num(p.get("max_abs_diff"), ".2e"),
                  _pct(p.get("accuracy")), _num(p.get("accuracy_drop_points"), ".2f"), cell,
                  bad=status != "ok" or bool(failed))
    return t


def _train_table(manifest: dict) -> Table | None:
    models = rundir.model_records(manifest, "train")
    if not models:
        return None
    t = Table(("model", "params", "test accuracy %", "epochs", "train seconds", "device"),
              numeric=(False, True, True, True, True, False))
    for net, rec in sorted(models.items()):
        m = rec.get("metrics") or {}
        t.add(net, _num(rec.get("params"), ",d"), _pct(m.get("test_accuracy")), _num(m.get("epochs_run"), "d"),
              _num(rec.get("seconds"), ".0f"), rec.get("device", "-"), bad=rec.get("status", "ok") != "ok")
    return t
