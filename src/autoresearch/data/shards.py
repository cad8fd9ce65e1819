"""Token shards: one file of pre-tokenized documents, memory-mapped for reading.

Layout (little-endian):
    magic      8 bytes   b"ARTOK1\\0\\0"
    itemsize   uint32    2 (uint16 tokens) or 4 (uint32 tokens)
    reserved   uint32    0
    n_docs     uint64
    n_tokens   uint64
    offsets    int64[n_docs + 1]   document d is tokens[offsets[d]:offsets[d+1]]
    tokens     uint16|uint32[n_tokens]

Each document starts with the BOS token. Shards are written atomically (temporary file, then
rename), so a shard that exists is complete; its size is checked against its header on open,
and its sha256 is recorded in the data manifest.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoresearch import atomic
from autoresearch.errors import DataError

MAGIC = b"ARTOK1\0\0"
HEADER = struct.Struct("<8sIIQQ")


@dataclass(frozen=True)
class Shard:
    path: Path
    offsets: np.ndarray  # int64, n_docs + 1
    tokens: np.ndarray  # uint16 or uint32, memory-mapped

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def write_shard(path: Path, docs: Sequence[Sequence[int]], vocab_size: int) -> None:
    dtype = token_dtype(vocab_size)
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate([np.asarray(d, dtype=dtype) for d in docs]) if docs else np.zeros(0, dtype)
    header = HEADER.pack(MAGIC, dtype.itemsize, 0, len(docs), len(tokens))
    atomic.write_bytes(path, header + offsets.tobytes() + tokens.tobytes())


def read_shard(path: Path) -> Shard:
    path = Path(path)
    fix = "delete it and run `autoresearch prepare` again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER.size)
    except FileNotFoundError:
        raise DataError(f"missing shard {path}: run `autoresearch prepare` again") from None
    if len(raw) < HEADER.size:
        raise DataError(f"corrupt shard {path} (truncated header): {fix}")
    magic, itemsize, _, n_docs, n_tokens = HEADER.unpack(raw)
    if magic != MAGIC or itemsize not in (2, 4):
        raise DataError(f"corrupt shard {path} (not a token shard): {fix}")
    expected = HEADER.size + 8 * (n_docs + 1) + itemsize * n_tokens
    if size != expected:
        raise DataError(f"corrupt shard {path} ({size} bytes, header says {expected}): {fix}")
    offsets = np.array(np.memmap(path, dtype=np.int64, mode="r", offset=HEADER.size, shape=(n_docs + 1,)))
    dtype = np.uint16 if itemsize == 2 else np.uint32
    tokens_at = HEADER.size + 8 * (n_docs + 1)
    if n_tokens:
        tokens = np.memmap(path, dtype=dtype, mode="r", offset=tokens_at, shape=(n_tokens,))
    else:
        tokens = np.zeros(0, dtype=dtype)
    if offsets[0] != 0 or offsets[-1] != n_tokens or np.any(np.diff(offsets) < 0):
        raise DataError(f"corrupt shard {path} (bad document offsets): {fix}")
    return Shard(path=path, offsets=offsets, tokens=tokens)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
