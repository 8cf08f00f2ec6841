"""One self-contained HTML page for a report's records and metadata (see :class:`verify.report.Report`):
metadata, summary table, plots (embedded base64 PNG), conflict warnings and a collapsible per-input
table. No external resources; every piece of text goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import shlex
from typing import Any, Iterable, Sequence

from verify.report_compare import RADIUS_HEADER, compare_mode, headline, radius_rows
from verify.report_plots import Plot, make_plots
from verify.report_record import Radius, RadiusKind, Record
from verify.report_summary import (
    TABLE_HEADER, Conflict, MethodSummary, conflict_where, find_conflicts, find_radius_conflicts, fmt_eps, fmt_num,
    method_rank, summarize, summary_row,
)
from verify.results import SolverStatus, Verdict

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
tr.eps-start td { border-top: 2px solid #888; }
.certified { background: #d9f2d9; } .falsified { background: #f7d4d4; }
.unknown { background: #fdf3cf; } .error { background: #e0e0e0; }
.warning { background: #fbe3e3; border: 1px solid #c33; padding: 0.5em 1em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #444; max-width: 50em; }
img { max-width: 100%; height: auto; } .note { font-size: 0.9em; color: #444; }
.headline { background: #eef4fb; border: 1px solid #9bb8d8; padding: 0.3em 1em; } .headline li { margin: 0.3em 0; }
"""
MAX_INPUT_ROWS = 5000  # per-input rows on the page; the JSON report keeps every record
_SYMBOL = {Verdict.CERTIFIED: "cert", Verdict.FALSIFIED: "fals", Verdict.UNKNOWN: "unk", Verdict.ERROR: "err"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _flatten(d: dict, prefix: str = "") -> Iterable[tuple[str, str]]:
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        elif k == "command_line" and isinstance(v, list):
            yield f"{prefix}{k}", shlex.join(str(a) for a in v)
        else:
            yield f"{prefix}{k}", "-" if v is None else str(v)


def meta_table(meta: dict) -> str:
    """Run metadata as a two-column table (nested keys joined with dots)."""
    rows = "".join(f'<tr><th class="text">{_e(k)}</th><td class="text">{_e(v)}</td></tr>' for k, v in _flatten(meta))
    return f'<table class="meta">{rows}</table>'


def summary_table(summaries: Sequence[MethodSummary]) -> str:
    """The summary as an HTML table: one row per (eps, method), the same cells as the terminal table."""
    head = '<th class="text">eps</th>' + "".join(
        f'<th class="text">{_e(h)}</th>' if i == 0 else f"<th>{_e(h)}</th>" for i, h in enumerate(TABLE_HEADER))
    body, last = [], object()
    for s in summaries:
        start = ' eps-start' if s.eps != last else ""
        last = s.eps
        cells = "".join(f'<td class="text">{_e(c)}</td>' if i == 0 else f"<td>{_e(c)}</td>"
                        for i, c in enumerate(summary_row(s)))
        body.append(f'<tr class="summary{start}"><td class="text">{_e(fmt_eps(s.eps))}</td>{cells}</tr>')
    return f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _record_cell(r: Record | None) -> str:
    if r is None:
        return "<td>-</td>"
    tip = f"{r.verdict.value}; status {r.status.value}; {fmt_num(r.time_s)} s" + (f"; {r.message}" if r.message else "")
    return (f'<td class="{_e(r.verdict.value)}" title="{_e(tip)}">'
            f"{_e(_SYMBOL[r.verdict])} {_e(fmt_num(r.bound))}</td>")


def input_table(records: Sequence[Record], max_rows: int = MAX_INPUT_ROWS) -> str:
    """One row per (eps, input): each method's verdict and bound (hover for status, time and message); the
    first ``max_rows`` rows, with a note when more exist (the JSON report has them all)."""
    methods = sorted({r.method for r in records}, key=method_rank)
    by_case: dict[tuple[float | None, int], dict[str, Record]] = {}
    labels: dict[int, int | None] = {}
    for r in records:
        by_case.setdefault((r.eps, r.index), {})[r.method] = r
        labels[r.index] = r.label
    head = "<th>eps</th><th>input</th><th>label</th>" + "".join(f"<th>{_e(m)}</th>" for m in methods)
    rows = []
    cases = sorted(by_case, key=lambda k: (k[0] is not None, k[0] or 0.0, k[1]))
    for eps, index in cases[:max_rows]:
        cells = "".join(_record_cell(by_case[(eps, index)].get(m)) for m in methods)
        label = "-" if labels[index] is None else labels[index]
        rows.append(f"<tr><td>{_e(fmt_eps(eps))}</td><td>{index}</td><td>{_e(label)}</td>{cells}</tr>")
    more = f'<p class="note">first {max_rows} of {len(cases)} rows shown</p>' if len(cases) > max_rows else ""
    return f'<table class="inputs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}'


def conflicts_box(conflicts: Sequence[Conflict]) -> str:
    """A warning box listing contradictions between methods (empty string when there are none)."""
    if not conflicts:
        return ""
    items = "".join(f"<li>input {c.index}, {_e(conflict_where(c))}: {_e(c.kind.value)} ({_e(', '.join(c.methods))})</li>"
                    for c in conflicts)
    return (f'<div class="warning"><strong>{len(conflicts)} contradiction(s) between methods: some method is '
            f"unsound on these cases.</strong><ul>{items}</ul></div>")


def figure(plot: Plot) -> str:
    """A plot as ``<figure>`` with the PNG inline as a data URI."""
    data = base64.b64encode(plot.png).decode("ascii")
    return (f"<figure><h3>{_e(plot.title)}</h3><img alt=\"{_e(plot.title)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{_e(plot.caption)}</figcaption></figure>")


def render_html(records: Sequence[Record], meta: dict, title: str | None = None, radii: Sequence[Radius] = ()) -> str:
    """The whole page for a report's records, (JSON-safe) metadata and radii, as a string: what the run shows
    first, then the verdict table, the plots with captions, and the details (collapsed) last."""
    title = title or page_title(meta)
    summaries = summarize(records)
    methods = sorted({r.method for r in records} | {r.method for r in radii}, key=method_rank)
    compare = compare_mode(meta)
    plots = "".join(figure(p) for p in make_plots(records, summaries, radii, compare))
    n_inputs = len({r.index for r in records} | {r.index for r in radii})
    legend = ("cert.acc = certified / n (a lower bound on robust accuracy); 1-fals = 1 - falsified / n (an upper "
              "bound); times in seconds; gap = mean of (attack margin - method bound), how far each sound bound "
              f"lies below the attack. eps in {meta.get('eps_units', 'input units')}.")
    mode = ("Compare mode: every relaxation was solved to its optimum on every margin." if compare else
            "Verdict mode: each method stopped once its verdict was known (bounds of certified inputs are not optima).")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>", run_note(meta),
        f'<p class="note">{n_inputs} inputs, {len(records)} results, methods: {_e(", ".join(methods))}. {_e(mode)}</p>',
        find_conflicts_box(records, radii),
        '<h2 id="summary">What this run shows</h2>', headline_list(headline(records, radii, meta)),
        "<h2>Plots</h2>", plots or '<p class="note">no results to plot</p>',
        "<h2>Verdicts</h2>", summary_table(summaries), f'<p class="note">{_e(legend)}</p>',
        radius_section(radii),
        margin_section(records) if compare else "",
        "<h2>Per input</h2>",
        f"<details><summary>{len(records)} results (hover a cell for status, time and message)</summary>",
        input_table(records), "</details>",
        "<h2>Run</h2>", "<details><summary>Run metadata (versions, options)</summary>", meta_table(meta), "</details>",
        "</body></html>",
    ])


def find_conflicts_box(records: Sequence[Record], radii: Sequence[Radius]) -> str:
    """The conflicts box for records and radii."""
    return conflicts_box(find_conflicts(records) + find_radius_conflicts(radii))


def headline_list(lines: Sequence[str]) -> str:
    """The headline lines as a list in a highlighted box."""
    if not lines:
        return '<p class="note">no results</p>'
    return '<div class="headline"><ul>' + "".join(f"<li>{_e(t)}</li>" for t in lines) + "</ul></div>"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str) -> str:
    head = "".join(f'<th class="text">{_e(h)}</th>' if i == 0 else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="text">{_e(c)}</td>' if i == 0 else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def radius_section(radii: Sequence[Radius]) -> str:
    """Radius summary per method and, collapsed, every input's radii (empty string without radii)."""
    if not radii:
        return ""
    methods = sorted({r.method for r in radii}, key=method_rank)
    by_input: dict[int, dict[str, Radius]] = {}
    for r in radii:
        by_input.setdefault(r.index, {})[r.method] = r
    rows = []
    for index in sorted(by_input):
        cells = [by_input[index].get(m) for m in methods]
        label = next((r.label for r in cells if r is not None), None)
        rows.append((str(index), "-" if label is None else str(label),
                     *[("-" if r is None else _radius_cell(r)) for r in cells]))
    tol = fmt_num(radii[0].tol)
    return "\n".join([
        "<h2>Certified radius</h2>", _table(RADIUS_HEADER, radius_rows(radii), "radius"),
        f'<p class="note">Largest eps each method certifies, by bisection to {_e(tol)} (input units); for the attack, the '
        "smallest eps with a counterexample (an upper bound on the true radius). A capped radius (marked +) means "
        "certified on the whole input domain.</p>",
        f"<details><summary>{len(by_input)} inputs</summary>",
        _table(("input", "label", *methods), rows, "radius-inputs"), "</details>",
    ])


def _radius_cell(r: Radius) -> str:
    if r.kind is RadiusKind.MISCLASSIFIED:
        return "0 (misclassified)"
    if r.kind is RadiusKind.ERROR:
        return "error"
    v = r.radius
    if v is None:
        return f"none <= {fmt_num(r.cap)}"
    return fmt_num(v) + ("+" if r.kind is RadiusKind.CAPPED else "")


def margin_section(records: Sequence[Record], max_rows: int = MAX_INPUT_ROWS) -> str:
    """Compare mode: every input's per-margin values, one row per (eps, input, margin), collapsed."""
    methods = sorted({r.method for r in records if r.margins is not None}, key=method_rank)
    by_case: dict[tuple[float | None, int], dict[str, Record]] = {}
    for r in records:
        if r.margins is not None:
            by_case.setdefault((r.eps, r.index), {})[r.method] = r
    rows = []
    for (eps, index), recs in sorted(by_case.items(), key=lambda kv: (kv[0][0] is not None, kv[0][0] or 0.0, kv[0][1])):
        m = max(len(r.margins or ()) for r in recs.values())
        for k in range(m):
            cells = []
            for meth in methods:
                r = recs.get(meth)
                ok = r is not None and r.margins is not None and k < len(r.margins) and r.status is not SolverStatus.NOT_RUN
                cells.append(fmt_num(r.margins[k]) if ok else "-")  # type: ignore[union-attr, index]
            rows.append((fmt_eps(eps), str(index), str(k), *cells))
    shown = rows[:max_rows]
    more = f'<p class="note">first {max_rows} of {len(rows)} rows shown</p>' if len(rows) > max_rows else ""
    return "\n".join([
        "<h2>Optima per margin</h2>",
        '<p class="note">Each row is one margin (true class minus one other class) of one input at one eps: every '
        "verifier's optimum (a sound lower bound) and, under attack, the smallest value the attack reached (an upper "
        "bound). exact, where it ran, is the true minimum.</p>",
        f"<details><summary>{len(rows)} margins</summary>",
        _table(("eps", "input", "margin", *methods), shown, "margins"), more, "</details>",
    ])


def run_note(meta: dict) -> str:
    """One paragraph: model/network, hash, start time and command line (whichever the metadata has)."""
    net = meta.get("network")
    net = net if isinstance(net, dict) else {"shape": net} if isinstance(net, str) else {}
    parts = []
    what = " ".join(str(v) for v in (meta.get("model"), net.get("name"), net.get("shape")) if v)
    digest = net.get("hash") or meta.get("network_hash")
    if what or digest:
        parts.append(f"network {what}" + (f" (hash {digest})" if digest else ""))
    started = meta.get("start_time") or meta.get("started")
    if started:
        parts.append(f"started {started}")
    command = meta.get("command_line") or meta.get("command")
    if command:
        parts.append("command: " + (shlex.join(str(a) for a in command) if isinstance(command, list) else str(command)))
    notices = "".join(f'<p class="note"><strong>Note:</strong> {_e(n)}</p>' for n in meta.get("notices", ()))
    return (f'<p class="note">{_e("; ".join(parts))}</p>' if parts else "") + notices


def page_title(meta: dict) -> str:
    """``verify report: NAME`` with the network's name, else the model path, else ``network``."""
    net = meta.get("network")
    name = net.get("name") if isinstance(net, dict) else None
    return f"verify report: {name or meta.get('model') or 'network'}"
