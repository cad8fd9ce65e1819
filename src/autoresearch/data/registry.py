"""The datasets known by name: what `dataset =` in autoresearch.toml may say.

Plain descriptions, no downloading and no reading: `data/hub.py` fetches a hub dataset's files
and `data/sources.py` reads them, and both import this module, which imports neither of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autoresearch.errors import DataError

PYSTDLIB = "pystdlib"  # the running interpreter's standard-library sources
FILES_PREFIX = "files:"  # files:PATH, a folder or glob of local .txt, .jsonl or .parquet files

# split -> files of a hub dataset, from the repository listing (when it needs one) and train_shards
Layout = Callable[[list[str] | None, int], dict[str, list[str]]]


@dataclass(frozen=True)
class HubDataset:
    """A parquet dataset on the Hugging Face hub: its repository and which files make each split."""

    name: str
    repo_id: str
    layout: Layout
    needs_listing: bool  # file names are discovered from the repository listing
    alternate_heldout: bool = False  # val and heldout interleave the rows of the val files

    def describe(self) -> str:
        return f"{self.name} (hub dataset {self.repo_id})"

    def cache_key(self) -> str:
        return self.repo_id.replace("/", "--")


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


def dataset_names() -> list[str]:
    """What `dataset =` may say, for help texts and error messages."""
    return [PYSTDLIB, *HUB_DATASETS, f"{FILES_PREFIX}PATH"]
