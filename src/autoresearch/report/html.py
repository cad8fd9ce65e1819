"""`report.html`: the whole research in one self-contained page.

One file that can be mailed, archived or opened from a laptop months later: no scripts, styles,
fonts or images are fetched from anywhere (the progress plot is embedded as a data: URI, the loss
curves are inline SVG, the styles inline), and it needs no JavaScript.

Sections: the summary (the same lines `autoresearch status` prints), the progress plot, the kept
changes with their gains, every run in a table, then one entry per run with its description,
decision, loss curve against the baseline's, its diff, the log tail of a failed run, and links to
the change it was built on and to its neighbours.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np

from autoresearch import atomic
from autoresearch.report import reading
from autoresearch.report.reading import Curve, Research, RunRecord
from autoresearch.rundir import log_tail, read_proposal
from autoresearch.status import headline

REPORT_FILE = "report.html"
CHART_W, CHART_H, CHART_PAD = 560, 180, 34
STATUS_COLOURS = {"keep": "#2ca02c", "discard": "#8a8a8a", "crash": "#d62728", "timeout": "#ff7f0e",
                  "invalid": "#7f1d7f"}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1180px;padding:0 18px 60px;color:#222}
h1{margin:22px 0 4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
a{color:#0b62a4;text-decoration:none}a:hover{text-decoration:underline}
nav a{margin-right:14px}.muted{color:#777}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:3px 8px;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f6f6f6;border-bottom:1px solid #ccc}
tbody tr:nth-child(even){background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.summary{width:auto}table.summary th{padding-right:18px;color:#555;font-weight:600}
.badge{display:inline-block;padding:0 7px;border-radius:9px;color:#fff;font-size:12px}
.keep{background:#2ca02c}.discard{background:#8a8a8a}.crash{background:#d62728}.timeout{background:#ff7f0e}.invalid{background:#7f1d7f}
tr.new-best td{font-weight:600}
article{border:1px solid #e2e2e2;border-radius:6px;padding:8px 14px;margin:14px 0}
article h3{margin:4px 0}article dl{display:grid;grid-template-columns:max-content 1fr;gap:1px 14px;margin:6px 0}
article dt{color:#666}article dd{margin:0}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:420px}
.add{color:#116611;background:#eaffea;display:block}.del{color:#a11;background:#ffecec;display:block}.hunk{color:#0b62a4;display:block}
.facts{display:flex;flex-wrap:wrap;gap:4px 28px;align-items:flex-start}.facts dl{flex:1 1 380px}
.curve{display:block;margin:6px 0;flex:0 0 auto}img.progress{width:100%;height:auto;border:1px solid #eee}
.links a{margin-right:12px}
"""


def write_report(research: Research, out_dir: Path, progress_png: bytes | None) -> Path:
    """Write report.html into `out_dir` (atomically)."""
    path = Path(out_dir) / REPORT_FILE
    atomic.write_text(path, render(research, progress_png))
    return path


def render(research: Research, progress_png: bytes | None) -> str:
    diffs = reading.load_diffs(research)
    baseline = research.baseline_record()
    baseline_curve = reading.read_curve(baseline.run_dir) if baseline else None
    introduced = research.introduced_by()
    parts = [
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>autoresearch report: {escape(research.folder.name)}</title><style>{STYLE}</style></head><body>",
        _header(research),
        _summary(research),
        _progress(progress_png),
        _kept_table(research),
        _runs_table(research),
        "<h2 id=\"details\">Each run</h2>",
    ]
    records = research.records
    for i, rec in enumerate(records):
        previous = records[i - 1] if i > 0 else None
        following = records[i + 1] if i + 1 < len(records) else None
        parts.append(_article(rec, research, diffs.get(rec.anchor), baseline, baseline_curve, introduced,
                              previous, following))
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- sections ---------------------------------------------------------------------------------


def _header(research: Research) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    kind = ("a plain reference-format results.tsv (no run folders: no curves or logs; its first measured "
            "row is taken as the baseline)" if research.reference else "results.tsv and the run folders")
    return (f"<h1>autoresearch report</h1><p class=\"muted\">{escape(str(research.folder))} &middot; "
            f"{len(research.records)} runs &middot; from {kind} &middot; generated {when}</p>"
            "<nav><a href=\"#summary\">summary</a><a href=\"#progress\">progress</a><a href=\"#kept\">kept changes</a>"
            "<a href=\"#runs\">all runs</a><a href=\"#details\">each run</a></nav>")


def _summary(research: Research) -> str:
    rows = "".join(f"<tr><th>{escape(label)}</th><td>{escape(text)}</td></tr>"
                   for label, text in headline(research.summary, research.settings))
    return f"<h2 id=\"summary\">Summary</h2><table class=\"summary\">{rows}</table>"


def _progress(png: bytes | None) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (f"<h2 id=\"progress\">Progress</h2><img class=\"progress\" alt=\"val_bpb of every run, the running best "
            f"and the kept changes\" src=\"data:image/png;base64,{data}\">")


def _kept_table(research: Research) -> str:
    improvements = research.improvements()
    baseline = research.summary.baseline
    if not improvements:
        return "<h2 id=\"kept\">Kept changes</h2><p>No change has beaten the baseline yet.</p>"
    rows = []
    for rec in improvements:
        total = baseline - rec.best if baseline is not None and rec.best is not None else None
        rows.append(
            f"<tr><td class=\"num\">{rec.number}</td><td>{_link(rec)}</td><td><code>{escape(rec.row.commit)}</code></td>"
            f"<td class=\"num\">{_f(rec.best)}</td><td class=\"num\">{_signed(rec.step_gain)}</td>"
            f"<td class=\"num\">{_signed(total)}</td><td>{escape(rec.row.description)}</td></tr>")
    return ("<h2 id=\"kept\">Kept changes</h2><p class=\"muted\">Each kept change, the best val_bpb it reached "
            "(the mean of its runs), its gain over the best before it, and the gain over the baseline so far.</p>"
            "<table><thead><tr><th>#</th><th>run</th><th>commit</th><th>val_bpb</th><th>gain</th>"
            f"<th>total gain</th><th>description</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _runs_table(research: Research) -> str:
    rows = []
    for rec in research.records:
        row = rec.row
        cls = " class=\"new-best\"" if rec.improved else ""
        rows.append(
            f"<tr{cls}><td class=\"num\">{rec.number}</td><td>{_link(rec)}</td><td>{_badge(row.status)}</td>"
            f"<td>{escape(row.kind)}</td><td><code>{escape(row.commit)}</code></td><td class=\"num\">{_f(row.val_bpb)}</td>"
            f"<td class=\"num\">{_signed(_gain(rec))}</td><td class=\"num\">{_f(rec.best)}</td>"
            f"<td>{escape(row.description)}</td></tr>")
    return ("<h2 id=\"runs\">All runs</h2><table><thead><tr><th>#</th><th>run</th><th>status</th><th>kind</th>"
            "<th>commit</th><th>val_bpb</th><th>gain</th><th>best after</th><th>description</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _article(rec: RunRecord, research: Research, diff: str | None, baseline: RunRecord | None,
             baseline_curve: Curve | None, introduced: dict[str, RunRecord], previous: RunRecord | None,
             following: RunRecord | None) -> str:
    row = rec.row
    proposal = read_proposal(rec.run_dir)
    facts: list[tuple[str, str]] = [("val_bpb", escape(_f(row.val_bpb)))]
    if _gain(rec) is not None:
        facts.append(("gain", escape(f"{_signed(_gain(rec))} against the best before it ({_f(rec.best_before)})")))
    if row.why:
        facts.append(("decision", escape(row.why)))
    built_on = introduced.get(row.parent) if row.parent else None
    if row.parent:
        target = f"<a href=\"#{built_on.anchor}\">{escape(row.parent)}</a>" if built_on else escape(row.parent)
        facts.append(("built on", f"<code>{target}</code>"))
    if row.kind == "confirm":
        first = introduced.get(row.commit)
        if first is not None:
            facts.append(("confirms", f"<a href=\"#{first.anchor}\">run #{first.number}</a>"))
    if proposal.get("hypothesis"):
        facts.append(("hypothesis", escape(str(proposal["hypothesis"]))))
    if row.proposer:
        facts.append(("proposer", escape(row.proposer)))
    if row.flags:
        facts.append(("flags", escape(row.flags)))
    timing = _timing(row)
    if timing:
        facts.append(("run", escape(timing)))
    if row.cost_usd:
        facts.append(("cost", escape(f"${row.cost_usd:.4f}")))
    body = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    parts = [
        f"<article id=\"{rec.anchor}\"><h3>#{rec.number} {_badge(row.status)} {escape(row.description)}</h3>",
        f"<p class=\"muted\">run {escape(row.run_id or '-')} &middot; {escape(row.kind)} &middot; commit "
        f"<code>{escape(row.commit)}</code>{' &middot; ' + escape(row.timestamp) if row.timestamp else ''}</p>",
    ]
    curve = reading.read_curve(rec.run_dir)
    chart = ""
    if curve is not None:
        against = baseline_curve if baseline is not None and baseline is not rec else None
        chart = loss_chart(curve, against, STATUS_COLOURS.get(row.status, "#333"))
    parts.append(f"<div class=\"facts\"><dl>{body}</dl>{chart}</div>")
    if diff:
        parts.append(f"<details><summary>diff</summary><pre class=\"diff\">{_diff_html(diff)}</pre></details>")
    if row.status in ("crash", "timeout", "invalid"):
        tail = log_tail(rec.run_dir)
        if tail:
            parts.append(f"<details open><summary>end of train.log</summary><pre>{escape(tail)}</pre></details>")
    links = ["<a href=\"#runs\">all runs</a>"]
    if previous is not None:
        links.insert(0, f"<a href=\"#{previous.anchor}\">&larr; #{previous.number}</a>")
    if following is not None:
        links.append(f"<a href=\"#{following.anchor}\">#{following.number} &rarr;</a>")
    parts.append(f"<p class=\"links\">{''.join(links)}</p></article>")
    return "\n".join(parts)


# --- pieces -----------------------------------------------------------------------------------


def loss_chart(curve: Curve, baseline: Curve | None, colour: str) -> str:
    """An inline SVG: this run's training loss (solid) against the baseline's (dashed grey).

    The y axis starts at the lowest loss and stops at the loss a tenth of the way in, so the late
    part of training, where runs differ, fills the chart; the steep start is cut off at the top.
    """
    curves = [c for c in (curve, baseline) if c is not None]
    x_max = max(max(c.x) for c in curves) or 1.0
    y_min = min(min(c.loss) for c in curves)
    y_max = max(c.loss[min(len(c.loss) - 1, len(c.loss) // 10)] for c in curves)
    if y_max - y_min < 1e-9:
        y_max = y_min + 1.0
    w, h, p = CHART_W, CHART_H, CHART_PAD

    def points(c: Curve) -> str:  # whole pixels: plenty for a 560-pixel chart, and a third of the bytes
        px = np.rint(p + (w - p - 8) * np.asarray(c.x) / x_max).astype(int).tolist()
        py = np.rint(8 + (h - p - 8) * (1 - (np.minimum(c.loss, y_max) - y_min) / (y_max - y_min))).astype(int).tolist()
        return " ".join(map("{},{}".format, px, py))

    lines = []
    if baseline is not None:
        lines.append(f"<polyline fill=\"none\" stroke=\"#999\" stroke-dasharray=\"4 3\" stroke-width=\"1.3\" "
                     f"points=\"{points(baseline)}\"><title>baseline</title></polyline>")
    lines.append(f"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" points=\"{points(curve)}\">"
                 f"<title>this run</title></polyline>")
    final = f"final loss {curve.loss[-1]:.4f}" + (f" (baseline {baseline.loss[-1]:.4f})" if baseline else "")
    return (
        f"<svg class=\"curve\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" "
        f"aria-label=\"training loss\">"
        f"<rect x=\"{p}\" y=\"8\" width=\"{w - p - 8}\" height=\"{h - p - 8}\" fill=\"#fcfcfc\" stroke=\"#ddd\"/>"
        + "".join(lines)
        + f"<text x=\"{p - 4}\" y=\"14\" font-size=\"10\" text-anchor=\"end\">{y_max:.2f}</text>"
        f"<text x=\"{p - 4}\" y=\"{h - p}\" font-size=\"10\" text-anchor=\"end\">{y_min:.2f}</text>"
        f"<text x=\"{w - 8}\" y=\"{h - p + 14}\" font-size=\"10\" text-anchor=\"end\">{x_max:.4g}</text>"
        f"<text x=\"{p}\" y=\"{h - p + 14}\" font-size=\"10\">0</text>"
        f"<text x=\"{(w + p) / 2:.0f}\" y=\"{h - 6}\" font-size=\"10\" text-anchor=\"middle\">"
        f"{escape(curve.x_label)} &middot; training loss, this run (solid) vs baseline (dashed) &middot; {final}</text>"
        "</svg>")


def _diff_html(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        text = escape(line) or " "
        if line.startswith("+") and not line.startswith("+++"):
            out.append(f"<span class=\"add\">{text}</span>")
        elif line.startswith("-") and not line.startswith("---"):
            out.append(f"<span class=\"del\">{text}</span>")
        elif line.startswith("@@"):
            out.append(f"<span class=\"hunk\">{text}</span>")
        else:
            out.append(text + "\n")
    return "".join(out)


def _timing(row) -> str:
    bits = []
    if row.training_seconds is not None:
        bits.append(f"trained {row.training_seconds:.0f} s")
    if row.wall_seconds is not None:
        bits.append(f"{row.wall_seconds:.0f} s in all")
    if row.num_steps is not None:
        bits.append(f"{row.num_steps} steps")
    if row.total_tokens_m is not None:
        bits.append(f"{row.total_tokens_m:.1f}M tokens")
    if row.mfu_percent is not None:
        bits.append(f"MFU {row.mfu_percent:.1f}%")
    if row.memory_gb:
        bits.append(f"{row.memory_gb:.1f} GB")
    return ", ".join(bits)


def _gain(rec: RunRecord) -> float | None:
    """The row's own gain (what the decision saw) where the ledger has it, else against the running best."""
    if rec.row.gain is not None:
        return rec.row.gain
    if rec.row.kind == "baseline" or rec.row.val_bpb is None or rec.best_before is None:
        return None
    return rec.best_before - rec.row.val_bpb


def _link(rec: RunRecord) -> str:
    return f"<a href=\"#{rec.anchor}\">{escape(rec.row.run_id or f'row {rec.number}')}</a>"


def _badge(status: str) -> str:
    return f"<span class=\"badge {escape(status)}\">{escape(status)}</span>"


def _f(value: float | None) -> str:
    return f"{value:.6f}" if value is not None else "-"


def _signed(value: float | None) -> str:
    return f"{value:+.6f}" if value is not None else ""
