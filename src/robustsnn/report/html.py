"""One self-contained HTML file: inline CSS, figures as base64 PNG data URIs, no script, no fonts.

Nothing in the page refers to another file or to the network, so it can be
mailed, archived and opened offline. All text is escaped.
"""

from __future__ import annotations

import base64
from html import escape

from .document import Code, Document, Grid, Heading, Image, Para, Table, Warn

__all__ = ["render_html"]


def _t(text: str) -> str:
    """Text content: escape &, < and > (quotes are harmless outside attributes)."""
    return escape(text, quote=False)

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #1565c0; --bad: #b71c1c; --badbg: #fdecea;
        --ok: #2e7d32; --panel: #f7f9fb; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1260px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 10px; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; }
.subtitle { color: var(--muted); font-size: 13px; word-break: break-all; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
h4 { font-size: 14px; margin: 16px 0 6px; color: var(--muted); }
nav.toc { margin: 14px 0 4px; font-size: 13px; }
nav.toc a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
nav.toc a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
table.data tr:hover td { background: #fafbfc; }
table.summary { font-size: 14px; min-width: 60%; }
table.summary td:first-child { font-weight: 600; white-space: nowrap; color: var(--muted); padding-right: 24px; }
table.summary td { padding: 6px 12px; }
.strong { font-weight: 700; }
.bad { color: var(--bad); font-weight: 700; }
.ok { color: var(--ok); font-weight: 600; }
.muted { color: var(--muted); font-style: italic; }
p.note { color: var(--muted); font-size: 13px; }
p.note.na { background: var(--panel); border-left: 4px solid #9aa5b1; padding: 6px 10px; font-style: italic; }
p.ok { color: var(--ok); font-weight: 600; }
.warn { background: var(--badbg); border: 2px solid var(--bad); border-left-width: 8px; color: var(--bad);
        padding: 10px 14px; margin: 14px 0; border-radius: 4px; }
.warn .title { font-weight: 800; font-size: 15px; margin-bottom: 4px; }
.warn ul { margin: 4px 0 0 18px; padding: 0; }
.warn li { margin: 3px 0; }
figure { margin: 10px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 3px; max-width: 760px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px 22px; align-items: flex-start; }
.grid > * { flex: 0 1 auto; margin-top: 10px; }
.grid > figure { display: table; }
.grid > figure > figcaption { display: table-caption; caption-side: bottom; }
.grid > table { margin-top: 10px; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px; margin: 4px 0 12px;
      font: 12px/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
      white-space: pre-wrap; word-break: break-all; }
.codetitle { font-size: 12px; color: var(--muted); margin-top: 8px; }
details summary { cursor: pointer; font-size: 12px; color: var(--muted); margin: 6px 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { nav.toc { display: none; } h2 { page-break-after: avoid; } figure { page-break-inside: avoid; } }
"""


def _cell(cell, tag: str, cls: str) -> str:
    text, kind = (cell if isinstance(cell, tuple) else (cell, ""))
    classes = " ".join(c for c in (cls, kind) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<{tag}{attr}>{_t(str(text))}</{tag}>"


def _table(t: Table) -> str:
    n = max([len(t.header)] + [len(r) for r in t.rows])
    align = t.align or ("l" + "r" * (n - 1))
    cls = [("r" if (align[i] if i < len(align) else "r") == "r" else "") for i in range(n)]
    out = [f'<table class="{t.kind}">']
    if t.kind != "summary" and any(t.header):
        out.append("<thead><tr>" + "".join(_cell(h, "th", cls[i]) for i, h in enumerate(t.header)) + "</tr></thead>")
    out.append("<tbody>")
    for row in t.rows:
        out.append("<tr>" + "".join(_cell(c, "td", "" if t.kind == "summary" else cls[i]) for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _block(b, images: dict[str, bytes]) -> str:
    if isinstance(b, Para):
        cls = {"note": "note", "ok": "ok", "bad": "bad"}.get(b.kind, "")
        if b.kind == "note" and b.text.startswith("Not available"):
            cls = "note na"
        attr = f' class="{cls}"' if cls else ""
        return f"<p{attr}>{_t(b.text)}</p>"
    if isinstance(b, Heading):
        return f"<h{b.level}>{_t(b.text)}</h{b.level}>"
    if isinstance(b, Warn):
        items = "".join(f"<li>{_t(i)}</li>" for i in b.items)
        return f'<div class="warn" role="alert"><div class="title">&#9888; {_t(b.title)}</div><ul>{items}</ul></div>'
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Image):
        data = base64.b64encode(images[b.key]).decode("ascii")
        cap = f"<figcaption>{_t(b.caption)}</figcaption>" if b.caption else ""
        return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(b.alt)}">{cap}</figure>'
    if isinstance(b, Code):
        pre = f"<pre><code>{_t(b.text)}</code></pre>"
        if b.collapsed:
            return f"<details><summary>{_t(b.title)}</summary>{pre}</details>"
        return (f'<div class="codetitle">{_t(b.title)}</div>' if b.title else "") + pre
    if isinstance(b, Grid):
        return '<div class="grid">' + "".join(_block(x, images) for x in b.blocks) + "</div>"
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(doc: Document) -> str:
    """The whole page as one string."""
    toc = "".join(f'<a href="#{s.id}">{_t(s.title)}</a>' for s in doc.sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_t(doc.title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f'<header><h1>{_t(doc.title)}</h1><div class="subtitle">{_t(doc.subtitle)}</div>',
        f'<nav class="toc"><a href="#summary">Summary</a>{toc}</nav></header>',
        '<section id="summary"><h2>Summary</h2>',
        *(_block(b, doc.images) for b in doc.summary),
        "</section>",
    ]
    for s in doc.sections:
        parts.append(f'<section id="{s.id}"><h2>{_t(s.title)}</h2>')
        parts += [_block(b, doc.images) for b in s.blocks]
        parts.append("</section>")
    parts.append(f"<footer>{_t(doc.footer)}</footer></main></body></html>")
    return "\n".join(parts) + "\n"
