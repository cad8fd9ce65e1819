"""Turn a dataset into a tokenizer and token shards, once, in a cache shared by workspaces.

    $AUTORESEARCH_CACHE (default ~/.cache/autoresearch)/
        downloads/<dataset>/...          raw files from the hub, resumable
        prepared/<name>-<key>/           one folder per distinct data settings
            tokenizer.tiktoken, tokenizer.json
            <unit>.<split>.tok           token shards (data/shards.py)
            manifest.json                written last: its presence means "complete"

Every step can be interrupted and resumed: downloads continue their partial file, the tokenizer
and each unit's shards are written atomically and skipped when present.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoresearch import atomic
from autoresearch.data import shards
from autoresearch.data.sources import SPLITS, Source, Unit, parse_dataset, split_document
from autoresearch.errors import DataError
from autoresearch.settings import Settings
from autoresearch.tokenizer import BOS_TOKEN, Tokenizer, capped_texts

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
ENCODE_BATCH = 2048  # documents per tiktoken batch call


def cache_root() -> Path:
    return Path(os.environ.get("AUTORESEARCH_CACHE") or Path.home() / ".cache" / "autoresearch")


def prepared_dir(settings: Settings, source: Source | None = None) -> Path:
    source = source or parse_dataset(settings.dataset)
    key = json.dumps({"data": settings.data_key(), "source": source.cache_key()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / "prepared" / f"{source.name}-v{settings.vocab_size}-{digest}"


def downloads_dir(source: Source) -> Path:
    return cache_root() / "downloads" / source.name


def data_sha256(entries: dict[str, list[dict]], tokenizer_sha256: str) -> str:
    """The data fingerprint: every shard's checksum, by split, and the tokenizer's."""
    h = hashlib.sha256()
    for split in SPLITS:
        for e in entries[split]:
            h.update(f"{split}:{e['file']}:{e['sha256']}\n".encode())
    h.update(tokenizer_sha256.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class PreparedData:
    """A complete prepared dataset: tokenizer, shards and their manifest."""

    directory: Path
    manifest: dict

    @property
    def data_sha256(self) -> str:
        return self.manifest["data_sha256"]

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer"]["sha256"]

    def shard_paths(self, split: str) -> list[Path]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
        return [self.directory / entry["file"] for entry in self.manifest["splits"][split]]

    def n_tokens(self, split: str) -> int:
        return sum(entry["n_tokens"] for entry in self.manifest["splits"][split])

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_directory(self.directory)

    def verify(self, splits: tuple[str, ...] = SPLITS) -> None:
        """Check every shard of `splits` against the sha256 in the manifest."""
        for split in splits:
            for entry in self.manifest["splits"][split]:
                path = self.directory / entry["file"]
                if not path.exists():
                    raise DataError(f"missing shard {path}: run `autoresearch prepare` again")
                if shards.file_sha256(path) != entry["sha256"]:
                    raise DataError(
                        f"shard {path} does not match its recorded checksum (corrupt or modified): "
                        "delete it and run `autoresearch prepare` again"
                    )


def open_prepared(settings: Settings) -> PreparedData:
    """The prepared data for these settings, or a clear error saying how to make it."""
    directory = prepared_dir(settings)
    path = directory / MANIFEST
    if not path.exists():
        raise DataError(
            f"data for dataset {settings.dataset!r} (vocab {settings.vocab_size}) is not prepared: "
            "run `autoresearch prepare` in the workspace"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"corrupt {path}: delete it and run `autoresearch prepare` again") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path} was written by another version: run `autoresearch prepare` again")
    return PreparedData(directory, manifest)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One preparer per folder at a time (two workspaces, or two nodes on a shared disk)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare(
    settings: Settings,
    endpoint: str | None = None,
    log: Callable[[str], None] = print,
) -> PreparedData:
    """Download, train the tokenizer and tokenize; idempotent and resumable."""
    source = parse_dataset(settings.dataset)
    directory = prepared_dir(settings, source)
    if (directory / MANIFEST).exists():
        log(f"data already prepared in {directory}")
        return open_prepared(settings)
    started = time.perf_counter()
    downloads = downloads_dir(source)
    log(f"preparing {source.describe()} -> {directory}")
    source.fetch(downloads, endpoint, settings.train_shards)
    with _locked(directory):
        if (directory / MANIFEST).exists():  # another process finished while we waited
            return open_prepared(settings)
        units = source.units(downloads, settings.train_shards, settings.val_permille, settings.heldout_permille)
        tokenizer = _tokenizer(settings, units, directory, log)
        entries: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for i, unit in enumerate(units, 1):
            for split, entry in _tokenize_unit(unit, tokenizer, settings, directory).items():
                entries[split].append(entry)
            got = sum(e["n_tokens"] for es in entries.values() for e in es)
            log(f"tokenized {i}/{len(units)} units ({got / 1e6:.1f}M tokens, {time.perf_counter() - started:.0f} s)")
        for split in SPLITS:
            if not sum(e["n_tokens"] for e in entries[split]):
                raise DataError(
                    f"dataset {settings.dataset!r} gave no {split} documents: the corpus is empty or too "
                    "small to split; add documents (or raise val_permille/heldout_permille)"
                )
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": settings.dataset,
            "description": source.describe(),
            "data_settings": settings.data_key(),
            "source_key": source.cache_key(),
            "tokenizer": {"sha256": tokenizer.sha256(), "vocab_size": tokenizer.get_vocab_size()},
            "splits": entries,
            "data_sha256": data_sha256(entries, tokenizer.sha256()),
            "prepare_seconds": round(time.perf_counter() - started, 1),
        }
        atomic.write_json(directory / MANIFEST, manifest)
    prepared = PreparedData(directory, manifest)
    val = prepared.n_tokens("val")
    log(
        f"prepared in {manifest['prepare_seconds']} s: train {prepared.n_tokens('train') / 1e6:.2f}M, "
        f"val {val / 1e6:.2f}M, heldout {prepared.n_tokens('heldout') / 1e6:.2f}M tokens"
    )
    if val < settings.eval_tokens:
        log(f"note: the val split ({val} tokens) is smaller than eval_tokens ({settings.eval_tokens}); "
            "the evaluation cycles over it")
    return prepared


def _tokenizer(settings: Settings, units: list[Unit], directory: Path, log: Callable[[str], None]) -> Tokenizer:
    if (directory / "tokenizer.json").exists():
        return Tokenizer.from_directory(directory)
    log(f"training a {settings.vocab_size}-token BPE tokenizer ...")
    t0 = time.perf_counter()

    def train_texts() -> Iterator[str]:
        for unit in units:
            for split, text in unit.documents():
                if split == "train":
                    yield text

    texts = capped_texts(train_texts(), settings.tokenizer_doc_cap, settings.tokenizer_max_chars)
    tokenizer = Tokenizer.train(texts, settings.vocab_size)
    tokenizer.save(directory)
    log(f"tokenizer trained in {time.perf_counter() - t0:.1f} s")
    return tokenizer


def _tokenize_unit(unit: Unit, tokenizer: Tokenizer, settings: Settings, directory: Path) -> dict[str, dict]:
    paths = {split: directory / f"{unit.name}.{split}.tok" for split in SPLITS}
    if not all(p.exists() for p in paths.values()):
        docs: dict[str, list] = {split: [] for split in SPLITS}
        pending: dict[str, list[str]] = {split: [] for split in SPLITS}

        def flush(split: str) -> None:
            if pending[split]:
                encoded = tokenizer.encode(pending[split], prepend=BOS_TOKEN, num_threads=os.cpu_count() or 1)
                docs[split].extend(np.asarray(ids, dtype=shards.token_dtype(settings.vocab_size)) for ids in encoded)
                pending[split] = []

        for split, text in unit.documents():
            for piece in split_document(text, settings.max_doc_chars):
                pending[split].append(piece)
                if len(pending[split]) >= ENCODE_BATCH:
                    flush(split)
        for split in SPLITS:
            flush(split)
        # Each shard is atomic; the unit counts as done only when all three exist.
        for split in SPLITS:
            shards.write_shard(paths[split], docs[split], settings.vocab_size)
    result = {}
    for split, path in paths.items():
        shard = shards.read_shard(path)
        result[split] = {
            "file": path.name,
            "n_docs": shard.n_docs,
            "n_tokens": shard.n_tokens,
            "sha256": shards.file_sha256(path),
        }
    return result
