"""The report as Markdown: the same blocks as the HTML, figures as PNG files linked relatively.

``render_markdown(doc, "report_files")`` links every figure as
``report_files/<key>.png``; :func:`robustsnn.report.write_report` writes those
files next to ``report.md``. Warnings are block quotes that start with
``**WARNING**``.
"""

from __future__ import annotations

from .document import Code, Document, Grid, Heading, Image, Para, Table, Warn

__all__ = ["render_markdown", "image_name"]


def image_name(key: str) -> str:
    """File name of a figure."""
    return f"{key}.png"


def _esc(text: str) -> str:
    """Text safe in a table cell (no pipes, no line breaks)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cell(cell) -> str:
    text, kind = (cell if isinstance(cell, tuple) else (cell, ""))
    text = _esc(text)
    if not text:
        return text
    if kind in ("strong", "bad"):
        return f"**{text}**"
    if kind == "muted":
        return f"*{text}*"
    return text


def _table(t: Table) -> list[str]:
    n = max([len(t.header)] + [len(r) for r in t.rows])
    align = t.align or ("l" + "r" * (n - 1))
    header = [_esc(h) for h in t.header] + [""] * (n - len(t.header))
    if t.kind == "summary":
        header = ["", ""]
    sep = [("---:" if (align[i] if i < len(align) else "r") == "r" and t.kind != "summary" else "---") for i in range(n)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    for row in t.rows:
        cells = [_cell(c) for c in row] + [""] * (n - len(row))
        if t.kind == "summary" and cells[0]:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return ticks


def _block(b, files_dir: str) -> list[str]:
    if isinstance(b, Para):
        if b.kind == "note":
            return [f"*{b.text}*", ""]
        if b.kind == "bad":
            return [f"**{b.text}**", ""]
        return [b.text, ""]
    if isinstance(b, Heading):
        return ["#" * b.level + " " + b.text, ""]
    if isinstance(b, Warn):
        return [f"> **WARNING: {b.title}**", ">"] + [f"> - {i}" for i in b.items] + [""]
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Image):
        out = [f"![{b.alt}]({files_dir}/{image_name(b.key)})", ""]
        if b.caption:
            out += [f"*{b.caption}*", ""]
        return out
    if isinstance(b, Code):
        f = _fence(b.text)
        return ([f"{b.title}:", ""] if b.title else []) + [f + ("json" if b.text.lstrip().startswith("{") else "sh"), b.text, f, ""]
    if isinstance(b, Grid):
        return [line for x in b.blocks for line in _block(x, files_dir)]
    raise TypeError(f"unknown block {type(b).__name__}")


def render_markdown(doc: Document, files_dir: str) -> str:
    """The whole report as Markdown; figures are linked as ``files_dir/<key>.png``."""
    lines = [f"# {doc.title}", "", f"`{doc.subtitle}`", "",
             "Contents: " + " · ".join(["[Summary](#summary)"] + [f"[{s.title}](#{s.id})" for s in doc.sections]), "",
             "## Summary", ""]
    for b in doc.summary:
        lines += _block(b, files_dir)
    for s in doc.sections:
        lines += [f'<a id="{s.id}"></a>', "", f"## {s.title}", ""]
        for b in s.blocks:
            lines += _block(b, files_dir)
    lines += ["---", "", f"*{doc.footer}*", ""]
    return "\n".join(lines)
