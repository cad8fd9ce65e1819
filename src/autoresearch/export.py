"""`autoresearch export-best DIR`: the best commit's model, ready to use outside the workspace.

The best is what the state document (report/state.py) calls best; its model is the handed-over
program (`handed_over.pt2`, a `torch.export` file) of one of the kept runs of that commit, the
one the document names first. DIR receives:

    model.pt2          the handed-over model: torch.export.load(...).module()(idx) -> logits
    train.py           the best commit's train.py
    autoresearch.toml  the workspace's settings
    tokenizer/         the BPE tokenizer the model was trained with (tokenizer.tiktoken, tokenizer.json)
    run/               the run's record: result.json, row.json, eval.json, metrics.jsonl, diff.patch, ...
    eval-spec.json     a spec for the harness's evaluator, to score the model again
    best.json          what was exported: commit, run id, the ledger row's val_bpb and held-out bpb
    README.md          how to load, evaluate and sample from the model
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from autoresearch import atomic
from autoresearch.errors import AutoresearchError, ExportError
from autoresearch.ledger import Row
from autoresearch.report.state import document
from autoresearch.rundir import HANDED_OVER, read_object
from autoresearch.settings import SETTINGS_FILE
from autoresearch.workspace import TRAIN_FILE, Workspace

MODEL = "model.pt2"
RUN_FILES = ("result.json", "row.json", "eval.json", "metrics.jsonl", "diff.patch", "proposal.json", "train.log")
SPEC = "eval-spec.json"
BEST = "best.json"


@dataclass(frozen=True)
class Exported:
    folder: Path
    commit: str  # full hash
    run_id: str
    val_bpb: float | None  # the ledger row's
    heldout_bpb: float | None
    description: str


def export_best(ws: Workspace, dest: Path) -> Exported:
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"{dest} exists and is not empty: name a new folder for the export")
    best = document(ws.root).get("best")
    if not best:
        raise ExportError("no run has been measured yet: nothing to export (run `autoresearch loop` first)")
    row = _model_row(ws, best)
    commit = ws.git.rev(row.commit)
    settings = ws.settings()
    dest.mkdir(parents=True, exist_ok=True)
    model = dest / MODEL
    shutil.copyfile(ws.runs_dir / row.run_id / HANDED_OVER, model)
    atomic.write_bytes(dest / TRAIN_FILE, ws.git.show(commit, TRAIN_FILE))
    shutil.copyfile(ws.root / SETTINGS_FILE, dest / SETTINGS_FILE)
    (dest / "run").mkdir()
    for name in RUN_FILES:
        if (ws.runs_dir / row.run_id / name).is_file():
            shutil.copyfile(ws.runs_dir / row.run_id / name, dest / "run" / name)
    data_sha256 = _copy_tokenizer(settings, dest / "tokenizer")
    evaluation = read_object(ws.runs_dir / row.run_id, "eval.json")
    spec = {"settings": settings.as_dict(), "data_sha256": data_sha256, "model_file": MODEL,
            "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "device": evaluation.get("device") or "cpu", "autocast": evaluation.get("autocast")}
    atomic.write_json(dest / SPEC, spec)
    exported = Exported(dest.resolve(), commit, row.run_id, row.val_bpb, row.heldout_bpb, row.description)
    atomic.write_json(dest / BEST, {**asdict(exported), "folder": str(exported.folder),
                                    "workspace": str(ws.root.resolve()), "settings_sha256": settings.sha256()})
    atomic.write_text(dest / "README.md", readme(exported, settings.max_seq_len, settings.eval_batch_size,
                                                  bool(data_sha256)))
    return exported


def _model_row(ws: Workspace, best: dict) -> Row:
    """The kept run of the best commit whose model is still in its run folder (the best's own first)."""
    from autoresearch.ledger import Ledger

    rows = [r for r in Ledger.open(ws.ledger_path).rows
            if r.commit == best["commit"][:7] and r.status == "keep" and r.run_id]
    rows.sort(key=lambda r: r.run_id != best.get("run_id"))
    for row in rows:
        if (ws.runs_dir / row.run_id / HANDED_OVER).is_file():
            return row
    raise ExportError(f"no kept run of the best commit {best['commit']} still holds its model ({HANDED_OVER} in "
                      f"runs/<run>/); was the run folder deleted or copied without it?")


def _copy_tokenizer(settings, dest: Path) -> str:
    """The prepared tokenizer's files into `dest`; the data fingerprint ("" when the data is not prepared here)."""
    from autoresearch.data.prepare import open_prepared
    from autoresearch.tokenizer import META_FILE, RANKS_FILE

    try:
        prepared = open_prepared(settings)
    except AutoresearchError:
        return ""
    dest.mkdir()
    for name in (RANKS_FILE, META_FILE):
        shutil.copyfile(prepared.directory / name, dest / name)
    return prepared.data_sha256


def readme(e: Exported, seq_len: int, batch: int, spec_ok: bool) -> str:
    val = f"{e.val_bpb:.6f}" if e.val_bpb is not None else "-"
    rescore = (
        "Score it again with the harness's own evaluator (the workspace's data must be prepared on this\n"
        "machine; run from this folder):\n\n"
        "```\npython -m autoresearch.evaluator --spec eval-spec.json --out result.json && cat result.json\n```\n\n"
        f"`val_bpb` in result.json is the ledger's {val} (the evaluation is deterministic on one device).\n"
        if spec_ok else
        "The data was not prepared where this was exported, so `eval-spec.json` lacks its fingerprint: run\n"
        "`autoresearch prepare` in the workspace and export again to score the model with the evaluator.\n")
    return f"""# The best model of an autoresearch workspace

{e.description} — commit `{e.commit[:12]}`, run `{e.run_id}`, val_bpb {val} (validation bits per byte,
lower is better). `best.json` says the same in JSON; `run/` holds the run's record (result.json,
eval.json, metrics.jsonl, the change as diff.patch), `train.py` the code that trained it and
`autoresearch.toml` the settings it was measured under.

## Load it

`model.pt2` is a `torch.export` program (a graph and weights: no Python code of train.py is
needed). It takes token ids of shape ({batch}, {seq_len}) (the evaluation shape: batch
`eval_batch_size`, `max_seq_len` tokens) and returns logits (batch, seq, vocab):

```python
import torch
model = torch.export.load("model.pt2").module()
idx = torch.zeros(({batch}, {seq_len}), dtype=torch.long)
logits = model(idx)            # (batch, seq, vocab)
```

A shorter input must be padded to that shape (the rows it holds are independent).

## Evaluate it

{rescore}
## Sample from it

```python
import torch
from autoresearch.tokenizer import Tokenizer

tok = Tokenizer.from_directory("tokenizer")
model = torch.export.load("model.pt2").module()
ids = tok.encode("def main():", prepend=tok.get_bos_token_id())
with torch.inference_mode():
    for _ in range(100):
        window = ids[-{seq_len}:]
        x = torch.tensor([window + [0] * ({seq_len} - len(window))] * {batch})
        logits = model(x)[0, len(window) - 1].float()
        ids.append(int(torch.multinomial(torch.softmax(logits / 0.8, -1), 1)))
print(tok.decode(ids[1:]))
```
"""
