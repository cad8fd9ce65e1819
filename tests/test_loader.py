from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch.data.shards import read_shard, write_shard
from autoresearch.loader import DocumentStream, batches, naive_packed_rows, open_split, packed_rows

BOS = 1000


def make_docs(lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[BOS, *rng.integers(0, 999, size=n - 1).tolist()] for n in lengths]


def stream_of(tmp_path, docs, shuffle=False, seed=0, name="s.tok"):
    path = tmp_path / name
    write_shard(path, docs, vocab_size=1024)
    return DocumentStream([read_shard(path)], shuffle=shuffle, seed=seed)


@given(
    lengths=st.lists(st.integers(1, 80), min_size=1, max_size=60),
    row_len=st.integers(2, 50),
    buffer_size=st.integers(1, 12),
)
@settings(max_examples=150, deadline=None)
def test_fast_packing_equals_the_straightforward_algorithm(tmp_path_factory, lengths, row_len, buffer_size):
    docs = make_docs(lengths)
    stream = stream_of(tmp_path_factory.mktemp("p"), docs)
    fast = packed_rows(stream, row_len, buffer_size)
    slow = naive_packed_rows(docs, row_len, buffer_size)
    for _ in range(25):
        assert next(fast).tolist() == next(slow)


def test_rows_start_with_bos_and_hold_document_pieces_in_order(tmp_path):
    lengths = np.random.default_rng(1).integers(2, 300, size=400).tolist()
    docs = make_docs(lengths, seed=1)
    stream = stream_of(tmp_path, docs)
    as_tuples = {tuple(d) for d in docs}
    prefixes = {tuple(d[:k]) for d in docs for k in range(1, len(d) + 1)}
    rows = packed_rows(stream, 129, 50)
    n_full = n_cropped = 0
    for _ in range(300):
        row = next(rows).tolist()
        assert len(row) == 129 and row[0] == BOS  # no padding, BOS-aligned
        starts = [i for i, t in enumerate(row) if t == BOS] + [len(row)]
        for a, b in zip(starts, starts[1:]):
            piece = tuple(row[a:b])
            if piece in as_tuples:
                n_full += 1
            else:  # only the last piece of a row may be a cropped document
                assert b == len(row) and piece in prefixes
                n_cropped += 1
    assert n_full > 0 and n_cropped > 0


def test_training_order_is_deterministic_per_seed_and_epochs_advance(tmp_path):
    docs = make_docs([17] * 40)
    a = stream_of(tmp_path, docs, shuffle=True, seed=3, name="a.tok")
    b = stream_of(tmp_path, docs, shuffle=True, seed=3, name="b.tok")
    c = stream_of(tmp_path, docs, shuffle=True, seed=4, name="c.tok")
    seq_a = [a.next_doc() for _ in range(120)]
    assert seq_a == [b.next_doc() for _ in range(120)]
    assert seq_a != [c.next_doc() for _ in range(120)]
    assert sorted(seq_a[:40]) == list(range(40))  # each epoch is a permutation
    assert seq_a[:40] != seq_a[40:80]  # and a fresh one
    assert a.epoch == 3


def test_batches_shift_targets_and_report_epoch(tmp_path):
    docs = make_docs([33] * 30)
    stream = stream_of(tmp_path, docs)
    it = batches(stream, batch_size=4, seq_len=16, device="cpu", buffer_size=8)
    x, y, epoch = next(it)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert (x[:, 0] == BOS).all()
    assert epoch == 1
    for _ in range(20):
        *_, epoch = next(it)
    assert epoch > 1


def test_open_split_skips_empty_shards(tmp_path):
    write_shard(tmp_path / "empty.tok", [], vocab_size=1024)
    write_shard(tmp_path / "full.tok", make_docs([5, 6]), vocab_size=1024)
    shards = open_split([tmp_path / "empty.tok", tmp_path / "full.tok"])
    assert [s.n_docs for s in shards] == [2]
    with pytest.raises(ValueError, match="no documents"):
        DocumentStream(open_split([tmp_path / "empty.tok"]), shuffle=False)
