"""The report's sections as Markdown (report.md) and as one self-contained HTML page (report.html).

Both come from the same Section list, so they say the same things in the same order. The HTML
has inline CSS and base64 PNGs only (nothing fetched), fits a 1400 px window: every table scrolls
inside its own box, and free-text columns (errors, reasons) wrap instead of widening the page.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Table:
    """One table. `numeric` columns align right; `wrap` columns are free text that may wrap;
    `bad` marks rows to show in red."""
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    numeric: tuple[bool, ...] = ()
    wrap: tuple[bool, ...] = ()
    bad: list[bool] = field(default_factory=list)

    def add(self, *cells, bad: bool = False) -> None:
        self.rows.append(tuple("-" if c is None else str(c) for c in cells))
        self.bad.append(bad)


@dataclass(frozen=True)
class Section:
    title: str
    text: str = ""                  # one paragraph (Markdown backticks allowed)
    table: Table | None = None
    lines: tuple[str, ...] = ()     # a short list under the paragraph
    folded: bool = False            # behind <details>, which GitHub renders in Markdown too
    tone: str = ""                  # "pass" / "fail": the verdict, shown as a coloured box
    plots_after: bool = False       # the plots follow this section


@dataclass(frozen=True)
class Figure:
    stem: str
    title: str
    png: bytes


# ---------------------------------------------------------------- Markdown

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def md_table(t: Table) -> str:
    numeric = t.numeric or (False,) * len(t.headers)
    lines = ["| " + " | ".join(t.headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row, bad in zip(t.rows, t.bad):
        cells = [_md_escape(c) for c in row]
        if bad:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_page(title: str, sections: list[Section], figures: list[Figure]) -> str:
    out = [f"## {title}", ""]
    for sec in sections:
        body = [sec.text, ""] if sec.text else []
        body += [*(f"- {line}" for line in sec.lines), ""] if sec.lines else []
        body += [md_table(sec.table), ""] if sec.table is not None else []
        if sec.folded:
            out += [f"<details><summary>{sec.title}</summary>", "", *body, "</details>", ""]
        elif sec.tone:
            out += [f"### {sec.title}", "", f"**{sec.text}**", "", *body[2:]]
        else:
            out += [f"### {sec.title}", "", *body]
        if sec.plots_after and figures:
            out += ["Plots: " + ", ".join(f"`plots/{f.stem}.png` ({f.title.lower()})" for f in figures)
                    + "; all embedded in `report.html`.", ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1320px;
margin:1.5rem auto;padding:0 1rem;line-height:1.4}
h1{font-size:1.5rem;margin:.2rem 0 .8rem}h2{font-size:1.15rem;margin-top:1.8rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}
p.note{color:#444;font-size:.9rem}ul.lines{font-size:.95rem;padding-left:1.2rem}ul.lines li{margin:.2rem 0}
div.verdict{padding:.7rem 1rem;border-radius:6px;font-size:1.15rem;font-weight:600;margin:.6rem 0}
div.verdict.pass{background:#e6f4ea;color:#0d652d;border:1px solid #a8dab5}
div.verdict.fail{background:#fce8e6;color:#a50e0e;border:1px solid #f4b5ae}
div.scroll{overflow-x:auto;max-width:100%;margin:.4rem 0 1rem}
table{border-collapse:collapse;font-size:.85rem}
th,td{padding:.2rem .6rem;border-bottom:1px solid #e4e4e4;text-align:left;white-space:nowrap;vertical-align:top}
td.wrap{white-space:normal;min-width:10rem;max-width:36rem;overflow-wrap:anywhere}
th{background:#f3f4f6;white-space:normal;vertical-align:bottom}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{color:#b3261e;background:#fdf0ef}tbody tr:hover td{background:#f7f9fc}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}code{background:#f3f4f6;padding:0 .2rem;overflow-wrap:anywhere}
details{margin:1.2rem 0}summary{cursor:pointer}summary h2{display:inline-block;margin:0;border:0}
"""


def html_table(t: Table) -> str:
    numeric = t.numeric or (False,) * len(t.headers)
    wrap = t.wrap or (False,) * len(t.headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = []
    for row, bad in zip(t.rows, t.bad):
        cells = "".join(f'<td class="{"num" if n else "wrap" if w else "txt"}">{html.escape(c)}</td>'
                        for c, n, w in zip(row, numeric, wrap))
        body.append(f'<tr class="bad">{cells}</tr>' if bad else f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def inline_code(text: str) -> str:
    """`x` -> <code>x</code> after escaping (the texts use Markdown's backticks)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def html_page(title: str, sections: list[Section], figures: list[Figure]) -> str:
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    placed = False
    for sec in sections:
        body = []
        if sec.tone:
            body.append(f'<div class="verdict {sec.tone}">{inline_code(sec.text)}</div>')
        elif sec.text:
            body.append(f'<p class="note">{inline_code(sec.text)}</p>')
        if sec.lines:
            body.append('<ul class="lines">' + "".join(f"<li>{inline_code(x)}</li>" for x in sec.lines) + "</ul>")
        if sec.table is not None:
            body.append(html_table(sec.table))
        if sec.folded:
            out += [f"<details><summary><h2>{html.escape(sec.title)}</h2></summary>", *body, "</details>"]
        else:
            out += [f"<h2>{html.escape(sec.title)}</h2>", *body]
        if sec.plots_after:
            out += _figures(figures)
            placed = True
    if not placed:
        out += _figures(figures)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _figures(figures: list[Figure]) -> list[str]:
    out = []
    for f in figures:
        b64 = base64.b64encode(f.png).decode("ascii")
        out.append(f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{b64}">'
                   f"<figcaption>{html.escape(f.title)} (plots/{f.stem}.png)</figcaption></figure>")
    return out
