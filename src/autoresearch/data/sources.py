"""Datasets behind one interface.

A `Source` says which raw files it needs (`fetch` downloads them), and cuts its corpus into
`Unit`s: fixed groups of input whose documents, each labelled with its split, become one token
shard per split. A unit's content never depends on other units, so tokenizing resumes unit by
unit after an interruption.

Splits: `train` (what train.py sees), `val` (what the harness evaluates on) and `heldout`
(never exposed; the evaluator compares it with `val` to catch a model that has seen `val`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autoresearch.data import hub
from autoresearch.data.registry import FILES_PREFIX, HUB_DATASETS, PYSTDLIB, HubDataset, dataset_names
from autoresearch.errors import DataError, SettingsError

SPLITS = ("train", "val", "heldout")
UNIT_CHARS = 16_000_000  # input characters per local unit: a few seconds of tokenizing each


@dataclass(frozen=True)
class Unit:
    name: str
    documents: Callable[[], Iterator[tuple[str, str]]]  # yields (split, text)


class Source(Protocol):
    name: str

    def describe(self) -> str: ...

    def cache_key(self) -> str:
        """Identifies the raw corpus (folded into the prepared-data cache key)."""
        ...

    def fetch(self, downloads: Path, endpoint: str | None, train_shards: int) -> None: ...

    def units(self, downloads: Path, train_shards: int, val_permille: int, heldout_permille: int) -> list[Unit]: ...


def split_of(key: str, val_permille: int, heldout_permille: int) -> str:
    """Pinned split of an input by a hash of its stable key (a relative path, a row id)."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % 1000
    if bucket < val_permille:
        return "val"
    if bucket < val_permille + heldout_permille:
        return "heldout"
    return "train"


def split_document(text: str, max_chars: int) -> list[str]:
    """Cut a long document into pieces of at most `max_chars` at natural boundaries.

    Preferred cut: before a line that starts at column 0 after a blank line (a new top-level
    definition in code, a new paragraph in prose); then any line end; then a hard cut. The
    pieces concatenate back to `text` exactly.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return [text] if text else []
    lines = text.splitlines(keepends=True)
    blocks: list[str] = []
    current: list[str] = []
    for i, line in enumerate(lines):
        starts_block = i > 0 and line[:1] not in (" ", "\t", "\n", "\r", "") and not lines[i - 1].strip()
        if starts_block and current:
            blocks.append("".join(current))
            current = []
        current.append(line)
    if current:
        blocks.append("".join(current))

    pieces: list[str] = []
    buf = ""
    for block in blocks:
        if len(buf) + len(block) <= max_chars:
            buf += block
            continue
        if buf:
            pieces.append(buf)
            buf = ""
        if len(block) <= max_chars:
            buf = block
            continue
        for line in block.splitlines(keepends=True):  # an oversized block: cut at line ends
            while len(line) > max_chars:
                if buf:
                    pieces.append(buf)
                    buf = ""
                pieces.append(line[:max_chars])
                line = line[max_chars:]
            if len(buf) + len(line) > max_chars:
                pieces.append(buf)
                buf = ""
            buf += line
    if buf:
        pieces.append(buf)
    return pieces


# --- local sources ----------------------------------------------------------------------------


def _read_utf8(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None  # a few stdlib test files are deliberately mis-encoded


def _group_by_size(paths: list[tuple[str, Path]], budget: int) -> list[list[tuple[str, Path]]]:
    groups: list[list[tuple[str, Path]]] = []
    current: list[tuple[str, Path]] = []
    size = 0
    for rel, path in paths:
        n = path.stat().st_size
        if current and size + n > budget:
            groups.append(current)
            current, size = [], 0
        current.append((rel, path))
        size += n
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class PyStdlib:
    """The running interpreter's standard-library sources, tests included: always present."""

    name: str = PYSTDLIB

    @property
    def root(self) -> Path:
        return Path(sysconfig.get_paths()["stdlib"])

    def describe(self) -> str:
        return f"Python {sys.version.split()[0]} standard library ({self.root})"

    def files(self) -> list[tuple[str, Path]]:
        root = self.root
        found = []
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if {"site-packages", "dist-packages", "__pycache__"} & set(rel.parts):
                continue
            found.append((rel.as_posix(), path))
        return found

    def cache_key(self) -> str:
        listing = "\n".join(f"{rel}:{path.stat().st_size}" for rel, path in self.files())
        return f"{sys.version_info[0]}.{sys.version_info[1]}-" + hashlib.sha256(listing.encode()).hexdigest()[:12]

    def fetch(self, downloads: Path, endpoint: str | None, train_shards: int) -> None:
        if not self.files():
            raise DataError(f"no .py files found under {self.root}: this Python has no standard-library sources")

    def units(self, downloads: Path, train_shards: int, val_permille: int, heldout_permille: int) -> list[Unit]:
        return _file_units(self.files(), val_permille, heldout_permille)


def _file_units(files: list[tuple[str, Path]], val_permille: int, heldout_permille: int) -> list[Unit]:
    """Units over whole-file documents; each file's split is pinned by its relative path."""

    def reader(group: list[tuple[str, Path]]) -> Callable[[], Iterator[tuple[str, str]]]:
        def documents() -> Iterator[tuple[str, str]]:
            for rel, path in group:
                text = _read_utf8(path)
                if text:
                    yield split_of(rel, val_permille, heldout_permille), text

        return documents

    groups = _group_by_size(files, UNIT_CHARS)
    return [Unit(f"part_{i:05d}", reader(g)) for i, g in enumerate(groups)]


@dataclass(frozen=True)
class LocalFiles:
    """`files:PATH`: a folder (searched recursively) or a glob of .txt, .jsonl or .parquet.

    A .txt file is one document (its split pinned by its path); .jsonl lines and parquet rows
    are documents taken from their `text` field (each row's split pinned by path and row number).
    """

    spec: str
    name: str = "files"

    def paths(self) -> list[tuple[str, Path]]:
        target = Path(self.spec).expanduser()
        if target.is_dir():
            found = [p for p in sorted(target.rglob("*")) if p.suffix in (".txt", ".jsonl", ".parquet")]
            base = target
        else:
            found = [Path(p) for p in sorted(glob.glob(str(target), recursive=True))]
            found = [p for p in found if p.is_file()]
            # Relative names start below the pattern's last folder without wildcards.
            fixed: list[str] = []
            for part in target.parts[:-1]:
                if any(c in part for c in "*?["):
                    break
                fixed.append(part)
            base = Path(*fixed) if fixed else Path(".")
        bad = [p for p in found if p.suffix not in (".txt", ".jsonl", ".parquet")]
        if bad:
            raise DataError(f"files:{self.spec}: unsupported file {bad[0]} (use .txt, .jsonl or .parquet)")
        return [(p.relative_to(base).as_posix() if p.is_relative_to(base) else p.as_posix(), p) for p in found]

    def describe(self) -> str:
        return f"local files {self.spec}"

    def cache_key(self) -> str:
        paths = self.paths()
        listing = "\n".join(f"{rel}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for rel, p in paths)
        return hashlib.sha256((str(Path(self.spec).resolve()) + listing).encode()).hexdigest()[:16]

    def fetch(self, downloads: Path, endpoint: str | None, train_shards: int) -> None:
        if not self.paths():
            raise DataError(
                f"files:{self.spec} matches no .txt, .jsonl or .parquet file: check the path or glob"
            )

    def units(self, downloads: Path, train_shards: int, val_permille: int, heldout_permille: int) -> list[Unit]:
        paths = self.paths()
        txt = [(rel, p) for rel, p in paths if p.suffix == ".txt"]
        units = _file_units(txt, val_permille, heldout_permille)
        for rel, p in paths:
            if p.suffix == ".txt":
                continue

            def documents(rel: str = rel, p: Path = p) -> Iterator[tuple[str, str]]:
                rows = _jsonl_texts(p) if p.suffix == ".jsonl" else parquet_texts(p)
                for i, text in enumerate(rows):
                    if text:
                        yield split_of(f"{rel}#{i}", val_permille, heldout_permille), text

            units.append(Unit(f"part_{len(units):05d}", documents))
        return units


def _jsonl_texts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg}): fix or remove that line") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f'{path}:{n}: each line must be an object with a string "text" field')
            yield record["text"]


def parquet_texts(path: Path, column: str = "text") -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        if column not in pf.schema_arrow.names:
            raise DataError(
                f"{path} has no {column!r} column (columns: {', '.join(pf.schema_arrow.names)})"
            )
        for batch in pf.iter_batches(columns=[column], batch_size=4096):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"corrupt parquet file {path} ({e}): delete it and run `autoresearch prepare` again"
        ) from None


# --- hub datasets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSource:
    """A parquet dataset of the hub (data/registry.py), downloaded by data/hub.py: one unit per file."""

    dataset: HubDataset

    @property
    def name(self) -> str:
        return self.dataset.name

    def describe(self) -> str:
        return self.dataset.describe()

    def cache_key(self) -> str:
        return self.dataset.cache_key()

    def fetch(self, downloads: Path, endpoint: str | None, train_shards: int) -> None:
        hub.fetch(self.dataset, downloads, endpoint, train_shards)

    def units(self, downloads: Path, train_shards: int, val_permille: int, heldout_permille: int) -> list[Unit]:
        units = []
        for split, names in hub.split_files(self.dataset, downloads, None, train_shards).items():
            for filename in names:
                path = downloads / filename
                if not path.exists():
                    raise DataError(f"missing download {path}: run `autoresearch prepare` again")

                def documents(path: Path = path, split: str = split) -> Iterator[tuple[str, str]]:
                    for i, text in enumerate(parquet_texts(path)):
                        if self.dataset.alternate_heldout and split == "val":
                            yield ("val" if i % 2 == 0 else "heldout"), text
                        else:
                            yield split, text

                units.append(Unit(f"{split}-{Path(filename).stem}", documents))
        return units


# --- by name ----------------------------------------------------------------------------------


def parse_dataset(spec: str) -> Source:
    """The source that a `dataset =` value names (data/registry.py lists them)."""
    if spec == PYSTDLIB:
        return PyStdlib()
    if spec in HUB_DATASETS:
        return HubSource(HUB_DATASETS[spec])
    if spec.startswith(FILES_PREFIX) and len(spec) > len(FILES_PREFIX):
        return LocalFiles(spec[len(FILES_PREFIX) :])
    raise SettingsError(f"unknown dataset {spec!r}; choose one of: {', '.join(dataset_names())}")
