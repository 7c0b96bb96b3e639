"""`edgekit report`: results.json (+ manifest.json) -> report.md, report.html and plots/*.png.

report.md is tables only, so it pastes into a pull request as is; report.html is one
self-contained file (inline CSS, PNGs embedded as base64) that a CI job can upload as an
artifact. Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from edgekit import rundir
from edgekit.errors import EdgekitError, RunDirError

RESULTS_SCHEMA_VERSION = 1
PLOTS = {  # file stem -> title
    "accuracy_latency": "Accuracy against latency",
    "latency_runtime": "Latency per runtime",
    "size_variant": "Size per variant",
}
VARIANT_ORDER = ("keras-fp32", "keras-qat", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8-ptq",
                 "tflite-int8-qat", "onnx-fp32", "onnx-int8-ptq", "onnx-int8-qat")
RUNTIME_MARKERS = {"keras": "o", "litert": "s", "onnxruntime": "^"}


@dataclass
class Table:
    """One table, rendered both as Markdown and as HTML. `bad` marks rows to show in red."""
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    numeric: tuple[bool, ...] = ()
    bad: list[bool] = field(default_factory=list)

    def add(self, *cells, bad: bool = False) -> None:
        self.rows.append(tuple(str(c) for c in cells))
        self.bad.append(bad)


@dataclass(frozen=True)
class Section:
    title: str
    text: str                       # one line of explanation (Markdown backticks allowed)
    table: Table | None = None
    folded: bool = False            # long: behind <details>, which GitHub renders in Markdown too


# ---------------------------------------------------------------- entry point

def render_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html and plots/*.png from the run's results; return report.html."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    manifest = rundir.load_manifest(run_dir)
    records = results["records"]
    ok = [r for r in records if r.get("status") == "ok"]
    setting = reference_setting(ok)
    sizes = variant_sizes(manifest, records)

    pngs = {"accuracy_latency": plot_accuracy_latency(ok, setting, _float_accuracy(manifest)),
            "latency_runtime": plot_latency_runtime(ok, setting),
            "size_variant": plot_size_variant(sizes)}
    for stem, data in pngs.items():
        path = run_dir / "plots" / f"{stem}.png"
        if data is None:
            path.unlink(missing_ok=True)  # no data for it this time: no stale plot from an older run
        else:
            rundir.atomic_write_bytes(path, data)

    sections = _sections(run_dir, results, manifest, ok, setting)
    rundir.atomic_write_text(run_dir / "report.md", _markdown(run_dir, results, sections))
    html_path = run_dir / "report.html"
    rundir.atomic_write_text(html_path, _html(run_dir, results, sections, pngs))
    return html_path


def load_results(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.exists():
        raise RunDirError(f"{path} does not exist; run `edgekit bench --run {run_dir}` first")
    return read_results(path)


def read_results(path: Path) -> dict:
    """A results.json of this schema version, or a one-line error saying to re-run the bench."""
    data = rundir.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise RunDirError(f"{path} is not an edgekit results.json (no 'records' list); "
                          "use the results.json that `edgekit bench` writes")
    if data.get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise RunDirError(f"{path} has schema_version {data.get('schema_version')}, expected "
                          f"{RESULTS_SCHEMA_VERSION}; re-run `edgekit bench` with this edgekit")
    return data


# ---------------------------------------------------------------- shared views of the records

def runtime_label(rec: dict) -> str:
    """'litert xnnpack=on': a runtime and its options."""
    opts = []
    for k, v in sorted((rec.get("runtime_options") or {}).items()):
        opts.append(f"{k}={'on' if v else 'off'}" if isinstance(v, bool) else f"{k}={v}")
    return " ".join([str(rec.get("runtime", "?")), *opts])


def reference_setting(ok: list[dict]) -> tuple[int, int] | None:
    """(threads, batch) the summary and plots use: 1 thread, batch 1, or the smallest measured."""
    settings = {(r.get("threads"), r.get("batch")) for r in ok}
    if (1, 1) in settings:
        return (1, 1)
    return min(settings) if settings else None


def _variant_rank(name: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(name) if name in VARIANT_ORDER else len(VARIANT_ORDER), name)


def _record_order(r: dict) -> tuple:
    return (r.get("model", ""), _variant_rank(r.get("variant", "")), runtime_label(r),
            r.get("threads") or 0, r.get("batch") or 0)


def _at(ok: list[dict], setting) -> list[dict]:
    return sorted((r for r in ok if (r.get("threads"), r.get("batch")) == setting), key=_record_order)


def _models(records: list[dict]) -> list[str]:
    return sorted({r["model"] for r in records if r.get("model")})


def variant_sizes(manifest: dict, records: list[dict]) -> dict[str, dict[str, int]]:
    """model -> variant -> file size in bytes: every exported file, the source model, and whatever
    the bench measured (a run exported elsewhere may have only results.json)."""
    sizes: dict[str, dict[str, int]] = {}
    for r in records:
        if r.get("size_bytes"):
            sizes.setdefault(r["model"], {})[r["variant"]] = int(r["size_bytes"])
    stages = manifest.get("stages", {})
    for net, m in stages.get("export", {}).get("models", {}).items():
        for vname, v in m.get("variants", {}).items():
            if v.get("file"):
                sizes.setdefault(net, {})[vname] = v["file"]["size_bytes"]
    for net, t in stages.get("train", {}).get("models", {}).items():
        if t.get("files") and net in sizes:  # the source beside its exports; a model never exported adds nothing
            sizes[net].setdefault("keras-fp32", t["files"][0]["size_bytes"])
    return sizes


def _float_accuracy(manifest: dict) -> dict[str, float]:
    out = {}
    for net, t in manifest.get("stages", {}).get("train", {}).get("models", {}).items():
        acc = (t.get("metrics") or {}).get("test_accuracy")
        if acc is not None:
            out[net] = acc
    return out


# ---------------------------------------------------------------- number formats

def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _kib(v) -> str:
    return "-" if v is None else f"{v / 1024:.1f}"


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


# ---------------------------------------------------------------- tables

def _sections(run_dir: Path, results: dict, manifest: dict, ok: list[dict], setting) -> list[Section]:
    """What the report says, in reading order."""
    records = results["records"]
    sections = []
    if setting is not None:
        threads, batch = setting
        t = Table(("model", "variant", "runtime", "accuracy %", "agreement %", "size KiB", "p50 ms", "p90 ms",
                   "img/s"), numeric=(False, False, False, True, True, True, True, True, True))
        for r in _at(ok, setting):
            t.add(r["model"], r["variant"], runtime_label(r), _pct(r.get("accuracy")), _pct(r.get("agreement")),
                  _kib(r.get("size_bytes")), _ms(r.get("p50_ms")), _ms(r.get("p90_ms")),
                  _num(r.get("throughput_ips"), ",.0f"))
        sections.append(Section(f"Latency and accuracy (batch {batch}, {threads} thread{'s' * (threads != 1)})",
                                "Agreement is top-1 agreement with the float Keras model on the same images.", t))
    export_table = _export_table(manifest)
    if export_table is not None:
        sections.append(Section("Export parity", "Each file against its source model (the float model, or the QAT "
                         "model for *-int8-qat) on the parity set; drop is in accuracy points below the float "
                         "Keras model; size ratio against the fp32 file of the same format.", export_table))
    gate = _gate_table(run_dir, manifest)
    if gate is not None:
        sections.append(gate)
    train_table = _train_table(manifest)
    if train_table is not None:
        sections.append(Section("Training", "Float Keras models; accuracy on the test set.", train_table))
    full = Table(("model", "variant", "runtime", "threads", "batch", "accuracy %", "p50 ms", "p90 ms", "p99 ms",
                  "img/s", "runs", "peak RSS MB"),
                 numeric=(False, False, False, True, True, True, True, True, True, True, True, True))
    for r in sorted(ok, key=_record_order):
        full.add(r["model"], r["variant"], runtime_label(r), r.get("threads"), r.get("batch"),
                 _pct(r.get("accuracy")), _ms(r.get("p50_ms")), _ms(r.get("p90_ms")), _ms(r.get("p99_ms")),
                 _num(r.get("throughput_ips"), ",.0f"), _num(r.get("runs"), "d"), _num(r.get("peak_rss_mb"), ".0f"))
    sections.append(Section(f"All measurements ({len(ok)})", "p50/p90/p99 over every timed run; throughput "
                            "in images per second at the p50.", full, folded=True))
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        t = Table(("model", "variant", "runtime", "threads", "batch", "error"))
        for r in sorted(failed, key=_record_order):
            t.add(r.get("model"), r.get("variant"), runtime_label(r), r.get("threads"), r.get("batch"),
                  (r.get("error") or "").splitlines()[0][:200] if r.get("error") else "-", bad=True)
        sections.append(Section("Failed measurements", "Records the bench could not measure.", t))
    return sections


def _export_table(manifest: dict) -> Table | None:
    models = manifest.get("stages", {}).get("export", {}).get("models", {})
    if not models:
        return None
    t = Table(("model", "variant", "status", "size KiB", "x fp32", "reference", "agreement %", "max abs diff",
               "accuracy %", "drop points", "int8 MACs", "export checks"),
              numeric=(False, False, False, True, True, False, True, True, True, True, True, False))
    for net, m in sorted(models.items()):
        variants = m.get("variants", {})
        for vname in sorted(variants, key=_variant_rank):
            v = variants[vname]
            size = (v.get("file") or {}).get("size_bytes")
            ref = ((variants.get(f"{v.get('format')}-fp32") or {}).get("file") or {}).get("size_bytes")
            p = v.get("parity") or {}
            audit = v.get("audit") or {}
            checks = v.get("checks") or []
            failed = [c.get("name", "?") for c in checks if c.get("passed") is False]
            unmeasured = [c.get("name", "?") for c in checks if c.get("passed") is None]
            checks_cell = ("-" if not checks else
                           f"{len(checks) - len(failed) - len(unmeasured)}/{len(checks)} passed"
                           + (f"; failed: {', '.join(failed)}" if failed else "")
                           + (f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""))
            status = v.get("status", "?")
            if status != "ok" and v.get("error"):
                checks_cell = v["error"].splitlines()[0][:120]
            t.add(net, vname, status, _kib(size), _num(size / ref if size and ref else None, ".3f"),
                  v.get("reference", "-"), _pct(p.get("agreement")), _num(p.get("max_abs_diff"), ".2e"),
                  _pct(p.get("accuracy")), _num(p.get("accuracy_drop_points"), ".2f"),
                  _num(audit.get("integer_mac_fraction"), ".3f"), checks_cell,
                  bad=status != "ok" or bool(failed) or (bool(audit) and not audit.get("passed")))
    return t


def _gate_table(run_dir: Path, manifest: dict) -> Section | None:
    """The gate's verdict on this run with the export's own profile (no baseline)."""
    if not manifest.get("stages", {}).get("export", {}).get("profile"):
        return None
    from edgekit.check import check_run

    try:
        result = check_run(run_dir)
    except EdgekitError as e:  # the report still renders; the reason is shown instead
        return Section("Gate", f"Not evaluated: {e}")
    verdict = result.table.splitlines()[-1]
    failed = [r for r in result.rows if not r.passed]
    if not failed:
        return Section("Gate", f"`edgekit check`: {verdict}")
    t = Table(("model", "variant", "runtime", "check", "value", "limit", "by how much / why"))
    for r in failed:
        t.add(r.model, r.variant, r.runtime or "-", r.check, _cell(r.value), _cell(r.limit), r.note, bad=True)
    return Section("Gate", f"`edgekit check`: {verdict}", t)


def _cell(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _train_table(manifest: dict) -> Table | None:
    models = manifest.get("stages", {}).get("train", {}).get("models", {})
    if not models:
        return None
    t = Table(("model", "params", "test accuracy %", "epochs", "train seconds", "device"),
              numeric=(False, True, True, True, True, False))
    for net, rec in sorted(models.items()):
        m = rec.get("metrics") or {}
        t.add(net, _num(rec.get("params"), ",d"), _pct(m.get("test_accuracy")), _num(m.get("epochs_run"), "d"),
              _num(rec.get("seconds"), ".0f"), rec.get("device", "-"), bad=rec.get("status", "ok") != "ok")
    return t


def _meta_lines(run_dir: Path, results: dict) -> list[str]:
    env = results.get("environment") or {}
    st = results.get("settings") or {}
    versions = ", ".join(f"{k} {env[k]}" for k in ("tensorflow", "ai-edge-litert", "onnxruntime") if env.get(k))
    lines = [f"Run `{run_dir}`, measured {results.get('created_utc', '?')}.",
             f"Machine: {env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores), {env.get('platform', '?')}."]
    if versions:
        lines.append(f"Versions: {versions}.")
    if st:
        lines.append("Settings: " + ", ".join(f"{k} {v}" for k, v in st.items()) + ".")
    return lines


# ---------------------------------------------------------------- Markdown

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(t: Table) -> str:
    numeric = t.numeric or (False,) * len(t.headers)
    lines = ["| " + " | ".join(t.headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row, bad in zip(t.rows, t.bad):
        cells = [_md_escape(c) for c in row]
        if bad:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(run_dir: Path, results: dict, sections) -> str:
    out = ["## edgekit report", "", *(f"{line}  " for line in _meta_lines(run_dir, results)), ""]
    for sec in sections:
        table = [_md_table(sec.table), ""] if sec.table is not None else []
        if sec.folded:
            out += [f"<details><summary>{sec.title}</summary>", "", sec.text, "", *table, "</details>", ""]
        else:
            out += [f"### {sec.title}", "", sec.text, "", *table]
    out.append("Plots: `plots/*.png`; everything in one file: `report.html`.")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1280px;
margin:2rem auto;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
p.meta{color:#555;font-size:.9rem;margin:.1rem 0}p.note{color:#444;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0 1rem}
th,td{padding:.2rem .6rem;border-bottom:1px solid #e4e4e4;text-align:left;white-space:nowrap}
th{background:#f3f4f6;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{color:#b3261e;background:#fdf0ef}tbody tr:hover td{background:#f7f9fc}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}code{background:#f3f4f6;padding:0 .2rem}
summary{cursor:pointer}summary h2{display:inline-block}
"""


def _html_table(t: Table) -> str:
    numeric = t.numeric or (False,) * len(t.headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = []
    for row, bad in zip(t.rows, t.bad):
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if n else f"<td>{html.escape(c)}</td>"
                        for c, n in zip(row, numeric))
        body.append(f'<tr class="bad">{cells}</tr>' if bad else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _inline_code(text: str) -> str:
    """`x` -> <code>x</code> after escaping (the explanations use Markdown's backticks)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(run_dir: Path, results: dict, sections, pngs: dict[str, bytes | None]) -> str:
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>edgekit report: {html.escape(run_dir.name)}</title>", f"<style>{CSS}</style></head><body>",
           "<h1>edgekit report</h1>"]
    out += [f'<p class="meta">{_inline_code(line)}</p>' for line in _meta_lines(run_dir, results)]
    for i, sec in enumerate(sections):
        body = [f'<p class="note">{_inline_code(sec.text)}</p>']
        if sec.table is not None:
            body.append(_html_table(sec.table))
        if sec.folded:
            out += [f"<details><summary><h2>{html.escape(sec.title)}</h2></summary>", *body, "</details>"]
        else:
            out += [f"<h2>{html.escape(sec.title)}</h2>", *body]
        if i == 0:  # the plots right after the summary table
            out += _html_figures(pngs)
    if not sections:
        out += _html_figures(pngs)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_figures(pngs: dict[str, bytes | None]) -> list[str]:
    out = []
    for stem, data in pngs.items():
        if data is None:
            continue
        b64 = base64.b64encode(data).decode("ascii")
        out.append(f'<figure><img alt="{html.escape(PLOTS[stem])}" src="data:image/png;base64,{b64}">'
                   f"<figcaption>{html.escape(PLOTS[stem])} (plots/{stem}.png)</figcaption></figure>")
    return out


# ---------------------------------------------------------------- plots

def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _variant_colors(names) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    ordered = sorted(set(names), key=_variant_rank)
    return {n: cmap(i % 10) for i, n in enumerate(ordered)}


def _setting_text(setting) -> str:
    threads, batch = setting
    return f"batch {batch}, {threads} thread{'s' * (threads != 1)}"


def plot_accuracy_latency(ok: list[dict], setting, float_accuracy: dict[str, float]) -> bytes | None:
    """One panel per model: accuracy against p50 (log scale) of each variant on each runtime,
    the fastest runtime option of each (variant, runtime)."""
    if setting is None:
        return None
    rows = [r for r in _at(ok, setting) if r.get("accuracy") is not None and r.get("p50_ms")]
    if not rows:
        return None
    best: dict[tuple, dict] = {}
    for r in rows:
        k = (r["model"], r["variant"], r.get("runtime"))
        if k not in best or r["p50_ms"] < best[k]["p50_ms"]:
            best[k] = r
    models = _models(rows)
    colors = _variant_colors(r["variant"] for r in rows)
    fig = _figure(max(6.0, 4.6 * len(models)) + 2.2, 4.4)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, net in zip(axes, models):
        pts = [r for r in best.values() if r["model"] == net]
        for r in pts:
            ax.scatter(r["p50_ms"], 100 * r["accuracy"], s=60, color=colors[r["variant"]],
                       marker=RUNTIME_MARKERS.get(r.get("runtime"), "D"), edgecolors="black", linewidths=0.5,
                       zorder=3)
        accs = [100 * r["accuracy"] for r in pts]
        if net in float_accuracy:
            ax.axhline(100 * float_accuracy[net], color="gray", linestyle="--", linewidth=1, zorder=1)
            accs.append(100 * float_accuracy[net])
        pad = max(0.5, 0.15 * (max(accs) - min(accs)))
        ax.set_ylim(min(accs) - pad, min(max(accs) + pad, 100 + pad / 4))  # no room above 100%
        scale = _latency_axis(ax, [r["p50_ms"] for r in pts], bars=False)
        ax.set_title(net)
        ax.set_xlabel(f"p50 latency, ms ({_setting_text(setting)}{scale})")
        ax.set_ylabel("accuracy, %")
        ax.grid(True, which="both", alpha=0.3)
    _legends(fig, colors, {r.get("runtime") for r in rows}, float_line=bool(float_accuracy))
    fig.suptitle("Accuracy against latency (fastest option per runtime)")
    return _png(fig)


def _legends(fig, colors: dict, runtimes: set, float_line: bool = False) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", markersize=8, color=c, markeredgecolor="black",
                      markeredgewidth=0.5, label=v) for v, c in colors.items()]
    handles += [Line2D([], [], marker=RUNTIME_MARKERS.get(rt, "D"), linestyle="", markersize=8, color="white",
                       markeredgecolor="black", label=rt) for rt in sorted(runtimes, key=str)]
    if float_line:
        handles.append(Line2D([], [], color="gray", linestyle="--", label="Keras float (test set)"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)


def plot_latency_runtime(ok: list[dict], setting) -> bytes | None:
    """One panel per model: p50 of every variant on every runtime setting, whisker to p90."""
    if setting is None:
        return None
    rows = [r for r in _at(ok, setting) if r.get("p50_ms")]
    if not rows:
        return None
    from matplotlib import colormaps

    models = _models(rows)
    labels_rt = sorted({runtime_label(r) for r in rows})
    cmap = colormaps["Set2"]
    rt_color = {lab: cmap(i % 8) for i, lab in enumerate(labels_rt)}
    counts = [sum(1 for r in rows if r["model"] == m) for m in models]
    fig = _figure(9.5, sum(0.26 * c + 0.9 for c in counts) + 0.6)
    axes = fig.subplots(len(models), 1, squeeze=False, height_ratios=[c + 3 for c in counts])[:, 0]
    for ax, net in zip(axes, models):
        mine = sorted((r for r in rows if r["model"] == net),
                      key=lambda r: (runtime_label(r), _variant_rank(r["variant"])))
        y = list(range(len(mine)))[::-1]
        p50 = [r["p50_ms"] for r in mine]
        p90 = [max(r.get("p90_ms") or r["p50_ms"], r["p50_ms"]) for r in mine]
        ax.barh(y, p50, color=[rt_color[runtime_label(r)] for r in mine], edgecolor="black", linewidth=0.4,
                xerr=[[0] * len(mine), [b - a for a, b in zip(p50, p90)]], error_kw={"elinewidth": 0.8,
                                                                                      "capsize": 2})
        ax.set_yticks(y, [f"{r['variant']}  ({runtime_label(r)})" for r in mine], fontsize=8)
        for yi, v, w in zip(y, p50, p90):
            ax.text(w, yi, f"  {_ms(v)}", va="center", ha="left", fontsize=7)
        scale = _latency_axis(ax, p50 + p90, bars=True)
        ax.set_title(net, loc="left")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    axes[-1].set_xlabel(f"p50 latency, ms ({_setting_text(setting)}{scale}; whisker to p90)")
    fig.suptitle("Latency per runtime")
    return _png(fig)


def _latency_axis(ax, values: list[float], bars: bool) -> str:
    """Log scale when the latencies span more than 20x (eager Keras next to LiteRT), else linear
    from zero; plain-number tick labels either way. Returns the scale note for the axis label."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(values), max(values)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    if hi / lo > 20:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        if bars:
            ax.set_xlim(lo / 2, hi * 3)   # room for the value labels
        return ", log scale"
    ax.xaxis.set_major_formatter(plain)
    ax.set_xlim(0, hi * (1.25 if bars else 1.1))
    return ""


def plot_size_variant(sizes: dict[str, dict[str, int]]) -> bytes | None:
    """One panel per model: file size of every variant, with its ratio to the fp32 file of the same
    format (what max_size_ratio in a profile bounds)."""
    sizes = {m: s for m, s in sizes.items() if s}
    if not sizes:
        return None
    models = sorted(sizes)
    colors = _variant_colors(v for s in sizes.values() for v in s)
    counts = [len(sizes[m]) for m in models]
    fig = _figure(8.0, sum(0.28 * c + 0.9 for c in counts) + 0.6)
    axes = fig.subplots(len(models), 1, squeeze=False, height_ratios=[c + 3 for c in counts])[:, 0]
    for ax, net in zip(axes, models):
        names = sorted(sizes[net], key=_variant_rank)
        kib = [sizes[net][n] / 1024 for n in names]
        y = list(range(len(names)))[::-1]
        ax.barh(y, kib, color=[colors[n] for n in names], edgecolor="black", linewidth=0.4)
        ax.set_yticks(y, names, fontsize=8)
        for yi, name, v in zip(y, names, kib):
            fp32 = f"{name.split('-')[0]}-fp32"
            ratio = (f" ({sizes[net][name] / sizes[net][fp32]:.2f}x {fp32})"
                     if name != fp32 and sizes[net].get(fp32) else "")
            ax.text(v, yi, f" {v:,.1f} KiB{ratio}", va="center", ha="left", fontsize=7)
        ax.set_xlim(0, max(kib) * 1.45)
        ax.set_title(net, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlabel("file size, KiB")
    fig.suptitle("Size per variant")
    return _png(fig)
