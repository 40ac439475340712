"""The report's four formats: Markdown, CSV (full precision, one line per row), LaTeX (booktabs,
pastes into a paper) and HTML (self-contained, linking each run's error browser)."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path

from mean_geo.reporting.tables import (
    CONFIG_FIELDS,
    ReportTable,
    browser_links,
    cell_text,
    describe_protocol,
    metric_text,
)

FORMATS = (".md", ".csv", ".tex", ".html")
_STD_NOTE = "Several seeds: mean ± sample standard deviation; n = runs."


def _headers(table: ReportTable) -> list[str]:
    return [*table.columns, "n", *table.metrics]


def _cells(table: ReportTable, row, plus_minus: str = " ± ") -> list[str]:
    return [
        *(cell_text(row, c) for c in table.columns),
        str(row.n),
        *(metric_text(row, m, plus_minus) for m in table.metrics),
    ]


def _summary(tables: Sequence[ReportTable], differ: Sequence[str]) -> str:
    runs = {r.folder for t in tables for row in t.rows for r in row.runs}
    text = f"{len(runs)} runs, {len(tables)} protocol{'s' if len(tables) != 1 else ''}"
    conventions = list(dict.fromkeys(str(t.protocol.get("convention")) for t in tables))
    text += f"; conventions {', '.join(conventions)}"
    if differ:
        text += (
            f"; the protocols differ in: {', '.join(differ)} (rows of different protocols are never ranked together)"
        )
    return text + ". " + _STD_NOTE


def markdown(tables: Sequence[ReportTable], differ: Sequence[str]) -> str:
    out = ["# Results", "", _summary(tables, differ), ""]
    for i, table in enumerate(tables, 1):
        out += [f"## Table {i}: {table.label}", "", f"Protocol: {describe_protocol(table.protocol)}", ""]
        headers = _headers(table)
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join("---" if j < len(table.columns) else "---:" for j in range(len(headers))) + "|")
        for row in table.rows:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(table, row)) + " |")
        out.append("")
    return "\n".join(out)


def csv_text(tables: Sequence[ReportTable], differ: Sequence[str]) -> str:
    """Every row of every table, values at full precision (mean, std), with its protocol."""
    metrics = list(dict.fromkeys(m for t in tables for m in t.metrics))
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(
        ["table", "protocol", "protocol_fields", "convention", *CONFIG_FIELDS, "n", "seeds"]
        + [c for m in metrics for c in (m, f"{m}_std")]
        + ["runs"]
    )
    for i, table in enumerate(tables, 1):
        for row in table.rows:
            values = []
            for m in metrics:
                mean, std = row.mean(m), row.std(m)
                values += ["" if mean is None else repr(mean), "" if std is None else repr(std)]
            out.writerow(
                [i, table.protocol.get("id"), table.label, table.protocol.get("convention")]
                + ["" if row.config.get(c) is None else row.config[c] for c in CONFIG_FIELDS]
                + [row.n, " ".join(map(str, row.seeds))]
                + values
                + [" ".join(str(r.folder) for r in row.runs)]
            )
    return buffer.getvalue()


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def latex(tables: Sequence[ReportTable], differ: Sequence[str]) -> str:
    """One ``table`` environment per protocol (needs ``\\usepackage{booktabs}``)."""
    out = [f"% mean_geo report: {tex_escape(_summary(tables, differ))}", "% needs \\usepackage{booktabs}", ""]
    for table in tables:
        caption = describe_protocol(table.protocol).replace(" · ", "; ")
        align = "l" * len(table.columns) + "r" * (1 + len(table.metrics))
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{tex_escape(table.label)}. {tex_escape(caption)}.}}",
            f"\\begin{{tabular}}{{{align}}}",
            "\\toprule",
            " & ".join(tex_escape(h) if h != "n" else "$n$" for h in _headers(table)) + " \\\\",
            "\\midrule",
        ]
        for row in table.rows:
            cells = [tex_escape(c) for c in _cells(table, row, plus_minus="PLUSMINUS")]
            out.append(" & ".join(c.replace("PLUSMINUS", " $\\pm$ ") for c in cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def html_page(tables: Sequence[ReportTable], differ: Sequence[str], out: Path) -> str:
    """A page with no request to any server; each row links its runs' error browsers."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mean_geo report</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0 1.5em}",
        "th,td{padding:3px 10px;border-bottom:1px solid #ddd}td.num,th.num{text-align:right}",
        "thead th{border-bottom:2px solid #444}.protocol{color:#555}h2{margin-bottom:.2em}",
        "</style></head><body><h1>Results</h1>",
        f"<p class='summary'>{html.escape(_summary(tables, differ))}</p>",
    ]
    for i, table in enumerate(tables, 1):
        parts.append(f"<section class='report-table' data-protocol='{html.escape(str(table.protocol.get('id')))}'>")
        parts.append(f"<h2>Table {i}: {html.escape(table.label)}</h2>")
        parts.append(
            f"<p class='protocol'>Protocol: {html.escape(describe_protocol(table.protocol))}</p><table><thead><tr>"
        )
        headers = _headers(table)
        parts += [
            f"<th class='{'num' if j >= len(table.columns) else 'text'}'>{html.escape(h)}</th>"
            for j, h in enumerate(headers)
        ]
        parts.append("<th>error browser</th></tr></thead><tbody>")
        for row in table.rows:
            parts.append("<tr class='report-row'>")
            for j, cell in enumerate(_cells(table, row)):
                parts.append(f"<td class='{'num' if j >= len(table.columns) else 'text'}'>{html.escape(cell)}</td>")
            links = " ".join(
                f"<a class='browser-link' href='{html.escape(href)}'>{html.escape(label)}</a>"
                for label, href in browser_links(row, out.parent)
            )
            parts.append(f"<td>{links or '-'}</td></tr>")
        parts.append("</tbody></table></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render(tables: Sequence[ReportTable], differ: Sequence[str], out: Path) -> str:
    """The report in the format ``out``'s suffix names."""
    suffix = out.suffix.lower()
    if suffix == ".md":
        return markdown(tables, differ)
    if suffix == ".csv":
        return csv_text(tables, differ)
    if suffix == ".tex":
        return latex(tables, differ)
    return html_page(tables, differ, out)
