from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoresearch.errors import DataError
from autoresearch.tokenizer import BOS_TOKEN, RANKS_FILE, SPECIAL_TOKENS, Tokenizer, capped_texts

unicode_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # lone surrogates are not valid str for UTF-8
    max_size=300,
)


@given(text=unicode_text)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trips_arbitrary_unicode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@given(text=unicode_text)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_token_byte_lengths_sum_to_utf8_length(tokenizer, text):
    lengths = tokenizer.token_byte_lengths()
    ids = tokenizer.encode(text, prepend=BOS_TOKEN)
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))


def test_partial_character_token_counts_its_raw_bytes(tokenizer):
    # Byte-level BPE has tokens for single bytes of multi-byte characters; with no merges
    # covering "€" (3 bytes) it is encoded as several tokens, each holding a fragment.
    lengths = tokenizer.token_byte_lengths()
    fragments = [i for i in range(256) if tokenizer.enc.decode_single_token_bytes(i) == bytes([0xE2])]
    assert fragments, "every byte has a token"
    frag = fragments[0]
    assert lengths[frag] == 1
    # The reference's method (decode to text, re-encode) would count U+FFFD: 3 bytes.
    assert len(tokenizer.decode([frag]).encode("utf-8")) == 3
    ids = tokenizer.encode("€")
    assert sum(lengths[i] for i in ids) == 3


def test_special_tokens(tokenizer):
    n = tokenizer.get_vocab_size()
    assert tokenizer.get_bos_token_id() == n - len(SPECIAL_TOKENS)
    assert tokenizer.encode_special(BOS_TOKEN) == tokenizer.get_bos_token_id()
    lengths = tokenizer.token_byte_lengths()
    assert all(lengths[tokenizer.encode_special(t)] == 0 for t in SPECIAL_TOKENS)
    # Special-token text in a document is ordinary text, never a special token.
    ids = tokenizer.encode("<|reserved_0|>")
    assert tokenizer.get_bos_token_id() not in ids


def test_encode_list_and_prepend(tokenizer):
    batch = tokenizer.encode(["def f():", "return 1"], prepend=BOS_TOKEN)
    assert all(ids[0] == tokenizer.get_bos_token_id() for ids in batch)
    assert tokenizer.decode(batch[1][1:]) == "return 1"
    assert tokenizer.encode("x", prepend=tokenizer.get_bos_token_id())[0] == tokenizer.get_bos_token_id()
    with pytest.raises(TypeError):
        tokenizer.encode(42)


def test_save_load_is_plain_text_and_identical(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    text = (tmp_path / RANKS_FILE).read_text(encoding="ascii")
    assert len(text.splitlines()) == tokenizer.get_vocab_size() - len(SPECIAL_TOKENS)
    loaded = Tokenizer.from_directory(tmp_path)
    assert loaded.sha256() == tokenizer.sha256()
    sample = "for i in range(10):\n    print(i, 'é€😀')\n"
    assert loaded.encode(sample) == tokenizer.encode(sample)


def test_corrupt_or_missing_tokenizer_is_a_clear_error(tokenizer, tmp_path):
    with pytest.raises(DataError, match="autoresearch prepare"):
        Tokenizer.from_directory(tmp_path)
    tokenizer.save(tmp_path)
    ranks = tmp_path / RANKS_FILE
    ranks.write_text(ranks.read_text()[:-40] + "not base64!!\n")
    with pytest.raises(DataError, match="corrupt tokenizer"):
        Tokenizer.from_directory(tmp_path)


def test_training_reaches_the_requested_vocabulary():
    texts = ["the quick brown fox jumps over the lazy dog " * 50, "def main():\n    return 0\n" * 50]
    tok = Tokenizer.train(texts, 300)
    assert tok.get_vocab_size() == 300
    with pytest.raises(DataError, match="smaller vocab_size"):
        Tokenizer.train(["ab"], 5000)


def test_capped_texts_caps_documents_and_total():
    out = list(capped_texts(["a" * 10, "b" * 10, "c" * 10], doc_cap=4, max_chars=10))
    assert out == ["aaaa", "bbbb", "cc"]
