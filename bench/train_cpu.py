"""CPU training efficiency: this machine's matmul ceiling against the cpu preset's training rate.

1. Ceiling: the best rate of square matmuls (n = 256 ... 4096) in float32, and in bfloat16 where
   the CPU computes it natively. Without native bf16 (no AVX512-BF16/AMX) one small bf16 size is
   timed to show why training runs in float32 there.
2. Training: the cpu preset's train.py under the harness's runner for --budget seconds. Steady
   tokens/s = median of the per-step rates after the first step; model FLOP/s = tokens/s x
   train.py's own FLOPs per token (6 x matmul params + attention); MFU = that / the ceiling of
   the dtype training uses.

    python bench/train_cpu.py [--budget 60] [--cache DIR]

Target (issue: train.py): MFU >= 35% of the measured ceiling.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from datetime import date

import torch

from _workspace import machine, prepared_workspace
from autoresearch.rundir import LOG_FILE
from autoresearch.runner import Runner

TARGET_MFU = 0.35


def gemm_rate(n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm up the kernel and the allocator
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def ceiling(dtype: torch.dtype, sizes: list[int]) -> tuple[float, int]:
    rates = {n: gemm_rate(n, dtype) for n in sizes}
    for n, r in rates.items():
        print(f"  {str(dtype):15s} n={n:5d}: {r / 1e9:7.1f} GFLOP/s")
    n = max(rates, key=rates.get)
    return rates[n], n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds of the measured run")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {date.today()}")

    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print("matmul ceiling:")
    fp32, fp32_n = ceiling(torch.float32, [256, 512, 1024, 2048, 4096])
    bf16, bf16_n = ceiling(torch.bfloat16, [256, 512, 1024, 2048, 4096] if native_bf16 else [256])
    train_dtype = "bf16" if native_bf16 else "fp32"
    peak = bf16 if native_bf16 else fp32
    print(f"  ceiling: fp32 {fp32 / 1e9:.1f} GFLOP/s (n={fp32_n}); bf16 {bf16 / 1e9:.1f} GFLOP/s "
          f"({'native' if native_bf16 else 'emulated'}) -> training runs in {train_dtype}")

    ws, prepared = prepared_workspace("cpu", args.budget, args.cache)
    s = ws.settings()
    print(f"training: cpu preset, budget {args.budget:g} s, workspace {ws.root}")
    result = Runner(ws, s, prepared.data_sha256).run("0001", ws.git.head())
    run_dir = ws.runs_dir / "0001"
    if result.outcome != "ok":
        raise SystemExit(f"the training run failed ({result.outcome}: {result.error}); see {run_dir / LOG_FILE}")
    log = (run_dir / LOG_FILE).read_text()
    flops_per_token = float(re.search(r"([\d.]+) MFLOP/token", log).group(1)) * 1e6
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rate = statistics.median(r["tokens_per_s"] for r in steps[1:])
    model_flops = rate * flops_per_token
    mfu = model_flops / peak
    print(f"  {len(steps)} steps, val_bpb {result.val_bpb:.4f} (budget {args.budget:g} s), "
          f"{result.summary.get('num_params_M')}M params, {flops_per_token / 1e6:.1f} MFLOP/token")
    print(f"  steady rate {rate:,.0f} tokens/s = {model_flops / 1e9:.1f} GFLOP/s of model FLOPs")
    print(f"RESULT mfu {100 * mfu:.1f}% of the measured {train_dtype} ceiling "
          f"({model_flops / 1e9:.1f} / {peak / 1e9:.1f} GFLOP/s); ratio to the {100 * TARGET_MFU:.0f}% target: "
          f"{mfu / TARGET_MFU:.2f}x -> {'met' if mfu >= TARGET_MFU else 'NOT met'}")


if __name__ == "__main__":
    main()
