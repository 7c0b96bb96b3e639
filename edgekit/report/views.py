"""Views of a run's results that the report, its plots and the gate share.

Views over results.json's bench records (read by edgekit.core.results) and manifest.json's export
records: one variant order, one notion of "fastest", and the machine the figures come from,
whichever results.json layout recorded it. Labels come from edgekit.core.results.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgekit.core import rundir, variants
from edgekit.core.machine import has_int8_dot_product
from edgekit.core.results import runtime_label, setting_label
from edgekit.core.variants import Format, Role, VariantClass, is_int8_class



# ---------------------------------------------------------------- order

def variant_rank(name: str) -> tuple[int, str]:
    """Registry order (the Keras models first), unknown names last."""
    return variants.order(name)


def record_order(r: dict) -> tuple:
    return (r.get("model") or "", variant_rank(r.get("variant") or ""), runtime_label(r),
            r.get("threads") or 0, r.get("batch") or 0)


def reference_setting(ok: list[dict]) -> tuple[int, int] | None:
    """(threads, batch) the summary and plots use: 1 thread, batch 1, or the smallest measured."""
    settings = {(r.get("threads"), r.get("batch")) for r in ok if r.get("threads") and r.get("batch")}
    if (1, 1) in settings:
        return (1, 1)
    return min(settings) if settings else None


def records_at(ok: list[dict], setting) -> list[dict]:
    return sorted((r for r in ok if (r.get("threads"), r.get("batch")) == setting), key=record_order)


def model_names(records: list[dict]) -> list[str]:
    return sorted({r["model"] for r in records if r.get("model")})


def setting_text(setting) -> str:
    threads, batch = setting
    return f"batch {batch}, {threads} thread{'s' * (threads != 1)}"


# ---------------------------------------------------------------- what the run holds

def machine_of(results: dict) -> dict:
    """The CPU the figures were measured on, as edgekit.core.machine.describe() spells it. Older
    results.json files have only environment.cpu / cpu_flags / cpu_class; missing fields are None."""
    m = dict(results.get("machine") or {})
    env = results.get("environment") or {}
    m.setdefault("cpu_model", env.get("cpu"))
    m.setdefault("arch", env.get("machine"))
    m.setdefault("int8_flags", env.get("cpu_flags"))
    m.setdefault("cpu_class", env.get("cpu_class"))
    if m.get("int8_dot_product") is None and m.get("cpu_class"):
        m["int8_dot_product"] = has_int8_dot_product(m["cpu_class"])
    m["cpu_count"] = env.get("cpu_count")
    return m


def variant_sizes(manifest: dict, records: list[dict]) -> dict[str, dict[str, int]]:
    """model -> variant -> file size in bytes: every exported file, the source model, and whatever
    the bench measured (a run exported elsewhere may have only results.json)."""
    sizes: dict[str, dict[str, int]] = {}
    for r in records:
        if r.get("size_bytes"):
            sizes.setdefault(r["model"], {})[r["variant"]] = int(r["size_bytes"])
    for net, m in rundir.model_records(manifest, "export").items():
        for vname, v in m.get("variants", {}).items():
            if v.get("file"):
                sizes.setdefault(net, {})[vname] = v["file"]["size_bytes"]
    for net, t in rundir.model_records(manifest, "train").items():
        if t.get("files") and net in sizes:  # the source beside its exports; a model never exported adds nothing
            sizes[net].setdefault(variants.keras_variant(Role.SOURCE).name, t["files"][0]["size_bytes"])
    return sizes


def float_accuracy(manifest: dict) -> dict[str, float]:
    out = {}
    for net, t in rundir.model_records(manifest, "train").items():
        acc = (t.get("metrics") or {}).get("test_accuracy")
        if acc is not None:
            out[net] = acc
    return out


def fastest(ok: list[dict], setting, keep) -> dict | None:
    """The record with the lowest p50 at `setting` among those `keep(record)` accepts."""
    rows = [r for r in records_at(ok, setting) if r.get("p50_ms") and keep(r)]
    return min(rows, key=lambda r: r["p50_ms"]) if rows else None


# ---------------------------------------------------------------- int8 against fp32

@dataclass(frozen=True)
class SpeedFinding:
    """Per network: the fastest int8 file against the fastest fp32 file, and the fastest file
    that passes the gate (None when nothing passed or the gate was not evaluated)."""
    model: str
    int8: dict
    fp32: dict
    fastest_passing: dict | None

    @property
    def int8_slower(self) -> bool:
        return self.int8["p50_ms"] > self.fp32["p50_ms"]


def _is_file(r: dict) -> bool:
    return r.get("format") != Format.KERAS


def speed_findings(ok: list[dict], setting, passing: set[tuple[str, str]] | None) -> list[SpeedFinding]:
    """Where both an int8 and a float file were timed at `setting`. `passing`: (model, variant)
    pairs the gate passed, or None when it was not evaluated."""
    out = []
    for net in model_names(ok):
        i8 = fastest(ok, setting, lambda r: r["model"] == net and _is_file(r)
                     and is_int8_class(r.get("variant_class")))
        fp = fastest(ok, setting, lambda r: r["model"] == net and _is_file(r) and r.get("variant_class") == VariantClass.FLOAT)
        if i8 is None or fp is None:
            continue
        best = None if passing is None else fastest(
            ok, setting, lambda r: r["model"] == net and _is_file(r) and (net, r["variant"]) in passing)
        out.append(SpeedFinding(net, i8, fp, best))
    return out


def format_speed_lines(ok: list[dict], setting) -> list[str]:
    """Per network and file format (one runtime each): fastest int8 against fastest fp32 of the
    same format, so that a format whose int8 loses to its own fp32 is said plainly even where
    another format's int8 wins overall (ORT's u8u8 convolutions on small layers, for one)."""
    lines = []
    for net in model_names(ok):
        for fmt in sorted({r.get("format") for r in ok if r["model"] == net and _is_file(r)} - {None}):
            def best(cls_test):
                return fastest(ok, setting, lambda r: r["model"] == net and r.get("format") == fmt
                               and cls_test(str(r.get("variant_class", ""))))
            i8, fp = best(is_int8_class), best(lambda c: c == VariantClass.FLOAT)
            if i8 is None or fp is None:
                continue
            ratio = i8["p50_ms"] / fp["p50_ms"]
            verdict = "SLOWER than" if ratio > 1 else "faster than"
            lines.append(f"{net} {fmt}: int8 is {verdict} fp32 ({i8['variant']} {i8['p50_ms']:.3g} ms vs "
                         f"{fp['variant']} {fp['p50_ms']:.3g} ms, x{ratio:.2f})")
    return lines


def speed_sentence(f: SpeedFinding, cpu: str) -> str:
    """One plain sentence per network (Markdown backticks for names)."""
    def ms(r: dict) -> str:
        return f"`{r['variant']}` {r['p50_ms']:.3g} ms ({setting_label(r)})"

    if f.int8_slower:
        text = (f"{f.model}: int8 is SLOWER than fp32 on this CPU ({cpu}): fastest int8 {ms(f.int8)} against "
                f"fastest fp32 {ms(f.fp32)}.")
    else:
        text = f"{f.model}: int8 is faster than fp32 on this CPU ({cpu}): {ms(f.int8)} against {ms(f.fp32)}."
    if f.fastest_passing is not None:
        text += f" Fastest file that passes the gate: {ms(f.fastest_passing)}."
    return text


# ---------------------------------------------------------------- int8 cells (report)

def percent(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def judged_kernel_agreement(fid: dict) -> float | None:
    """The kernel agreement the gate judges: outside the near-tie band (edgekit.verify.fidelity)."""
    return fid.get("decisive_agreement", fid.get("agreement"))


def emulated_cells(v: dict) -> str:
    """'x86-avx2 99.9/100.0' per emulated CPU: agreement with the source / kernel agreement, %."""
    parts = []
    for r in v.get("emulated_parity") or []:
        if r.get("status") != "ok":
            parts.append(f"{r['cpu']}: not measured ({r.get('reason')})")
        else:
            parts.append(f"{r['cpu']} {percent(r.get('agreement'))}/{percent(r.get('kernel_agreement'))}")
    return "; ".join(parts) or "-"


def saturation_cell(sat: dict) -> str:
    if not sat:
        return "-"
    share, bad, pairs = sat.get("share"), sat.get("overflowing_pairs"), sat.get("pairs")
    text = f"{percent(share)}% of pairs" if share is not None else "share not recorded"
    if bad is not None and pairs is not None:
        text += f" ({bad:,} of {pairs:,})"
    affects = sat.get("affects_file")
    if affects is not None:
        text += "; affects this file" if affects else f"; not this file ({sat.get('encoding') or 'encoding'})"
    return text
