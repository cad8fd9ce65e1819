"""BOS-aligned best-fit packing over pre-tokenized shards.

The reference's semantics, exactly: every row of T+1 tokens is filled with whole documents (each
starting with BOS), always taking the longest buffered document that fits the space left; when
none fits, the shortest buffered document is cropped to fill the row, and its rest dropped. No
padding, every row starts with BOS. Inputs are row[:-1], targets row[1:].

What is not the reference's: the documents come from token shards (never tokenized on the fly),
and the choice of document is a binary search over buffered lengths instead of a scan of the
buffer in Python, so packing costs a few microseconds per document. Training documents are
visited in a fresh seeded permutation each epoch; validation documents in their stored order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from autoresearch.data.shards import Shard, read_shard

_SEQ_BITS = 40  # key = length << 40 | arrival number: sorts by length, then by age
_SEQ_MASK = (1 << _SEQ_BITS) - 1


class DocumentStream:
    """The documents of some shards, in order or shuffled per epoch, cycling forever."""

    def __init__(self, shard_list: list[Shard], shuffle: bool, seed: int = 0) -> None:
        if not shard_list or not sum(s.n_docs for s in shard_list):
            raise ValueError("no documents to stream")
        self.shards = shard_list
        self.doc_shard = np.concatenate([np.full(s.n_docs, i, dtype=np.int32) for i, s in enumerate(shard_list)])
        self.doc_start = np.concatenate([s.offsets[:-1] for s in shard_list])
        self.doc_len = np.concatenate([np.diff(s.offsets) for s in shard_list])
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._order: np.ndarray = np.zeros(0, dtype=np.int64)
        self._next = 0

    def __len__(self) -> int:
        return len(self.doc_len)

    def next_doc(self) -> int:
        """Index of the next document; starts a new epoch when the current one is used up."""
        if self._next >= len(self._order):
            self.epoch += 1
            n = len(self.doc_len)
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
            else:
                self._order = np.arange(n)
            self._next = 0
        doc = int(self._order[self._next])
        self._next += 1
        return doc

    def tokens(self, doc: int, n: int | None = None) -> np.ndarray:
        start = int(self.doc_start[doc])
        length = int(self.doc_len[doc]) if n is None else n
        return self.shards[self.doc_shard[doc]].tokens[start : start + length]


def packed_rows(stream: DocumentStream, row_len: int, buffer_size: int = 1000) -> Iterator[np.ndarray]:
    """Rows of `row_len` tokens, best-fit packed. Yields one int32 array per row."""
    keys: list[int] = []  # sorted buffer keys: length << 40 | arrival
    docs: dict[int, int] = {}  # arrival -> document index
    arrival = 0
    lengths = stream.doc_len
    while True:
        row = np.empty(row_len, dtype=np.int32)
        pos = 0
        while pos < row_len:
            while len(keys) < buffer_size:
                doc = stream.next_doc()
                bisect.insort(keys, (int(lengths[doc]) << _SEQ_BITS) | arrival)
                docs[arrival] = doc
                arrival += 1
            remaining = row_len - pos
            i = bisect.bisect_right(keys, (remaining << _SEQ_BITS) | _SEQ_MASK) - 1
            if i >= 0:  # the longest that fits; the oldest among equally long ones
                i = bisect.bisect_left(keys, keys[i] & ~_SEQ_MASK)
                take = keys[i] >> _SEQ_BITS
            else:  # nothing fits: crop the shortest (keys[0]; oldest among equals)
                i = 0
                take = remaining
            doc = docs.pop(keys.pop(i) & _SEQ_MASK)
            row[pos : pos + take] = stream.tokens(doc, take)
            pos += take
        yield row


def open_split(paths: list[Path]) -> list[Shard]:
    return [s for s in (read_shard(p) for p in paths) if s.n_docs]


def batches(
    stream: DocumentStream,
    batch_size: int,
    seq_len: int,
    device: str | torch.device = "cpu",
    buffer_size: int = 1000,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """(inputs, targets, epoch) batches of shape (batch_size, seq_len), int64, on `device`."""
    device = torch.device(device)
    rows = packed_rows(stream, seq_len + 1, buffer_size)
    pin = device.type == "cuda"
    while True:
        block = np.stack([next(rows) for _ in range(batch_size)])
        batch = torch.from_numpy(block).to(torch.int64)
        if pin:
            batch = batch.pin_memory()
        batch = batch.to(device, non_blocking=pin)
        yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous(), stream.epoch


def naive_packed_rows(docs: list[list[int]], row_len: int, buffer_size: int = 1000) -> Iterator[list[int]]:
    """The same algorithm written the straightforward way (a scan of the buffer per document).

    Documents are taken in the given order, cycling. Kept as the specification the fast loader
    is tested against, and as the comparison in bench/loader.py.
    """
    buffer: list[list[int]] = []
    it = 0
    while True:
        row: list[int] = []
        while len(row) < row_len:
            while len(buffer) < buffer_size:
                buffer.append(docs[it % len(docs)])
                it += 1
            remaining = row_len - len(row)
            best, best_len = -1, 0
            for j, d in enumerate(buffer):
                if best_len < len(d) <= remaining:
                    best, best_len = j, len(d)
            if best >= 0:
                row.extend(buffer.pop(best))
            else:
                shortest = min(range(len(buffer)), key=lambda j: len(buffer[j]))
                row.extend(buffer.pop(shortest)[:remaining])
        yield row
