"""The live progress line: what it reads (the state file and the runs' metrics streams), what it
shows on a terminal and in a log, and the real `autoresearch run` showing it on a pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from rich.console import Console

from autoresearch.progress import LiveProgress, runs_under_way


def under_way(root, runs: dict[str, list[dict]], finished: tuple[str, ...] = ()) -> None:
    """A workspace-like folder whose loop runs `runs` (run id -> metrics records) for one change."""
    (root / ".autoresearch").mkdir(parents=True, exist_ok=True)
    flights = [{"phase": "running", "kind": "experiment", "description": "lower the learning rate",
                "runs": list(runs) + list(finished)},
               {"phase": "queued", "kind": "experiment", "description": "queued", "runs": []}]
    (root / ".autoresearch" / "flights.json").write_text(json.dumps(flights))
    for run_id, records in runs.items():
        run_dir = root / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for run_id in finished:
        (root / "runs" / run_id).mkdir(parents=True)
        (root / "runs" / run_id / "result.json").write_text("{}")


def test_the_line_shows_step_loss_rate_and_time_of_each_run_under_way(tmp_path):
    step = {"step": 41, "loss": 3.21456, "tokens_per_s": 12345.0, "training_seconds": 45.2}
    under_way(tmp_path, {"0004": [{"step": 40, "loss": 3.3}, step], "0005": []}, finished=("0003",))
    with open(tmp_path / "runs" / "0004" / "metrics.jsonl", "a") as f:
        f.write('{"step": 42, "lo')  # a record half written: the last whole one counts
    lines = [p.line() for p in runs_under_way(tmp_path, budget_s=60)]
    assert lines[0] == "run 0004  lower the learning rate  step 41  loss 3.215  12.3k tok/s  45 s of 60 s"
    assert lines[1].startswith("run 0005  lower the learning rate  starting (")
    assert len(lines) == 2  # 0003 has its result; the queued change has no run


def test_nothing_is_under_way_without_a_state_file(tmp_path):
    assert runs_under_way(tmp_path, budget_s=60) == []
    (tmp_path / ".autoresearch").mkdir()
    (tmp_path / ".autoresearch" / "flights.json").write_text("{not json")
    assert runs_under_way(tmp_path, budget_s=60) == []


def watch(tmp_path, terminal: bool, **kw) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120)
    with LiveProgress(tmp_path, 60, console=console, every_s=0.0, **kw):
        time.sleep(1.5)
    return out.getvalue()


def test_a_log_gets_plain_lines_and_a_terminal_an_updating_one(tmp_path):
    under_way(tmp_path, {"0004": [{"step": 7, "loss": 4.0, "tokens_per_s": 900.0, "training_seconds": 3.0}]})
    logged = watch(tmp_path, terminal=False)
    assert "run 0004  lower the learning rate  step 7  loss 4.000  0.9k tok/s  3 s of 60 s\n" in logged
    assert "\x1b" not in logged  # plain text for a file
    shown = watch(tmp_path, terminal=True)
    assert "step 7  loss 4.000" in shown and "\x1b[" in shown  # drawn, then redrawn in place
    assert watch(tmp_path, terminal=True, enabled=False) == ""  # --quiet


@pytest.mark.slow
def test_autoresearch_run_on_a_terminal_shows_the_run_training(make_workspace):
    ws = make_workspace(budget=6, baseline_runs=1)
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", "-m", "baseline"], cwd=ws.root,
                            stdin=child, stdout=child, stderr=child, env={**os.environ, "COLUMNS": "150"})
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "run 0001  baseline  step " in text and " tok/s " in text and " s of 6 s" in text
    assert "baseline: val_bpb" in text  # the loop's own lines still show
