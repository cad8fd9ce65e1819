from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch import settings as settings_mod
from autoresearch.data import shards
from autoresearch.data.prepare import MANIFEST, open_prepared, prepare, prepared_dir
from autoresearch.data.sources import PyStdlib, parse_dataset, split_document, split_of
from autoresearch.errors import DataError, SettingsError
from autoresearch.tokenizer import BOS_TOKEN


@given(text=st.text(alphabet=st.sampled_from("ab \n\tdef:"), max_size=400), max_chars=st.integers(1, 60))
@settings(max_examples=300, deadline=None)
def test_split_document_pieces_concatenate_back_and_respect_the_cap(text, max_chars):
    pieces = split_document(text, max_chars)
    assert "".join(pieces) == text
    assert all(0 < len(p) <= max_chars for p in pieces)


def test_split_document_prefers_top_level_boundaries():
    code = "import os\n\n\ndef a():\n    return 1\n\n\ndef b():\n    return 2\n"
    pieces = split_document(code, 25)
    assert pieces[1].startswith("def a") and pieces[2].startswith("def b")


def test_shard_round_trip_and_corruption(tmp_path):
    path = tmp_path / "x.tok"
    docs = [[5, 1, 2], [5], [5, 3, 4, 65535]]
    shards.write_shard(path, docs, vocab_size=65536)
    shard = shards.read_shard(path)
    assert shard.n_docs == 3 and shard.n_tokens == 8
    assert [shard.tokens[a:b].tolist() for a, b in zip(shard.offsets, shard.offsets[1:])] == docs
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="corrupt shard .*autoresearch prepare"):
        shards.read_shard(path)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="not a token shard"):
        shards.read_shard(path)
    with pytest.raises(DataError, match="missing shard"):
        shards.read_shard(tmp_path / "nope.tok")


def test_prepared_data_has_all_splits_and_a_fingerprint(prepared, tiny_settings):
    m = prepared.manifest
    assert set(m["splits"]) == {"train", "val", "heldout"}
    assert all(prepared.n_tokens(s) > 0 for s in ("train", "val", "heldout"))
    assert len(m["data_sha256"]) == 64
    assert m["tokenizer"]["vocab_size"] == tiny_settings.vocab_size
    prepared.verify()
    assert open_prepared(tiny_settings).manifest == m


def _decoded_docs(prepared, tokenizer, split):
    for path in prepared.shard_paths(split):
        shard = shards.read_shard(path)
        for a, b in zip(shard.offsets, shard.offsets[1:]):
            ids = shard.tokens[a:b].tolist()
            assert ids[0] == tokenizer.get_bos_token_id()
            yield tokenizer.decode(ids[1:])


def test_validation_files_never_appear_in_training_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(60):  # every file carries a unique marker on every line
        (corpus / f"f{i:03d}.txt").write_text("".join(f"marker{i:03d} line {j}\n" for j in range(40)))
    s = settings_mod.from_preset("tiny", dataset=f"files:{corpus}", vocab_size=300, max_doc_chars=200,
                                 val_permille=150, heldout_permille=150)
    prepared = prepare(s, log=lambda _: None)
    tok = prepared.tokenizer()
    expected = {f"f{i:03d}.txt": split_of(f"f{i:03d}.txt", 150, 150) for i in range(60)}
    for split in ("train", "val", "heldout"):
        markers = {line.split()[0] for doc in _decoded_docs(prepared, tok, split) for line in doc.splitlines() if line}
        want = {f"marker{name[1:4]}" for name, sp in expected.items() if sp == split}
        assert markers == want, split


def test_pystdlib_split_is_pinned_by_path_and_includes_tests():
    src = PyStdlib()
    files = src.files()
    rels = [rel for rel, _ in files]
    assert any(rel.startswith("test/") for rel in rels)
    assert not any("site-packages" in rel for rel in rels)
    val = [rel for rel in rels if split_of(rel, 40, 40) == "val"]
    held = [rel for rel in rels if split_of(rel, 40, 40) == "heldout"]
    assert 0.02 < len(val) / len(rels) < 0.06 and 0.02 < len(held) / len(rels) < 0.06
    assert val == [rel for rel in rels if split_of(rel, 40, 40) == "val"]  # deterministic


def test_prepare_resumes_after_an_interrupted_tokenization(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    s = settings_mod.from_preset("tiny", dataset=f"files:{corpus}", val_permille=100, heldout_permille=100)
    first = prepare(s, log=lambda _: None)
    shard_files = sorted(first.directory.glob("*.tok"))
    before = {p.name: p.read_bytes() for p in shard_files}
    # Simulate a kill after the tokenizer and the first unit: later shards and the manifest missing.
    (first.directory / MANIFEST).unlink()
    for p in shard_files[3:]:
        p.unlink()
    messages = []
    again = prepare(s, log=messages.append)
    assert not any("training a" in m for m in messages)  # the tokenizer was reused
    assert {p.name: p.read_bytes() for p in sorted(again.directory.glob("*.tok"))} == before
    assert again.data_sha256 == first.data_sha256


def test_bad_inputs_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SettingsError, match="unknown dataset 'wiki'.*pystdlib"):
        parse_dataset("wiki")
    with pytest.raises(SettingsError, match="unknown preset"):
        settings_mod.from_preset("tpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    s = settings_mod.from_preset("tiny", dataset=f"files:{empty}")
    with pytest.raises(DataError, match="matches no .txt"):
        prepare(s, log=lambda _: None)
    with pytest.raises(DataError, match="not prepared: run `autoresearch prepare`"):
        open_prepared(s)
    (empty / "blank.txt").write_text("")
    (empty / "a.txt").write_text("only one small document\n")
    with pytest.raises(DataError, match="no (train|val|heldout) documents|fewer than vocab_size|smaller vocab_size"):
        prepare(settings_mod.from_preset("tiny", dataset=f"files:{empty}"), log=lambda _: None)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(DataError, match="x.jsonl:2: not valid JSON"):
        prepare(settings_mod.from_preset("tiny", dataset=f"files:{bad}"), log=lambda _: None)
    # nothing half-written: no manifest for the failed preparations
    assert not list((tmp_path / "cache").rglob(MANIFEST))


def test_modified_shard_fails_verification(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    s = settings_mod.from_preset("tiny", dataset=f"files:{corpus}", val_permille=100, heldout_permille=100)
    p = prepare(s, log=lambda _: None)
    val = p.shard_paths("val")[0]
    data = bytearray(val.read_bytes())
    data[-1] ^= 1
    val.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match its recorded checksum"):
        p.verify()


def test_jsonl_and_parquet_sources(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    rows = [f"document number {i}: " + "lorem ipsum dolor sit amet " * 20 for i in range(300)]
    with open(folder / "a.jsonl", "w") as f:
        for r in rows[:150]:
            f.write(json.dumps({"text": r}) + "\n")
    pq.write_table(pa.table({"text": rows[150:]}), folder / "b.parquet")
    s = settings_mod.from_preset("tiny", dataset=f"files:{folder}", vocab_size=300, max_doc_chars=0, val_permille=100, heldout_permille=100)
    p = prepare(s, log=lambda _: None)
    tok = p.tokenizer()
    docs = [d for split in ("train", "val", "heldout") for d in _decoded_docs(p, tok, split)]
    assert sorted(docs) == sorted(rows)
    assert prepared_dir(s) == p.directory
    assert tok.encode("lorem", prepend=BOS_TOKEN)[0] == tok.get_bos_token_id()
