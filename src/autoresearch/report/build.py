"""`autoresearch report`: progress.png and report.html from a results folder, in one call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoresearch.errors import ReportError
from autoresearch.report import html, plot, reading


@dataclass(frozen=True)
class Built:
    progress: Path
    report: Path
    research: reading.Research


def build(folder: Path, out_dir: Path | None = None, warn: Callable[[str], None] = lambda _: None) -> Built:
    """Read `folder` (results.tsv, runs/) and write progress.png and report.html into `out_dir` (default:
    `folder`); `warn` gets each warning about the ledger's damage (ledger.warnings) first."""
    research = reading.load(folder)
    for line in research.warnings:
        warn(line)
    if not research.records and research.warnings:
        raise ReportError(f"{research.ledger_path} has no row that can be read (see the warnings): fix its "
                          "damaged lines, or `autoresearch ledger check --repair` to rebuild it from the run folders")
    if not research.records:
        raise ReportError(f"{research.ledger_path} has no runs yet: run `autoresearch loop` first")
    out = Path(out_dir) if out_dir is not None else research.folder
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(
            f"cannot write the report into {out} ({e.strerror}): choose another folder with --out") from None
    progress = plot.write_progress(research, out)
    report = html.write_report(research, out, progress.read_bytes())
    return Built(progress, report, research)
