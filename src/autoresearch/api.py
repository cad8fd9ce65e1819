"""The fixed API a workspace's `prepare.py` re-exports to `train.py`.

The names, signatures and meanings are the reference's (`MAX_SEQ_LEN`, `TIME_BUDGET`,
`EVAL_TOKENS`, `Tokenizer`, `make_dataloader`, `evaluate_bpb`, `get_token_bytes`), bound to one
workspace's frozen settings and prepared data, so a reference-style train.py runs unchanged.
One name is added: `training_clock()`, the clock TIME_BUDGET counts (clock.py). Two
differences are the point of this project:
- `make_dataloader(..., "val")` is refused: validation data is the evaluator's alone;
- inside a run, `evaluate_bpb` hands the model over to the runner (handover.py) before it
  computes its own number, which is only informational.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from autoresearch import clock, handover, processes
from autoresearch import settings as settings_mod
from autoresearch.data.prepare import PreparedData, open_prepared
from autoresearch.devices import best_device
from autoresearch.errors import AutoresearchError
from autoresearch.evaluate import eval_rows, logits_forward, score_rows
from autoresearch.loader import DocumentStream, batches, open_split
from autoresearch.rundir import INPROCESS_RECORD, METRICS_FILE
from autoresearch.tokenizer import Tokenizer



class Harness:
    """The harness API for one workspace."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)
        self.settings = settings_mod.load(self.workspace)
        self._metrics_file = None

    # --- constants --------------------------------------------------------------------------

    @property
    def max_seq_len(self) -> int:
        return self.settings.max_seq_len

    @property
    def time_budget(self) -> float | int:
        budget = self.settings.time_budget
        return int(budget) if float(budget).is_integer() else budget

    @property
    def eval_tokens(self) -> int:
        return self.settings.eval_tokens

    @property
    def vocab_size(self) -> int:
        return self.settings.vocab_size

    @cached_property
    def prepared(self) -> PreparedData:
        key = processes.agent_key()
        if key:  # an agent running train.py would train (and evaluate) outside the harness's run
            raise AutoresearchError(
                f"the data is refused inside a proposer's agent ({processes.ENV_RUN_ID}={key}): no training or "
                "evaluation while proposing; the harness runs the experiment after the agent exits. "
                "Check the change with `python -m py_compile train.py`")
        return open_prepared(self.settings)

    # --- the reference's functions ------------------------------------------------------------

    @cached_property
    def Tokenizer(self) -> type[Tokenizer]:  # noqa: N802 - the reference's name
        harness = self

        class WorkspaceTokenizer(Tokenizer):
            """Tokenizer whose from_directory() defaults to this workspace's prepared tokenizer."""

            @classmethod
            def from_directory(cls, tokenizer_dir: str | Path | None = None) -> Tokenizer:
                return Tokenizer.from_directory(tokenizer_dir or harness.prepared.directory)

        return WorkspaceTokenizer

    def make_dataloader(
        self,
        tokenizer: Tokenizer | None,
        B: int,  # noqa: N803 - the reference's names
        T: int,
        split: str,
        buffer_size: int = 1000,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Endless (inputs, targets, epoch) batches of the training split, on `device`."""
        if split != "train":
            raise AutoresearchError(
                f"make_dataloader(..., {split!r}) is refused: the validation data belongs to the "
                "harness's evaluator. Train on split 'train'; measure with evaluate_bpb(model, tokenizer, batch_size)"
            )
        if B < 1 or T < 1:
            raise ValueError(f"batch size and sequence length must be positive, got B={B}, T={T}")
        stream = DocumentStream(open_split(self.prepared.shard_paths("train")), shuffle=True, seed=seed)
        return batches(stream, B, T, device or best_device(), buffer_size)

    def get_token_bytes(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """UTF-8 byte length of every token id (0 for special tokens), int32."""
        return torch.from_numpy(self.prepared.tokenizer().token_byte_lengths()).to(device)

    def evaluate_bpb(self, model: torch.nn.Module, tokenizer: Tokenizer | None, batch_size: int) -> float:
        """Validation bits per byte of `model`.

        Inside a run this first hands the model over to the runner, whose evaluator computes the
        number that counts; the value returned here is computed in this process and is only
        informational (the run is flagged if the two disagree).
        """
        s = self.settings
        handover.hand_over(model, s.eval_batch_size, s.max_seq_len, s.vocab_size)
        started = time.perf_counter()
        device = handover.model_device(handover.unwrap(model))
        rows = eval_rows(self.prepared.shard_paths("val"), s.max_seq_len, s.eval_tokens)
        token_bytes = self.get_token_bytes(device)
        with torch.no_grad():
            forward = logits_forward(model)
            try:
                probe = rows[:1]
                score_rows(forward, probe, token_bytes, 1, device)
            except TypeError:
                forward = _loss_forward(model)  # the reference's model(x, y, reduction='none') form
            score = score_rows(forward, rows, token_bytes, max(1, batch_size), device)
        value = score.bpb
        directory = handover.run_dir()
        if directory is not None:
            record = {"val_bpb": value, "seconds": round(time.perf_counter() - started, 2), "tokens": score.tokens}
            (directory / INPROCESS_RECORD).write_text(json.dumps(record) + "\n")
        return value

    # --- additions -----------------------------------------------------------------------------

    @cached_property
    def training_clock(self) -> Callable[[], float]:
        """The clock TIME_BUDGET counts, in seconds (clock.py): wall time, or on the `cpu` clock
        the process's own time on the CPUs (call it from train.py's main thread)."""
        return clock.training_clock(self.settings.clock)

    def log_metrics(self, **values: Any) -> None:
        """Append one record (e.g. step, loss, lr, tokens_per_s, grad_norm) to the metrics stream."""
        if self._metrics_file is None:
            directory = handover.run_dir() or self.workspace / "runs" / "manual"
            directory.mkdir(parents=True, exist_ok=True)
            self._metrics_file = open(directory / METRICS_FILE, "a", buffering=1)
        clean = {k: (float(v) if isinstance(v, float) and math.isfinite(v) else v) for k, v in values.items()}
        self._metrics_file.write(json.dumps(clean, default=float) + "\n")

    def prepare_main(self, argv: list[str] | None = None) -> None:
        """`python prepare.py`: prepare this workspace's data."""
        from autoresearch.cli import main

        os.chdir(self.workspace)
        sys.exit(main(["prepare", *(argv if argv is not None else sys.argv[1:])]))


def _loss_forward(model: torch.nn.Module):
    def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(x, y, reduction="none").reshape(-1).float()

    return forward

