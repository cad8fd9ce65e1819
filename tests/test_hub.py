"""climbmix and tinystories, downloaded with huggingface_hub from a hub served on loopback."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoresearch import settings as S
from autoresearch.data.registry import HUB_DATASETS
from autoresearch.data.prepare import downloads_dir, prepare
from autoresearch.errors import DataError
from tests.hubserver import FakeHub

CLIMBMIX = "karpathy/climbmix-400b-shuffle"
TINYSTORIES = "roneneldan/TinyStories"
WORDS = "the a cat dog sat ran on under big small red blue tree house and then".split()


def parquet(tag: str, n_rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    texts = [f"{tag} {i}: " + " ".join(rng.choice(WORDS, size=rng.integers(20, 120))) + "." for i in range(n_rows)]
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buf, compression="none")
    return buf.getvalue()


def climbmix_hub(hub: FakeHub, train_shards: int, rows: int = 400) -> None:
    for i in range(train_shards):
        hub.add(CLIMBMIX, f"shard_{i:05d}.parquet", parquet(f"train{i}", rows, i))
    hub.add(CLIMBMIX, "shard_06541.parquet", parquet("heldout", 200, 100))
    hub.add(CLIMBMIX, "shard_06542.parquet", parquet("val", 200, 101))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def decoded(prepared, split):
    from autoresearch.data.shards import read_shard

    tok = prepared.tokenizer()
    for path in prepared.shard_paths(split):
        s = read_shard(path)
        for a, b in zip(s.offsets, s.offsets[1:]):
            yield tok.decode(s.tokens[a + 1 : b].tolist())


def test_climbmix_uses_the_pinned_validation_shard(cache):
    s = S.from_preset("tiny", dataset="climbmix", train_shards=2, vocab_size=300, max_doc_chars=0)
    with FakeHub() as hub:
        climbmix_hub(hub, 2)
        p = prepare(s, endpoint=hub.url, log=lambda _: None)
        fetched = {r["path"].rsplit("/", 1)[-1] for r in hub.requests if r["method"] == "GET"}
    assert fetched == {"shard_00000.parquet", "shard_00001.parquet", "shard_06541.parquet", "shard_06542.parquet"}
    assert {d.split()[0] for d in decoded(p, "val")} == {"val"}
    assert {d.split()[0] for d in decoded(p, "heldout")} == {"heldout"}
    assert {d.split()[0] for d in decoded(p, "train")} == {"train0", "train1"}
    # Prepared data re-opens without the network: downloads are complete files.
    again = prepare(s, endpoint="http://127.0.0.1:9", log=lambda _: None)
    assert again.data_sha256 == p.data_sha256


def test_tinystories_lists_the_repository_and_splits_validation_rows(cache):
    s = S.from_preset("tiny", dataset="tinystories", train_shards=1, vocab_size=300, max_doc_chars=0)
    with FakeHub() as hub:
        hub.add(TINYSTORIES, "data/train-00000-of-00002.parquet", parquet("storyA", 300, 1))
        hub.add(TINYSTORIES, "data/train-00001-of-00002.parquet", parquet("storyB", 300, 2))
        hub.add(TINYSTORIES, "data/validation-00000-of-00001.parquet", parquet("valid", 200, 3))
        hub.add(TINYSTORIES, "README.md", b"# TinyStories")
        p = prepare(s, endpoint=hub.url, log=lambda _: None)
    train = list(decoded(p, "train"))
    assert {d.split()[0] for d in train} == {"storyA"}  # train_shards=1: the first shard only
    val_ids = {int(d.split()[1].rstrip(":")) for d in decoded(p, "val")}
    held_ids = {int(d.split()[1].rstrip(":")) for d in decoded(p, "heldout")}
    assert val_ids == set(range(0, 200, 2)) and held_ids == set(range(1, 200, 2))


def test_no_network_is_a_clear_error(cache):
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    s = S.from_preset("tiny", dataset="climbmix", train_shards=1, vocab_size=300, max_doc_chars=0)
    with pytest.raises(DataError, match="cannot download .*check the network.*pystdlib"):
        prepare(s, endpoint=closed, log=lambda _: None)
    # (a refused connection to the listing API is retried with back-off by huggingface_hub for
    # ~20 s; a hub without the repository answers at once)
    s = S.from_preset("tiny", dataset="tinystories", train_shards=1, vocab_size=300, max_doc_chars=0)
    with FakeHub() as empty_hub, pytest.raises(DataError, match="cannot list .*check the network"):
        prepare(s, endpoint=empty_hub.url, log=lambda _: None)


def test_corrupt_download_is_named_with_the_fix(cache):
    s = S.from_preset("tiny", dataset="climbmix", train_shards=1, vocab_size=300, max_doc_chars=0)
    folder = downloads_dir(HUB_DATASETS["climbmix"])
    with FakeHub() as hub:
        climbmix_hub(hub, 1)
        folder.mkdir(parents=True)
        (folder / "shard_00000.parquet").write_bytes(b"PAR1 this is not parquet")
        with pytest.raises(DataError, match="corrupt parquet file .*shard_00000.parquet.*delete it"):
            prepare(s, endpoint=hub.url, log=lambda _: None)


@pytest.mark.slow  # three CLI processes and a throttled download
def test_download_killed_midway_resumes_to_the_same_bytes(tmp_path, cache):
    big = parquet("train0", 6000, 7)  # ~2.5 MB
    work = tmp_path / "ws"
    env = {**os.environ, "AUTORESEARCH_CACHE": str(cache), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    cli = [sys.executable, "-m", "autoresearch"]
    subprocess.run([*cli, "init", str(work), "--preset", "tiny", "--dataset", "climbmix",
                    "--set", "train_shards=1", "--set", "vocab_size=300"], check=True, env=env, capture_output=True)
    with FakeHub() as hub:
        climbmix_hub(hub, 0)
        hub.add(CLIMBMIX, "shard_00000.parquet", big)
        hub.throttle = 400_000  # bytes/s: ~6 s for the big shard
        proc = subprocess.Popen([*cli, "prepare", "--endpoint", hub.url], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while hub.sent.get("shard_00000.parquet", 0) < len(big) // 3 and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sent_before_kill = hub.sent["shard_00000.parquet"]
        assert 0 < sent_before_kill < len(big)
        folder = downloads_dir(HUB_DATASETS["climbmix"])
        assert not (folder / "shard_00000.parquet").exists()  # never a half file under the final name
        assert 0 < (folder / "shard_00000.parquet.part").stat().st_size <= sent_before_kill
        hub.throttle = None
        done = subprocess.run([*cli, "prepare", "--endpoint", hub.url], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        resumed = [r for r in hub.requests if r["method"] == "GET" and r["path"].endswith("shard_00000.parquet") and r["range"]]
    assert (folder / "shard_00000.parquet").read_bytes() == big
    assert resumed and int(resumed[-1]["range"].split("=")[1].split("-")[0]) > 0
    assert "prepared in" in done.stdout
