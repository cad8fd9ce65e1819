from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autoresearch.evaluate import eval_rows, logits_forward, logits_of, score_rows


class Bigram(torch.nn.Module):
    """A tiny model whose logits depend only on the current token."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, idx, targets=None, reduction="mean"):
        logits = self.table[idx]
        if targets is None:
            return logits
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), reduction=reduction)


class Uniform(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab)


@pytest.fixture(scope="module")
def rows(prepared, tiny_settings):
    return eval_rows(prepared.shard_paths("val"), tiny_settings.max_seq_len, tiny_settings.eval_tokens)


@pytest.fixture(scope="module")
def token_bytes(tokenizer):
    return torch.from_numpy(tokenizer.token_byte_lengths())


def test_eval_rows_are_fixed_by_the_settings(rows, tiny_settings, tokenizer):
    assert rows.shape == (tiny_settings.eval_tokens // tiny_settings.max_seq_len, tiny_settings.max_seq_len + 1)
    assert (rows[:, 0] == tokenizer.get_bos_token_id()).all()


def test_same_value_for_batch_sizes_1_4_16(rows, token_bytes, tokenizer):
    model = Bigram(tokenizer.get_vocab_size())
    with torch.no_grad():
        values = [score_rows(logits_forward(model), rows, token_bytes, b, "cpu").bpb for b in (1, 4, 16)]
    assert values[0] == pytest.approx(values[1], abs=1e-9) == pytest.approx(values[2], abs=1e-9)


def test_matches_a_hand_computation(rows, token_bytes, tokenizer):
    vocab = tokenizer.get_vocab_size()
    model = Bigram(vocab, seed=1)
    with torch.no_grad():
        got = score_rows(logits_forward(model), rows, token_bytes, 5, "cpu").bpb
    table = model.table.detach().double().numpy()
    log_probs = table - np.log(np.exp(table - table.max(1, keepdims=True)).sum(1, keepdims=True)) - table.max(1, keepdims=True)
    nats = 0.0
    nbytes = 0
    for row in rows:
        for x, y in zip(row[:-1], row[1:]):
            raw = len(tokenizer.enc.decode_single_token_bytes(int(y))) if y < tokenizer.get_bos_token_id() else 0
            if raw:
                nats -= log_probs[x, y]
                nbytes += raw
    assert got == pytest.approx(nats / (math.log(2) * nbytes), rel=1e-6)


def test_uniform_model_scores_log2_vocab_per_counted_token(rows, token_bytes, tokenizer):
    vocab = tokenizer.get_vocab_size()
    score = score_rows(logits_forward(Uniform(vocab)), rows, token_bytes, 8, "cpu")
    targets = torch.from_numpy(rows[:, 1:].astype(np.int64)).reshape(-1)
    counted = int((token_bytes[targets] > 0).sum())
    assert score.bpb == pytest.approx(math.log2(vocab) * counted / score.bytes, rel=1e-6)  # float32 CE


def test_fixed_batch_padding_is_not_counted(rows, token_bytes, tokenizer):
    model = Bigram(tokenizer.get_vocab_size())
    with torch.no_grad():
        plain = score_rows(logits_forward(model), rows, token_bytes, 7, "cpu")
        padded = score_rows(logits_forward(model), rows, token_bytes, 7, "cpu", fixed_batch=True)
    assert plain.bpb == pytest.approx(padded.bpb, abs=1e-9) and plain.bytes == padded.bytes


def test_logits_are_required_with_a_clear_message():
    x = torch.zeros(2, 3, dtype=torch.long)
    assert logits_of((torch.zeros(2, 3, 5), "aux"), x).shape == (2, 3, 5)
    with pytest.raises(TypeError, match=r"must return logits of shape \(batch, seq, vocab\)"):
        logits_of(torch.tensor(1.0), x)
