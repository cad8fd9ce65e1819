"""`progress.png`: the whole research in one picture, in the style users of the reference know.

Every run is a point (x: its place in the ledger, y: val_bpb); kept changes that lowered the best
are highlighted and labelled with their descriptions; the running best is a step line; crashes,
timeouts and invalid runs, which have no val_bpb, sit on a strip above the plot; the noise band
(baseline mean +- one sigma of the repeated runs) shows which differences mean nothing.

The y axis is zoomed on the range that matters (from just below the best, or the lowest run if
lower, to a little above the baseline, or higher if that is needed to show three in four runs,
as early in a research when most changes are much worse); runs worse than that are drawn at the
top edge as upward triangles rather than squashing every gain into a flat line. The strip is
drawn only when some run has no val_bpb.

matplotlib is used through its object API with the Agg canvas, never pyplot: no global figure
state, safe in threads (the dashboard) and without a display.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autoresearch import atomic
from autoresearch.report.reading import Research, RunRecord
from autoresearch.status import signed

PROGRESS_FILE = "progress.png"
SIZE_INCHES = (14.0, 7.0)
DPI = 110
LABEL_CHARS = 44
LABEL_SIZE = 7.0  # points
LABEL_ANGLE = -35.0  # degrees: labels run down and to the right of their point, into the empty area below the best
LABEL_ROOM = 0.28  # share of the axes height kept free below the best for the labels
COLOURS = {
    "baseline": "#1f77b4", "keep": "#2ca02c", "discard": "#9a9a9a", "crash": "#d62728",
    "timeout": "#ff7f0e", "invalid": "#7f1d7f", "best": "#2ca02c", "band": "#1f77b4",
}


@dataclass(frozen=True)
class Scale:
    """The y range shown: [low, high] for values, then a strip above it for runs without a value."""

    low: float
    high: float
    strip: float | None  # y of the strip of crashes, timeouts and invalid runs; None when there are none
    top: float


def on_strip(record: RunRecord, high: float) -> bool:
    """Drawn on the strip above the plot: a run without a val_bpb, a crash or invalid run, or a timeout
    worse than the range shown."""
    row = record.row
    return (row.val_bpb is None or row.status in ("crash", "invalid")
            or (row.status == "timeout" and row.val_bpb > high))


def scale_for(research: Research) -> Scale:
    s = research.summary
    values = [r.row.val_bpb for r in research.records
              if r.row.val_bpb is not None and r.row.status not in ("crash", "invalid")]
    if not values or s.baseline is None or s.best is None:
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
    else:
        span = max(s.baseline - s.best, 3 * s.sigma, 1e-3 * abs(s.baseline), 1e-6)
        typical = statistics.quantiles(values, n=4)[2] if len(values) > 1 else values[0]  # 3 in 4 runs in view
        high = min(max(values), max(s.baseline + 0.8 * span, typical))
        high = max(high, s.baseline + 0.3 * span)
        top = high + 0.12 * (high - s.best)
        low = s.best - LABEL_ROOM / (1 - LABEL_ROOM) * (top - s.best)  # room below the best for its label
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    pad = high - low
    if values:  # every point below `high` stays in view, lucky discards below the best included,
        low = min(low, min(values) - 0.03 * pad)  # with room for its marker
    pad = high - low
    if any(on_strip(r, high) for r in research.records):
        return Scale(low, high, high + 0.07 * pad, high + 0.12 * pad)
    return Scale(low, high, None, high + 0.04 * pad)  # room for the markers of off-scale runs at the top edge


def progress_figure(research: Research) -> Figure:
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(fig)
    # fixed margins, not a layout engine: placing the labels needs the final axes box
    fig.subplots_adjust(left=0.06, right=0.985, top=0.93, bottom=0.08)
    ax = fig.add_subplot()
    s = research.summary
    scale = scale_for(research)
    records = research.records
    _noise_band(ax, research)
    _frontier(ax, records)
    _points(ax, records, scale)
    ax.set_ylim(scale.low, scale.top)
    ax.set_xlim(0, max(len(records), 1) + 1)
    _labels(ax, research.improvements())
    if scale.strip is not None:
        ax.axhline(scale.high + 0.035 * (scale.high - scale.low), color="#dddddd", linewidth=0.8)
        ax.text(-0.006, scale.strip, "no val_bpb", transform=ax.get_yaxis_transform(), fontsize=8,
                va="center", ha="right", color="#666666")  # where a tick label would be
    ax.set_xlabel("run (position in results.tsv)")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(True, color="#eeeeee", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(_title(research), loc="left", fontsize=11)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9, ncols=2)
    if s.best is not None:
        ax.text(0.995, 0.02, f"best {s.best:.6f}  {s.best_commit}", transform=ax.transAxes, ha="right",
                fontsize=8, color=COLOURS["best"])
    return fig


def write_progress(research: Research, out_dir: Path) -> Path:
    """Render progress.png into `out_dir` (atomically: a reader never sees half a file)."""
    import io

    fig = progress_figure(research)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path = Path(out_dir) / PROGRESS_FILE
    atomic.write_bytes(path, buffer.getvalue())
    return path


def _title(research: Research) -> str:
    s = research.summary
    head = f"autoresearch progress: {s.experiments} experiments, {s.kept} kept"
    if s.gain is not None and s.baseline is not None and s.best is not None:
        head += f"; val_bpb {s.baseline:.4f} -> {s.best:.4f} ({signed(-s.gain_percent, 2)}%)"
    return head


def _noise_band(ax, research: Research) -> None:
    s = research.summary
    if s.baseline is None:
        return
    ax.axhline(s.baseline, color=COLOURS["band"], linewidth=0.8, linestyle="--", alpha=0.6)
    if s.sigma > 0:
        ax.axhspan(s.baseline - s.sigma, s.baseline + s.sigma, color=COLOURS["band"], alpha=0.12, linewidth=0,
                   label=f"baseline +- 1 sigma noise ({s.sigma:.4f})")


def _frontier(ax, records: tuple[RunRecord, ...]) -> None:
    xs = [r.number for r in records if r.best is not None]
    ys = [r.best for r in records if r.best is not None]
    if not xs:
        return
    xs.append(records[-1].number + 0.5)
    ys.append(ys[-1])
    ax.step(xs, ys, where="post", color=COLOURS["best"], linewidth=1.8, alpha=0.85, label="running best")


def _points(ax, records: tuple[RunRecord, ...], scale: Scale) -> None:
    groups: dict[str, tuple[list[float], list[float]]] = {}
    above: tuple[list[float], list[float]] = ([], [])

    def add(group: str, x: float, y: float) -> None:
        xs, ys = groups.setdefault(group, ([], []))
        xs.append(x)
        ys.append(y)

    for r in records:
        row = r.row
        if row.val_bpb is None or row.status in ("crash", "invalid"):
            add(row.status, r.number, scale.strip)
        elif row.val_bpb > scale.high:
            above[0].append(r.number)
            above[1].append(scale.high)
            if row.status == "timeout":
                add("timeout", r.number, scale.strip)
        elif row.kind == "baseline":
            add("baseline", r.number, row.val_bpb)
        elif row.status == "timeout":
            add("timeout", r.number, row.val_bpb)
        elif r.improved:
            add("improved", r.number, row.val_bpb)
        elif row.kind in ("control", "audit"):
            add("again", r.number, row.val_bpb)  # a kept commit measured again
        elif row.status == "keep":
            add("keep", r.number, row.val_bpb)  # a confirmation run of a kept change
        else:
            add("discard", r.number, row.val_bpb)
    styles = {
        "discard": dict(s=16, color=COLOURS["discard"], alpha=0.6, label="discarded"),
        "baseline": dict(s=30, color=COLOURS["baseline"], label="baseline runs"),
        "keep": dict(s=18, color=COLOURS["keep"], alpha=0.5, label="kept, not a new best (e.g. confirmation run)"),
        "again": dict(s=22, facecolors="none", edgecolors=COLOURS["keep"], linewidths=1.2,
                      label="kept commit measured again (control, audit)"),
        "improved": dict(s=56, color=COLOURS["keep"], edgecolors="black", linewidths=0.7, zorder=4, label="kept"),
        "timeout": dict(s=40, color=COLOURS["timeout"], marker="v", label="timeout"),
        "crash": dict(s=36, color=COLOURS["crash"], marker="x", label="crash"),
        "invalid": dict(s=36, color=COLOURS["invalid"], marker="x", label="invalid (guard)"),
    }
    for group, style in styles.items():
        if group in groups:
            ax.scatter(*groups[group], **style)
    if above[0]:
        ax.scatter(*above, s=18, marker="^", color=COLOURS["discard"], label="worse (off scale)")


@dataclass(frozen=True)
class _Label:
    """A label's footprint on screen: a segment from its point, in pixels."""

    x: float
    y: float
    dx: float  # unit direction
    dy: float
    length: float

    def samples(self, n: int = 8) -> list[tuple[float, float]]:
        return [(self.x + self.dx * self.length * i / (n - 1), self.y + self.dy * self.length * i / (n - 1))
                for i in range(n)]

    def distance(self, px: float, py: float) -> float:
        t = max(0.0, min(self.length, (px - self.x) * self.dx + (py - self.y) * self.dy))
        return math.hypot(px - (self.x + self.dx * t), py - (self.y + self.dy * t))


def _labels(ax, improvements: list[RunRecord]) -> None:
    """Label kept changes, largest gains first, skipping a label that would overprint one already placed.

    A label runs down and to the right of its point, into the empty area below the running best;
    near the right edge it runs down and to the left instead, so it is not cut off.
    """
    fig = ax.figure
    char_px = LABEL_SIZE * 0.56 * fig.dpi / 72  # a typical glyph's width
    height_px = LABEL_SIZE * 1.7 * fig.dpi / 72  # a line of text and a little air
    left_edge, right_edge = ax.transAxes.transform((0.0, 0.0))[0], ax.transAxes.transform((1.0, 0.0))[0]
    angle = math.radians(LABEL_ANGLE)
    run = math.cos(angle)
    placed: list[_Label] = []
    for r in sorted(improvements, key=lambda r: -(r.step_gain or 0)):
        text = r.row.description
        if len(text) > LABEL_CHARS:
            text = text[:LABEL_CHARS - 3] + "..."
        x, y = ax.transData.transform((r.number, r.row.val_bpb))
        length = char_px * len(text)
        options = [d for d in (1.0, -1.0) if left_edge <= x + d * length * run <= right_edge] or [1.0]
        for sign in options:
            label = _Label(x, y, sign * run, math.sin(angle), length)
            if not any(other.distance(*p) < height_px for other in placed for p in label.samples()):
                break
        else:
            continue  # no room on either side: the point stays highlighted, the report lists it
        placed.append(label)
        leftward = sign < 0
        ax.annotate(text, (r.number, r.row.val_bpb), xytext=(-5, -4) if leftward else (5, -4),
                    textcoords="offset points", fontsize=LABEL_SIZE, rotation=-LABEL_ANGLE if leftward else LABEL_ANGLE,
                    rotation_mode="anchor", ha="right" if leftward else "left", va="top", color="#1b5e20",
                    clip_on=True)
