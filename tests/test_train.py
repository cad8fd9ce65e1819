"""The template train.py: model and optimizer behaviour at tiny sizes on CPU, and whole runs."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from autoresearch import hparams
from autoresearch.rundir import parse_summary
from tests.conftest import load_train_definitions


@pytest.fixture
def defs(make_workspace):
    ws = make_workspace()
    return load_train_definitions(ws.root), ws


def tiny_model(ns, vocab, depth=2, width=64, head_dim=32, seq=32, pattern="L"):
    torch.manual_seed(0)
    model = ns["GPT"](vocab, depth, width, head_dim, seq, pattern)
    model.init_weights()
    return model


@pytest.mark.slow  # trains
def test_a_few_steps_lower_the_loss_on_real_data(defs):
    ns, ws = defs
    prepare = sys.modules["prepare"]
    tok = prepare.Tokenizer.from_directory()
    model = tiny_model(ns, tok.get_vocab_size(), seq=prepare.MAX_SEQ_LEN)
    opt = ns["build_optimizer"](model, 64)
    loader = prepare.make_dataloader(tok, 16, prepare.MAX_SEQ_LEN, "train", device="cpu")
    losses = []
    for _ in range(30):
        x, y, _ = next(loader)
        loss = model(x, y)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert math.log(tok.get_vocab_size()) - 0.5 < losses[0] < math.log(tok.get_vocab_size()) + 0.5  # starts near uniform
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0


@pytest.mark.parametrize("shape", [(3, 48, 96), (2, 96, 48), (1, 64, 64)])
def test_orthogonalisation_yields_near_orthogonal_updates(defs, shape):
    """Singular values spread over [1e-2, 1] (relative) all come out near 1, directions kept. (The
    polynomials lift values down to 1e-3 of the Frobenius norm, which bounds the largest one.)"""
    ns, _ = defs
    torch.manual_seed(1)
    k = min(shape[-2:])
    U, _ = torch.linalg.qr(torch.randn(shape[0], shape[1], k))
    V, _ = torch.linalg.qr(torch.randn(shape[0], shape[2], k))
    G = U @ torch.diag_embed(torch.logspace(-2, 0, k).expand(shape[0], k) * 7.0) @ V.mT
    O = ns["orthogonalize"](G).float()
    s = torch.linalg.svdvals(O)
    assert s.min() > 0.75 and s.max() < 1.25, s
    polar = U @ V.mT  # the exact orthogonal factor
    cos = (O * polar).sum((-2, -1)) / (O.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert (cos > 0.95).all()


def naive_attention(q, k, v, window):
    """softmax(q k^T / sqrt(d)) v with an explicit causal band mask. q, k, v: (B, T, H, D)."""
    T, D = q.size(1), q.size(-1)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    i = torch.arange(T)
    allowed = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)


@pytest.mark.parametrize("window", [1, 3, 8, 16, 40])
def test_attention_window_masks_what_it_should(defs, window):
    ns, _ = defs
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 16, 2, 8) for _ in range(3))
    got = ns["attention"](q, k, v, window)
    assert torch.allclose(got, naive_attention(q, k, v, window), atol=1e-5)


def test_window_pattern_assigns_half_context_and_full_last_layer(defs):
    ns, _ = defs
    model = ns["GPT"](100, 5, 64, 32, 64, "SSL")
    assert model.windows == [32, 32, 64, 32, 64]
    assert model.ve_layers == [0, 2, 4]  # alternating, always including the last


def test_model_is_causal(defs):
    ns, _ = defs
    model = tiny_model(ns, 50, depth=3, seq=24, pattern="SL")
    for block in model.blocks:  # zero-initialised projections would hide any leak
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
    x = torch.randint(0, 50, (2, 24))
    with torch.no_grad():
        base = model(x)
        for t in (0, 7, 23):
            changed = x.clone()
            changed[:, t] = (changed[:, t] + 1) % 50
            out = model(changed)
            assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6)
            assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-6)


def test_summary_block_parses():
    log = "step 00001 | loss: 5.0\rstep 00002 | loss: 4.0\n---\nval_bpb:          1.234567\ntraining_seconds: 4.0\n" \
          "total_seconds:    9.1\npeak_vram_mb:     300.5\nmfu_percent:      12.50\ntotal_tokens_M:   0.1\n" \
          "num_steps:        20\nnum_params_M:     0.2\ndepth:            2\n"
    s = parse_summary(log)
    assert s == {"val_bpb": 1.234567, "training_seconds": 4.0, "total_seconds": 9.1, "peak_vram_mb": 300.5,
                 "mfu_percent": 12.5, "total_tokens_M": 0.1, "num_steps": 20, "num_params_M": 0.2, "depth": 2}


@pytest.mark.slow  # trains
def test_train_py_runs_alone_and_prints_the_output_contract(make_workspace):
    ws = make_workspace(budget=3)
    proc = subprocess.run([sys.executable, "train.py"], cwd=ws.root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = parse_summary(proc.stdout)
    assert set(s) == {"val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                      "total_tokens_M", "num_steps", "num_params_M", "depth"}
    assert 1.0 < s["val_bpb"] < 9.0 and s["training_seconds"] >= 3.0 and s["num_steps"] > 2
    assert s["peak_vram_mb"] > 50  # resident memory on CPU
    metrics = (ws.root / "runs" / "manual" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == s["num_steps"] and '"grad_norm"' in metrics[0] and '"tokens_per_s"' in metrics[0]


@pytest.mark.slow  # trains
def test_a_diverging_run_fails_fast(make_workspace):
    ws = make_workspace(budget=60)
    source = ws.train_py.read_text()
    ws.train_py.write_text(hparams.rewrite(source, {"EMBEDDING_LR": 1e9, "UNEMBEDDING_LR": 1e9, "MATRIX_LR": 1e6}))
    proc = subprocess.run([sys.executable, "train.py"], cwd=ws.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "---" not in proc.stdout
