"""HTML building blocks shared by the sweep page (:mod:`lowbit.report.build`) and the ptq / search
sections (:mod:`lowbit.report.sections`): the style sheet, embedded images, tables, a whole page.

Images are embedded as base64 and tables as HTML, so a page is one self-contained file.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:0.5em 0 1.5em}
.failed td{background:#fee}code{background:#f4f4f4;padding:1px 4px}"""


def img_tag(path: Path, alt: str) -> str:
    """``<img>`` with the PNG at ``path`` embedded as base64."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(df: pd.DataFrame, index: bool = False, float_format: str = "{:.2f}") -> str:
    """``df`` as an HTML table (or "(empty)")."""
    if df.empty:
        return "<p>(empty)</p>"
    return df.to_html(index=index, border=0, na_rep="-", escape=True,
                      float_format=float_format.format, classes="results")


def html_page(title: str, sections: list[str]) -> str:
    """A whole page: title, generation time, then ``sections`` (HTML strings)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>\n" + "\n".join(sections) + "\n</body></html>\n")
