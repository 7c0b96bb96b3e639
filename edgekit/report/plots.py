"""The report's plots, drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
switch), each returned as PNG bytes (None when there is nothing to draw)."""
from __future__ import annotations

import io

from edgekit.report.views import model_names, records_at, setting_label, setting_text, variant_rank
from edgekit.runtimes import RUNTIMES

PLOTS = {  # file stem -> title
    "accuracy_latency": "Accuracy against latency",
    "latency_runtime": "Latency per runtime",
    "size_variant": "Size per variant",
}
RUNTIME_MARKERS = {name: rt.marker for name, rt in RUNTIMES.items()}


def _ms(v) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


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
    ordered = sorted(set(names), key=variant_rank)
    return {n: cmap(i % 10) for i, n in enumerate(ordered)}


def plot_accuracy_latency(ok: list[dict], setting, float_accuracy: dict[str, float]) -> bytes | None:
    """One panel per model: accuracy against p50 (log scale) of each variant on each runtime,
    the fastest runtime option of each (variant, runtime)."""
    if setting is None:
        return None
    rows = [r for r in records_at(ok, setting) if r.get("accuracy") is not None and r.get("p50_ms")]
    if not rows:
        return None
    best: dict[tuple, dict] = {}
    for r in rows:
        k = (r["model"], r["variant"], r.get("runtime"))
        if k not in best or r["p50_ms"] < best[k]["p50_ms"]:
            best[k] = r
    models = model_names(rows)
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
        ax.set_xlabel(f"p50 latency, ms ({setting_text(setting)}{scale})")
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
    rows = [r for r in records_at(ok, setting) if r.get("p50_ms")]
    if not rows:
        return None
    from matplotlib import colormaps

    models = model_names(rows)
    labels_rt = sorted({setting_label(r) for r in rows})
    cmap = colormaps["Set2"]
    rt_color = {lab: cmap(i % 8) for i, lab in enumerate(labels_rt)}
    counts = [sum(1 for r in rows if r["model"] == m) for m in models]
    fig = _figure(9.5, sum(0.26 * c + 0.9 for c in counts) + 0.6)
    axes = fig.subplots(len(models), 1, squeeze=False, height_ratios=[c + 3 for c in counts])[:, 0]
    for ax, net in zip(axes, models):
        mine = sorted((r for r in rows if r["model"] == net),
                      key=lambda r: (setting_label(r), variant_rank(r["variant"])))
        y = list(range(len(mine)))[::-1]
        p50 = [r["p50_ms"] for r in mine]
        p90 = [max(r.get("p90_ms") or r["p50_ms"], r["p50_ms"]) for r in mine]
        ax.barh(y, p50, color=[rt_color[setting_label(r)] for r in mine], edgecolor="black", linewidth=0.4,
                xerr=[[0] * len(mine), [b - a for a, b in zip(p50, p90)]], error_kw={"elinewidth": 0.8,
                                                                                      "capsize": 2})
        ax.set_yticks(y, [f"{r['variant']}  ({setting_label(r)})" for r in mine], fontsize=8)
        for yi, v, w in zip(y, p50, p90):
            ax.text(w, yi, f"  {_ms(v)}", va="center", ha="left", fontsize=7)
        scale = _latency_axis(ax, p50 + p90, bars=True)
        ax.set_title(net, loc="left")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    axes[-1].set_xlabel(f"p50 latency, ms ({setting_text(setting)}{scale}; whisker to p90)")
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
        names = sorted(sizes[net], key=variant_rank)
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
