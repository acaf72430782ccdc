"""The report's page model and its two renderers.

A page is a list of blocks (heading, paragraph, note, facts, figure, table, details), collected
once by the sections and rendered to one self-contained HTML file (figures embedded as base64
PNGs) or to Markdown that links the PNGs written beside it.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer_pipeline.metrics import to_markdown
from fer_pipeline.plots import CLASS_COLOR


@dataclass
class Heading:
    text: str
    anchor: str


@dataclass
class Para:
    text: str


@dataclass
class Note:
    text: str


@dataclass
class Facts:
    rows: list[tuple[str, str]]


@dataclass
class Figure:
    name: str               # file name under report/ when written out
    png: bytes
    caption: str


@dataclass
class Table:
    df: pd.DataFrame
    class_column: str | None = None     # cells of this column get their class colour swatch


@dataclass
class Details:
    summary: str
    text: str
    lang: str = ""


@dataclass
class Page:
    title: str
    blocks: list = field(default_factory=list)
    workdir: Path | None = None         # where figures are rendered before being embedded

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)

    def section(self, text: str) -> None:
        anchor = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
        self.blocks.append(Heading(text, anchor))

    def figure(self, name: str, draw: Callable[[Path], object], caption: str) -> bool:
        """Render one PNG with ``draw(path)`` and add it; a failing plot becomes a note."""
        path = self.workdir / name
        try:
            draw(path)
        except (ValueError, KeyError, TypeError, OSError) as e:
            self.add(Note(f"{caption}: could not be drawn ({e})"))
            return False
        self.add(Figure(name, path.read_bytes(), caption))
        return True

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
 color:#222;background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:16px 24px 48px;background:#fff;
 overflow-wrap:break-word}
h1{font-size:1.5em;margin:.4em 0}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;
 padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.88em}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
.scroll{overflow-x:auto;max-width:100%}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
table.facts td{text-align:left;border:none;padding:1px 12px 1px 0;white-space:normal;
 vertical-align:top;overflow-wrap:anywhere}
table.facts td:first-child{color:#666;white-space:nowrap}
.note{background:#fff7e0;border-left:4px solid #e0b000;padding:6px 10px;margin:.6em 0}
figure{margin:.8em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:-.1em;
 border:1px solid #0003}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:.85em}
nav a{margin-right:1em}
code{background:#f3f3f3;padding:0 3px}
"""


def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.2f}"
    return str(v)


def render_html(page: Page) -> str:
    e = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width,initial-scale=1">',
           f"<title>{e(page.title)}</title>", f"<style>{_CSS}</style></head><body><main>",
           f"<h1>{e(page.title)}</h1>"]
    heads = [b for b in page.blocks if isinstance(b, Heading)]
    toc = "".join(f'<a href="#{h.anchor}">{e(h.text)}</a>' for h in heads)
    toc_done = False
    for b in page.blocks:
        if isinstance(b, Heading):
            if not toc_done:
                out.append(f"<nav>{toc}</nav>")
                toc_done = True
            out.append(f'<h2 id="{b.anchor}">{e(b.text)}</h2>')
        elif isinstance(b, Para):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Note):
            out.append(f'<p class="note">{e(b.text)}</p>')
        elif isinstance(b, Facts):
            out.append('<table class="facts">' + "".join(
                f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in b.rows) + "</table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure><img alt="{e(b.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{e(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            rows = ["<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in b.df.columns) + "</tr>"]
            for rec in b.df.itertuples(index=False):
                cells = []
                for col, v in zip(b.df.columns, rec):
                    # "61.31 ± 14.79" may wrap before the "±", never after it
                    text = e(_cell(v)).replace(" ± ", " ±\u00a0")
                    name = str(v).removesuffix(" (absent)")
                    if col == b.class_column and name in CLASS_COLOR:
                        text = (f'<span class="swatch" style="background:{CLASS_COLOR[name]}">'
                                f"</span>{text}")
                    cells.append(f"<td>{text}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            # a table wider than the page scrolls inside its box, not the whole page
            out.append('<div class="scroll"><table>' + "".join(rows) + "</table></div>")
        elif isinstance(b, Details):
            out.append(f"<details><summary>{e(b.summary)}</summary>"
                       f"<pre>{e(b.text)}</pre></details>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def render_markdown(page: Page) -> str:
    out = [f"# {page.title}", ""]
    for b in page.blocks:
        if isinstance(b, Heading):
            out += [f"## {b.text}", ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Note):
            out += [f"> **Note:** {b.text}", ""]
        elif isinstance(b, Facts):
            out += [f"- **{k}:** {v}" for k, v in b.rows] + [""]
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({b.name})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Table):
            out += [to_markdown(b.df.map(_cell)), ""]
        elif isinstance(b, Details):
            out += [f"<details><summary>{html.escape(b.summary)}</summary>", "",
                    f"```{b.lang}", b.text.rstrip("\n"), "```", "", "</details>", ""]
    return "\n".join(out)
