"""BPE tokenizer: trained with rustbpe, encoded with tiktoken, stored as plain text.

Storage (a folder):
- `tokenizer.tiktoken`: one line per ordinary token, `<base64 of its raw bytes> <id>`, the
  format tiktoken itself uses for its published encodings. No pickle anywhere: loading it cannot
  run code.
- `tokenizer.json`: the split pattern, the special tokens and the vocabulary size.

Byte lengths (`token_byte_lengths`) come from each token's raw bytes. Decoding a single token
to text and re-encoding it (as the reference does) miscounts tokens that hold part of a
multi-byte character: they decode to U+FFFD, which is 3 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tiktoken

from autoresearch import atomic
from autoresearch.errors import DataError

# GPT-4's split pattern, except that numbers split into groups of 1-2 digits (not 1-3): with a
# small vocabulary, fewer number tokens leave more room for text.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = tuple(f"<|reserved_{i}|>" for i in range(4))
BOS_TOKEN = SPECIAL_TOKENS[0]  # every document starts with it
RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer.json"
FORMAT_VERSION = 1


class Tokenizer:
    """The reference's tokenizer interface over a tiktoken encoding."""

    def __init__(self, ranks: dict[bytes, int], pattern: str = SPLIT_PATTERN) -> None:
        self.pattern = pattern
        self._ranks = ranks
        n = len(ranks)
        self.enc = tiktoken.Encoding(
            name="autoresearch",
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens={tok: n + i for i, tok in enumerate(SPECIAL_TOKENS)},
        )
        self.bos_token_id = n

    # --- building and storing -------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """Train BPE on `texts` to `vocab_size` tokens (including the 4 special tokens)."""
        import rustbpe

        n_ordinary = vocab_size - len(SPECIAL_TOKENS)
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(iter(texts), n_ordinary, pattern=SPLIT_PATTERN)
        ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
        if len(ranks) < n_ordinary:
            raise DataError(
                f"the training text only supports {len(ranks) + len(SPECIAL_TOKENS)} tokens, "
                f"fewer than vocab_size {vocab_size}: use a larger corpus or a smaller vocab_size"
            )
        return cls(ranks)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        lines = [
            f"{base64.b64encode(token).decode('ascii')} {rank}"
            for token, rank in sorted(self._ranks.items(), key=lambda kv: kv[1])
        ]
        atomic.write_text(directory / RANKS_FILE, "\n".join(lines) + "\n")
        meta = {
            "format_version": FORMAT_VERSION,
            "pattern": self.pattern,
            "special_tokens": list(SPECIAL_TOKENS),
            "vocab_size": self.get_vocab_size(),
        }
        atomic.write_json(directory / META_FILE, meta)

    @classmethod
    def from_directory(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        ranks_path, meta_path = directory / RANKS_FILE, directory / META_FILE
        if not ranks_path.exists() or not meta_path.exists():
            raise DataError(
                f"no tokenizer in {directory}: run `autoresearch prepare` in the workspace first"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            ranks: dict[bytes, int] = {}
            for line in ranks_path.read_text(encoding="ascii").splitlines():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(
                f"corrupt tokenizer in {directory} ({e}); delete the folder and run "
                "`autoresearch prepare` again"
            ) from None
        if sorted(ranks.values()) != list(range(len(ranks))) or meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"corrupt tokenizer in {directory}: delete the folder and run `autoresearch prepare` again"
            )
        tok = cls(ranks, meta["pattern"])
        if tok.get_vocab_size() != meta.get("vocab_size"):
            raise DataError(f"corrupt tokenizer in {directory}: vocabulary size does not match its metadata")
        return tok

    def sha256(self) -> str:
        h = hashlib.sha256(self.pattern.encode())
        for token, rank in sorted(self._ranks.items(), key=lambda kv: kv[1]):
            h.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
        return h.hexdigest()

    # --- the reference's interface ---------------------------------------------------------

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_special_tokens(self) -> set[str]:
        return set(SPECIAL_TOKENS)

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def encode_special(self, text: str) -> int:
        return self.enc.encode_single_token(text)

    def encode(
        self, text: str | list[str], prepend: str | int | None = None, num_threads: int = 8
    ) -> list[int] | list[list[int]]:
        """Encode a string or a list of strings; `prepend` is a special token (name or id)."""
        first = None
        if prepend is not None:
            first = prepend if isinstance(prepend, int) else self.encode_special(prepend)
        if isinstance(text, str):
            ids = self.enc.encode_ordinary(text)
            return ids if first is None else [first, *ids]
        if isinstance(text, list):
            batch = self.enc.encode_ordinary_batch(text, num_threads=num_threads)
            if first is not None:
                for ids in batch:
                    ids.insert(0, first)
            return batch
        raise TypeError(f"encode takes a str or a list of str, not {type(text).__name__}")

    def __call__(self, *args, **kwargs):
        return self.encode(*args, **kwargs)

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 byte length of every token id from its raw bytes; 0 for special tokens."""
        lengths = np.zeros(self.get_vocab_size(), dtype=np.int32)
        for token, rank in self._ranks.items():
            lengths[rank] = len(token)
        return lengths


def capped_texts(texts: Iterable[str], doc_cap: int, max_chars: int) -> Iterator[str]:
    """The reference's tokenizer-training diet: each document capped, the total capped."""
    seen = 0
    for text in texts:
        piece = text[:doc_cap]
        if seen + len(piece) > max_chars:
            piece = piece[: max_chars - seen]
        if piece:
            yield piece
        seen += len(piece)
        if seen >= max_chars:
            return
