"""`autoresearch export-best` and `report --json`, through the real command line.

The export test trains for real (one tiny baseline run), exports the best model, and scores it
again in fresh processes: loaded with torch.export.load, evaluated by the harness's evaluator
from the export's own spec, it gives the val_bpb of its ledger row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.ledger import Ledger
from autoresearch.report.synthetic import Shape, make_research


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoresearch", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_report_json_is_the_status_document(make_workspace):
    ws = make_workspace()
    make_research(ws.root, Shape(experiments=6, steps=20))
    report = cli("report", "--json", cwd=ws.root)
    status = cli("status", "--json", cwd=ws.root)
    assert report.returncode == status.returncode == 0, report.stderr + status.stderr
    assert json.loads(report.stdout) == json.loads(status.stdout)
    assert json.loads(report.stdout)["schema_version"] == 1
    assert not (ws.root / "report.html").exists()  # --json prints the document, nothing else


def test_export_best_before_any_run_says_why(make_workspace, tmp_path):
    ws = make_workspace()
    done = cli("export-best", str(tmp_path / "out"), cwd=ws.root)
    assert done.returncode == 1 and "nothing to export" in done.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    done = cli("export-best", str(tmp_path / "taken"), cwd=ws.root)
    assert done.returncode == 1 and "not empty" in done.stderr


@pytest.mark.slow
def test_the_exported_best_model_scores_its_ledger_val_bpb_in_a_fresh_process(make_workspace, tmp_path):
    ws = make_workspace("ws", budget=2, baseline_runs=1)
    track = ["--track", "tensorboard"] if _importable("tensorboard") else []
    done = cli("loop", "--max-experiments", "0", "-q", *track, cwd=ws.root, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    row = Ledger.open(ws.ledger_path).rows[0]
    assert row.status == "keep" and row.val_bpb is not None

    out = tmp_path / "best"
    done = cli("export-best", str(out), cwd=ws.root)
    assert done.returncode == 0, done.stderr
    names = {p.name for p in out.iterdir()}
    assert {"model.pt2", "train.py", "autoresearch.toml", "README.md", "best.json", "eval-spec.json", "run",
            "tokenizer"} <= names
    assert (out / "train.py").read_bytes() == ws.git.show(row.commit, "train.py")
    assert json.loads((out / "run" / "row.json").read_text())["run_id"] == row.run_id
    best = json.loads((out / "best.json").read_text())
    assert best["run_id"] == row.run_id and best["val_bpb"] == row.val_bpb
    assert "torch.export.load" in (out / "README.md").read_text()

    # a fresh process loads it as the README says, and gets logits of the evaluation shape
    spec = json.loads((out / "eval-spec.json").read_text())
    batch, seq = spec["settings"]["eval_batch_size"], spec["settings"]["max_seq_len"]
    load = ("import torch; m = torch.export.load('model.pt2').module(); "
            f"print(tuple(m(torch.zeros(({batch}, {seq}), dtype=torch.long)).shape))")
    loaded = subprocess.run([sys.executable, "-c", load], cwd=out, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == str((batch, seq, spec["settings"]["vocab_size"]))

    # the harness's evaluator, in a fresh process from the export's spec, gives the ledger's val_bpb
    scored = subprocess.run([sys.executable, "-m", "autoresearch.evaluator", "--spec", "eval-spec.json", "--out",
                             "result.json"], cwd=out, capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["val_bpb"] == pytest.approx(row.val_bpb, abs=1e-6)  # the ledger holds 6 decimals

    if track:  # the real run's curve, in TensorBoard's own reader
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(ws.runs_dir / row.run_id / "tb"))
        events.Reload()
        assert {"train/loss", "train/lr_multiplier", "train/mfu", "train/tokens_per_s",
                "result/val_bpb"} <= set(events.Tags()["scalars"])


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
