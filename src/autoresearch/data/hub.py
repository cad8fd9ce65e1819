"""Parquet datasets from the Hugging Face hub, downloaded with `huggingface_hub`.

The endpoint is the hub's unless `HF_ENDPOINT` or `autoresearch prepare --endpoint URL` names
another (a mirror, or a test server on loopback). Downloads resume: `hf_hub_download` keeps a
partial file and continues it with an HTTP range request; a file that reached its final name is
complete and is never fetched again, so prepared data keeps working offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autoresearch.data.sources import Unit, parquet_texts
from autoresearch.errors import DataError

DEFAULT_ENDPOINT = "https://huggingface.co"


def resolve_endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class HubDataset:
    name: str
    repo_id: str
    layout: Callable[[list[str] | None, int], dict[str, list[str]]]  # split -> files
    needs_listing: bool  # file names are discovered from the repository listing
    alternate_heldout: bool = False  # val and heldout interleave the rows of the val files

    def describe(self) -> str:
        return f"{self.name} (hub dataset {self.repo_id})"

    def cache_key(self) -> str:
        return self.repo_id.replace("/", "--")

    def files(self, downloads: Path, endpoint: str | None, train_shards: int) -> dict[str, list[str]]:
        listing = None
        if self.needs_listing:
            listing = self._listing(downloads, endpoint)
        return self.layout(listing, train_shards)

    def _listing(self, downloads: Path, endpoint: str | None) -> list[str]:
        # Cached so that prepared data can be re-opened offline.
        cached = downloads / ".listing"
        if cached.exists():
            return cached.read_text().split()
        from huggingface_hub import HfApi

        try:
            names = HfApi(endpoint=resolve_endpoint(endpoint)).list_repo_files(self.repo_id, repo_type="dataset")
        except Exception as e:  # network errors come in many types; all mean the same here
            raise DataError(
                f"cannot list {self.repo_id} at {resolve_endpoint(endpoint)} ({type(e).__name__}): "
                "check the network or HF_ENDPOINT, or use the offline dataset `pystdlib`"
            ) from None
        from autoresearch import atomic

        atomic.write_text(cached, "\n".join(sorted(names)) + "\n")
        return sorted(names)

    def fetch(self, downloads: Path, endpoint: str | None, train_shards: int) -> None:
        wanted = [f for files in self.files(downloads, endpoint, train_shards).values() for f in files]
        for i, filename in enumerate(wanted, 1):
            if (downloads / filename).exists():
                continue
            print(f"downloading {self.repo_id}/{filename} ({i}/{len(wanted)})", flush=True)
            download(self.repo_id, filename, downloads, endpoint)

    def units(self, downloads: Path, train_shards: int, val_permille: int, heldout_permille: int) -> list[Unit]:
        units = []
        for split, names in self.files(downloads, None, train_shards).items():
            for filename in names:
                path = downloads / filename
                if not path.exists():
                    raise DataError(f"missing download {path}: run `autoresearch prepare` again")

                def documents(path: Path = path, split: str = split) -> Iterator[tuple[str, str]]:
                    for i, text in enumerate(parquet_texts(path)):
                        if self.alternate_heldout and split == "val":
                            yield ("val" if i % 2 == 0 else "heldout"), text
                        else:
                            yield split, text

                units.append(Unit(f"{split}-{Path(filename).stem}", documents))
        return units


def download(repo_id: str, filename: str, downloads: Path, endpoint: str | None) -> Path:
    """Fetch one file of a dataset repository into `downloads`, resuming a partial `.part` file.

    huggingface_hub resolves the URL, the auth headers and the file's size and ETag, and its HTTP
    session does the transfer. We stream into our own `.part` file because its own downloader
    writes to a fresh per-process temporary file, so a killed download starts again from zero.
    """
    import hashlib

    from huggingface_hub import get_hf_file_metadata, get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, tqdm

    dest = downloads / filename
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    where = resolve_endpoint(endpoint)
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, repo_type="dataset", endpoint=where))
        have = part.stat().st_size if part.exists() else 0
        headers = build_hf_headers()
        if have:
            headers["Range"] = f"bytes={have}-"
        with get_session().stream("GET", meta.location, headers=headers, follow_redirects=True, timeout=60) as r:
            hf_raise_for_status(r)
            resumed = have > 0 and r.status_code == 206
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=meta.size, initial=have if resumed else 0, unit="B", unit_scale=True, desc=filename
            ) as bar:
                for chunk in r.iter_bytes(1 << 16):
                    f.write(chunk)
                    f.flush()  # what arrived survives a kill, for the next resume
                    bar.update(len(chunk))
    except Exception as e:  # network errors come in many types; all mean the same here
        detail = str(e).splitlines()[0] if str(e) else ""
        raise DataError(
            f"cannot download {repo_id}/{filename} from {where} ({type(e).__name__}: {detail}); what arrived is "
            "kept and resumes on the next `autoresearch prepare`; check the network or HF_ENDPOINT, "
            "or use the offline dataset `pystdlib`"
        ) from None
    size = part.stat().st_size
    if meta.size is not None and size != meta.size:
        raise DataError(f"download of {filename} stopped at {size}/{meta.size} bytes: run `autoresearch prepare` again")
    etag = (meta.etag or "").strip('"')
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):  # an LFS file's ETag is its sha256
        h = hashlib.sha256()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != etag:
            part.unlink()
            raise DataError(f"download of {filename} does not match its checksum and was deleted: run `autoresearch prepare` again")
    part.replace(dest)
    return dest


# ClimbMix, as the reference uses it: shards shard_00000 ... shard_06542, the last one pinned for
# validation; we also pin the one before it as the never-exposed held-out split.
CLIMBMIX_LAST_SHARD = 6542


def _climbmix_layout(listing: list[str] | None, train_shards: int) -> dict[str, list[str]]:
    if not 1 <= train_shards < CLIMBMIX_LAST_SHARD - 1:
        raise DataError(f"climbmix has {CLIMBMIX_LAST_SHARD - 1} training shards; train_shards={train_shards}")
    return {
        "train": [f"shard_{i:05d}.parquet" for i in range(train_shards)],
        "val": [f"shard_{CLIMBMIX_LAST_SHARD:05d}.parquet"],
        "heldout": [f"shard_{CLIMBMIX_LAST_SHARD - 1:05d}.parquet"],
    }


def _tinystories_layout(listing: list[str] | None, train_shards: int) -> dict[str, list[str]]:
    assert listing is not None
    train = sorted(f for f in listing if f.startswith("data/train-") and f.endswith(".parquet"))
    val = sorted(f for f in listing if f.startswith("data/validation-") and f.endswith(".parquet"))
    if not train or not val:
        raise DataError("the tinystories repository listing has no data/train-*.parquet or data/validation-*.parquet")
    return {"train": train[:train_shards], "val": val}


HUB_DATASETS: dict[str, HubDataset] = {
    "climbmix": HubDataset("climbmix", "karpathy/climbmix-400b-shuffle", _climbmix_layout, needs_listing=False),
    # TinyStories publishes only train and validation: the validation rows alternate between
    # our `val` and `heldout` splits.
    "tinystories": HubDataset(
        "tinystories", "roneneldan/TinyStories", _tinystories_layout, needs_listing=True, alternate_heldout=True
    ),
}
