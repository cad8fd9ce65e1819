"""Bits per byte, computed by harness code from a model's logits.

    val_bpb = sum(cross-entropy in nats over target tokens)
              / (ln 2 * sum(UTF-8 bytes of those target tokens))

Target tokens of byte length 0 (the special tokens) count in neither sum. The scored rows are
fixed by the settings: the first `eval_tokens // max_seq_len` rows of the split, packed by the
loader in stored document order. A caller's batch size only groups those rows, so it cannot
change what is measured (the reference scored `EVAL_TOKENS // (batch * seq)` batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from autoresearch.loader import DocumentStream, open_split, packed_rows

BUFFER_SIZE = 1000  # the loader's document buffer for evaluation rows (part of the definition)


@dataclass(frozen=True)
class Score:
    nats: float  # summed cross-entropy over counted target tokens
    bytes: int  # summed UTF-8 bytes of those tokens
    tokens: int  # target tokens scored (counted or not)

    @property
    def bpb(self) -> float:
        return self.nats / (math.log(2) * self.bytes) if self.bytes else float("nan")


def eval_rows(shard_paths, seq_len: int, n_tokens: int) -> np.ndarray:
    """The fixed evaluation rows of a split: (n_tokens // seq_len, seq_len + 1) int32."""
    n_rows = max(1, n_tokens // seq_len)
    stream = DocumentStream(open_split(shard_paths), shuffle=False)
    rows = packed_rows(stream, seq_len + 1, BUFFER_SIZE)
    return np.stack([next(rows) for _ in range(n_rows)])


def cross_entropy_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in nats, in float32, from (B, T, V) logits."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")


def score_rows(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rows: np.ndarray,
    token_bytes: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    fixed_batch: bool = False,
) -> Score:
    """Sum nats and bytes over `rows`, `batch_size` rows at a time.

    `forward(x, y)` returns per-token nats (B*T,). With `fixed_batch`, a short last batch is
    padded with copies of its first row (a program exported at a fixed shape needs that); the
    padding is never counted.
    """
    device = torch.device(device)
    token_bytes = token_bytes.to(device)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    all_rows = torch.from_numpy(rows.astype(np.int64))
    for start in range(0, len(rows), batch_size):
        block = all_rows[start : start + batch_size]
        real = len(block)
        if fixed_batch and real < batch_size:
            block = torch.cat([block, block[:1].expand(batch_size - real, -1)])
        block = block.to(device)
        x, y = block[:, :-1], block[:, 1:]
        loss = forward(x, y).reshape(len(block), -1)[:real].reshape(-1)
        yb = token_bytes[y[:real].reshape(-1)]
        counted = yb > 0
        nats += torch.where(counted, loss.double(), 0.0).sum()
        nbytes += yb.sum()
    return Score(nats=float(nats), bytes=int(nbytes), tokens=int(rows.shape[0] * (rows.shape[1] - 1)))


def logits_forward(model: Callable[..., object]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A scorer that computes the cross-entropy itself from `model(x)`'s logits."""

    def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy_nats(logits_of(model(x), x), y)

    return forward


def logits_of(out: object, x: torch.Tensor) -> torch.Tensor:
    """The (B, T, V) logits in a model's output, or a TypeError saying what was expected."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if isinstance(out, torch.Tensor) and out.dim() == 3 and out.shape[:2] == x.shape and out.is_floating_point():
        return out
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise TypeError(
        f"model(idx) must return logits of shape (batch, seq, vocab) = ({x.shape[0]}, {x.shape[1]}, V); "
        f"got {shape}. Make forward(idx, targets=None) return the logits when targets is None"
    )
