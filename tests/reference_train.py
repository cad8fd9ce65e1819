"""A train.py written the way the reference's are: it imports the reference's names from prepare,
trains a small GPT for TIME_BUDGET seconds and prints the reference's summary block. Only its
device line differs from a CUDA original. Used to check that such files run unchanged."""

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

DEPTH = 2
WIDTH = 64
DEVICE_BATCH_SIZE = 16
LR = 3e-3
device = "cpu"  # the reference says "cuda"

t_start = time.time()
torch.manual_seed(42)


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.out = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(F.rms_norm(x, (C,))).view(B, T, 3, 2, C // 2).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(F.rms_norm(x, (C,)))))


class GPT(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, WIDTH)
        self.pos = nn.Embedding(MAX_SEQ_LEN, WIDTH)
        self.blocks = nn.ModuleList(Block(WIDTH) for _ in range(DEPTH))
        self.lm_head = nn.Linear(WIDTH, vocab_size, bias=False)

    def forward(self, idx, targets=None, reduction="mean"):
        x = self.wte(idx) + self.pos(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(F.rms_norm(x, (WIDTH,))).float()
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), reduction=reduction)


tokenizer = Tokenizer.from_directory()
model = GPT(tokenizer.get_vocab_size()).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
train_loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
x, y, epoch = next(train_loader)
step, total_training_time = 0, 0.0
while total_training_time < TIME_BUDGET:
    t0 = time.time()
    loss = model(x, y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    x, y, epoch = next(train_loader)
    if math.isnan(loss.item()) or loss.item() > 100:
        print("FAIL")
        exit(1)
    total_training_time += time.time() - t0
    step += 1
    print(f"\rstep {step:05d} | loss: {loss.item():.6f}", end="", flush=True)
print()

model.eval()
val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {total_training_time:.1f}")
print(f"total_seconds:    {time.time() - t_start:.1f}")
print(f"peak_vram_mb:     {0.0:.1f}")
print(f"mfu_percent:      {0.0:.2f}")
print(f"total_tokens_M:   {step * DEVICE_BATCH_SIZE * MAX_SEQ_LEN / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {sum(p.numel() for p in model.parameters()) / 1e6:.1f}")
print(f"depth:            {DEPTH}")
