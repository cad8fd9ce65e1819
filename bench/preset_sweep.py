"""Sweep the cpu preset's model shape and batch: val_bpb at a fixed budget, one config after another.

Each config is the cpu preset's train.py (as `autoresearch init` writes it) with some hyperparameters
replaced, trained under the harness's runner for --budget seconds and evaluated by the harness.
Configs run one at a time (all threads each), in one workspace and one compile cache: a config
with a new shape compiles cold, a repeat of it warm. Printed per run: steps, steady tokens/s,
val_bpb, peak RSS, MFU against the measured matmul ceiling of the dtype train.py uses; at the end
the configs ranked by val_bpb (the mean of their runs).

    python bench/preset_sweep.py [--budget 300] [--repeats 1] [--cache DIR] CONFIG...

A CONFIG is NAME:KEY=VALUE,KEY=VALUE (train.py hyperparameters), e.g.
    d3w192:ASPECT_RATIO=64   b4k:TOTAL_BATCH_SIZE=4096,DEVICE_BATCH_SIZE=16
With no CONFIG, the depth sweep recorded in BENCHMARKS.md ("Depth and learning rates") is run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from datetime import date
from pathlib import Path

import torch

from _workspace import hyperparameters, machine, prepared_workspace, with_hyperparameters
from autoresearch.runner import Runner
from autoresearch.settings import from_preset
from autoresearch.workspace import train_template
from train_cpu import Run, ceiling, measure, print_run

# The sweep that chose the cpu preset's depth (issue 18, a 2-core AVX512-BF16 machine, BENCHMARKS.md):
# depth and learning rates around the old preset (DEPTH 4, ASPECT_RATIO 32 -> width 128), which the
# preset (DEPTH 3, ASPECT_RATIO 40 -> width 128, HEAD_DIM 64, 2^13 tokens per step) replaced. The
# earlier width and batch sweep is in BENCHMARKS.md with its configs.
D4 = "DEPTH=4,ASPECT_RATIO=32"
DEFAULT_SWEEP = [
    "d3:",
    f"d4:{D4}",
    "d2:DEPTH=2,ASPECT_RATIO=64",
    "d6:DEPTH=6,ASPECT_RATIO=21",
    f"d4-hd32:{D4},HEAD_DIM=32",
    f"d4-mlr06:{D4},MATRIX_LR=0.06",
    f"d4-mlr025:{D4},MATRIX_LR=0.025",
    f"d4-wd07:{D4},WARMDOWN_RATIO=0.7",
    f"d4-elr2x:{D4},UNEMBEDDING_LR=0.008,EMBEDDING_LR=1.2",
    "d3-mlr06:MATRIX_LR=0.06",
]


def parse_config(text: str) -> tuple[str, dict]:
    name, _, assignments = text.partition(":")
    if not name:
        raise SystemExit(f"config {text!r}: give it a name, NAME:KEY=VALUE,...")
    return name, hyperparameters(filter(None, assignments.split(",")), f"config {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="NAME:KEY=VALUE,... (default: the documented sweep)")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds of each run")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each config, one after another")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    configs = dict(parse_config(c) for c in (args.configs or DEFAULT_SWEEP))
    # train.py of each config before anything is measured, so that a bad config fails at once
    template = train_template(from_preset("cpu"))
    texts = {name: with_hyperparameters(template, values, f"config {name!r}") for name, values in configs.items()}
    print(f"machine: {machine()}; {date.today()}; load average {os.getloadavg()[0]:.1f}")

    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    dtype = torch.bfloat16 if native_bf16 else torch.float32
    peak, _ = ceiling(dtype, [256, 512, 1024, 2048, 4096])
    print(f"  training runs in {'bf16' if native_bf16 else 'fp32'}; ceiling {peak / 1e9:.1f} GFLOP/s")

    ws, prepared = prepared_workspace("cpu", args.budget, args.cache, hard_limit=2 * args.budget + 900)
    s = ws.settings()
    compile_dir = Path(tempfile.mkdtemp(prefix="autoresearch-sweep-compile-"))
    runner = Runner(ws, s, prepared.data_sha256, extra_env={
        "TORCHINDUCTOR_CACHE_DIR": str(compile_dir / "inductor"), "TRITON_CACHE_DIR": str(compile_dir / "triton")})
    print(f"sweep: cpu preset, budget {args.budget:g} s, {args.repeats} run(s) of each of {len(configs)} configs; "
          f"workspace {ws.root}")

    runs: list[Run] = []
    for repeat in range(args.repeats):
        for i, (name, text) in enumerate(texts.items()):
            run = measure(ws, runner, name, text, f"{repeat + 1:02d}{i + 1:02d}")
            print_run(run)
            print(f"    {configs[name] or 'the preset as shipped'}: {run.flops_per_token / 1e6:.1f} MFLOP/token, "
                  f"MFU {100 * run.tokens_per_s * run.flops_per_token / peak:.1f}%", flush=True)
            runs.append(run)

    print(f"\nranked by val_bpb (mean of {args.repeats} run(s); budget {args.budget:g} s):")
    ranked = sorted(configs, key=lambda n: statistics.fmean(r.val_bpb for r in runs if r.variant == n))
    for name in ranked:
        rs = [r for r in runs if r.variant == name]
        bpbs = [r.val_bpb for r in rs]
        spread = f" (sd {statistics.stdev(bpbs):.4f})" if len(bpbs) > 1 else ""
        rate = statistics.median(r.tokens_per_s for r in rs)
        print(f"RESULT {name:14s} val_bpb {statistics.fmean(bpbs):.4f}{spread} | steps "
              f"{statistics.fmean(r.steps for r in rs):6.1f} | {rate:7,.0f} tok/s | "
              f"MFU {100 * rate * rs[0].flops_per_token / peak:5.1f}% | peak RSS {max(r.peak_mb for r in rs):6,.0f} MB | "
              f"compile cold {rs[0].compile_s:5.1f} s")


if __name__ == "__main__":
    main()
