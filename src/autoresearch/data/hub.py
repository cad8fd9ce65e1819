"""Parquet datasets from the Hugging Face hub, downloaded with `huggingface_hub`.

The endpoint is the hub's unless `HF_ENDPOINT` or `autoresearch prepare --endpoint URL` names
another (a mirror, or a test server on loopback). Downloads resume: `hf_hub_download` keeps a
partial file and continues it with an HTTP range request; a file that reached its final name is
complete and is never fetched again, so prepared data keeps working offline.

Which hub datasets exist, and which of their files make each split, is in data/registry.py;
data/sources.py reads the downloaded files.
"""

from __future__ import annotations

import os
from pathlib import Path

from autoresearch.data.registry import HubDataset
from autoresearch.errors import DataError

DEFAULT_ENDPOINT = "https://huggingface.co"


def resolve_endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def split_files(
    dataset: HubDataset, downloads: Path, endpoint: str | None, train_shards: int
) -> dict[str, list[str]]:
    """Which files of the dataset's repository make each split (split -> file names)."""
    names = listing(dataset.repo_id, downloads, endpoint) if dataset.needs_listing else None
    return dataset.layout(names, train_shards)


def listing(repo_id: str, downloads: Path, endpoint: str | None) -> list[str]:
    """The file names of a dataset repository, cached in `downloads` so that prepared data can be
    re-opened offline."""
    cached = downloads / ".listing"
    if cached.exists():
        return cached.read_text().split()
    from huggingface_hub import HfApi

    try:
        names = HfApi(endpoint=resolve_endpoint(endpoint)).list_repo_files(repo_id, repo_type="dataset")
    except Exception as e:  # network errors come in many types; all mean the same here
        raise DataError(
            f"cannot list {repo_id} at {resolve_endpoint(endpoint)} ({type(e).__name__}): "
            "check the network or HF_ENDPOINT, or use the offline dataset `pystdlib`"
        ) from None
    from autoresearch import atomic

    atomic.write_text(cached, "\n".join(sorted(names)) + "\n")
    return sorted(names)


def fetch(dataset: HubDataset, downloads: Path, endpoint: str | None, train_shards: int) -> None:
    """Download the files of every split that are not in `downloads` yet."""
    wanted = [f for files in split_files(dataset, downloads, endpoint, train_shards).values() for f in files]
    for i, filename in enumerate(wanted, 1):
        if (downloads / filename).exists():
            continue
        print(f"downloading {dataset.repo_id}/{filename} ({i}/{len(wanted)})", flush=True)
        download(dataset.repo_id, filename, downloads, endpoint)


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
