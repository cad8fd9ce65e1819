"""CPU training: the matmul ceiling, and the cpu preset's train.py against the template before
issue 18 (eager, heap never trimmed), in one run.

1. Ceiling: the best rate of square matmuls (n = 256 ... 4096) in float32, and in bfloat16 where
   the CPU computes it natively. Without native bf16 (no AVX512-BF16/AMX) one small bf16 size is
   timed to show why training runs in float32 there.
2. Training, three train.py files under the harness's runner, each for --budget seconds:
   - eager:    the template and cpu preset of commit dd770d2 (before issue 18), as shipped then;
   - compiled: the same file with only `torch.compile` applied on the CPU too;
   - shipped:  the cpu preset's train.py as `autoresearch init` writes it now.
   Runs are sequential and interleaved (eager, compiled, shipped, then again in a rotated order),
   so that a change in the machine's load falls on every variant alike; or, with --side-by-side,
   the three run at the same time with one thread each (on a shared machine the fairest split of
   whatever CPU is left). The load average and the runner's contention measure are printed with
   each run. Each variant has a workspace and an empty compile cache of its own: the first run of
   a compiled variant compiles cold, its later runs load the cache (warm).
   Per run: steps, steady tokens/s (median per-step rate after the untimed warm-up), val_bpb (the
   harness's), peak RSS of train.py, compile seconds (the untimed first step beyond a steady
   step), start-up beyond training (launch to hand-over less training seconds), evaluation.
3. Ratios against eager: steps, tokens/s, val_bpb, peak RSS; cold and warm compile; the targets
   of issue 18. MFU of the shipped preset against the ceiling of its dtype.

    python bench/train_cpu.py [--budget 60] [--repeats 2] [--side-by-side] [--cache DIR]

Targets (issue 18, 2-core machine): shipped >= 1.25x eager's steps, lower val_bpb, peak RSS <= 60%
of eager's, warm compile < 10 s. Issue "train.py": MFU >= 35% of the measured ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

from _workspace import machine, prepared_workspace
from autoresearch import hparams
from autoresearch.rundir import LOG_FILE, METRICS_FILE
from autoresearch.runner import Runner
from autoresearch.workspace import train_template

TARGET_MFU = 0.35
TARGET_STEPS, TARGET_RSS, TARGET_WARM_COMPILE = 1.25, 0.60, 10.0
BEFORE = "dd770d2"  # the last commit before issue 18's changes (eager on the CPU, on the cpu clock)
BEFORE_TRAIN = dict(DEPTH=4, ASPECT_RATIO=32, HEAD_DIM=64, WINDOW_PATTERN="L",  # its cpu preset's defaults
                    TOTAL_BATCH_SIZE=2**13, DEVICE_BATCH_SIZE=32)
CUDA_ONLY = 'train_model = torch.compile(model) if COMPILE and DEVICE == "cuda" else model'
ANY_DEVICE = 'train_model = torch.compile(model) if COMPILE and DEVICE != "mps" else model'


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


def before_template() -> str:
    """train.py of the cpu preset at BEFORE, from this clone's git history."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "show", f"{BEFORE}:src/autoresearch/templates/train.py"], cwd=root,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot read the template of commit {BEFORE} ({done.stderr.strip()}): run the bench "
                         "in a git clone of the project with its history")
    return hparams.rewrite(done.stdout, BEFORE_TRAIN)


@dataclass
class Run:
    variant: str
    steps: int
    tokens_per_s: float
    val_bpb: float
    peak_mb: float
    compile_s: float  # the untimed first step beyond a steady step
    beyond_training_s: float  # launch to hand-over, less the training seconds
    eval_s: float
    wall_s: float
    contention: float
    load: float  # 1-minute load average at the end of the run
    flops_per_token: float
    overstayed: bool  # handed over after budget + start-up allowance (the loop would not keep it)


def measure(ws, runner: Runner, variant: str, text: str, run_id: str) -> Run:
    ws.train_py.write_text(text)
    commit = ws.git.commit_all(f"bench: {variant}", paths=["train.py"])
    result = runner.run(run_id, commit)
    run_dir = ws.runs_dir / run_id
    if result.val_bpb is None:  # an overstayed run (past budget + allowance) is still evaluated and counted here
        raise SystemExit(f"the {variant} run failed ({result.outcome}: {result.why}); see {run_dir / LOG_FILE}")
    log = (run_dir / LOG_FILE).read_text()
    s = result.summary
    metrics = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
    tokens_per_step = hparams.read_block(text)["TOTAL_BATCH_SIZE"].value
    untimed = sum(1 for m in metrics if m["training_seconds"] == 0.0)
    steady = statistics.median(m["tokens_per_s"] for m in metrics[untimed:])
    first = sum(tokens_per_step / m["tokens_per_s"] for m in metrics[:untimed])
    return Run(variant, int(s["num_steps"]), steady, result.val_bpb, s["peak_vram_mb"],
               first - untimed * tokens_per_step / steady, result.handover_seconds - s["training_seconds"],
               result.eval_seconds or 0.0, result.wall_seconds,
               (result.interference or {}).get("contention", float("nan")), os.getloadavg()[0],
               float(re.search(r"([\d.]+) MFLOP/token", log).group(1)) * 1e6, result.outcome == "timeout")


def print_run(r: Run) -> None:
    print(f"  {r.variant:9s} steps {r.steps:4d} | {r.tokens_per_s:7,.0f} tok/s | val_bpb {r.val_bpb:.4f} | "
          f"peak RSS {r.peak_mb:6,.0f} MB | compile {r.compile_s:5.1f} s | start-up beyond training "
          f"{r.beyond_training_s:5.1f} s | eval {r.eval_s:4.1f} s | contention {r.contention:4.0%} | load {r.load:.1f}"
          f"{' | OVERSTAYED the start-up allowance' if r.overstayed else ''}",
          flush=True)


def summarise(runs: list[Run], budget: float) -> dict[str, dict]:
    out = {}
    for variant in dict.fromkeys(r.variant for r in runs):
        rs = [r for r in runs if r.variant == variant]
        overhead = statistics.fmean(r.wall_s + r.eval_s for r in rs) - budget
        out[variant] = {
            "steps": statistics.fmean(r.steps for r in rs),
            "tokens_per_s": statistics.median(r.tokens_per_s for r in rs),
            "val_bpb": statistics.fmean(r.val_bpb for r in rs),
            "peak_mb": max(r.peak_mb for r in rs),
            "cold_s": rs[0].compile_s,
            "warm_s": max((r.compile_s for r in rs[1:]), default=float("nan")),
            "overhead_s": overhead,
            "per_hour_300": 3600 / (300 + overhead),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds of each run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant (the first compiles cold)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run the variants of each repeat at the same time, one thread each")
    parser.add_argument("--hard-limit", type=float, default=0.0,
                        help="kill a run after this many seconds (default: 2 x budget + 900, for a loaded machine)")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {date.today()}; load average {os.getloadavg()[0]:.1f}")

    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print("matmul ceiling:")
    fp32, fp32_n = ceiling(torch.float32, [256, 512, 1024, 2048, 4096])
    bf16, bf16_n = ceiling(torch.bfloat16, [256, 512, 1024, 2048, 4096] if native_bf16 else [256])
    train_dtype = "bf16" if native_bf16 else "fp32"
    peak = bf16 if native_bf16 else fp32
    print(f"  ceiling: fp32 {fp32 / 1e9:.1f} GFLOP/s (n={fp32_n}); bf16 {bf16 / 1e9:.1f} GFLOP/s "
          f"({'native' if native_bf16 else 'emulated'}) -> training runs in {train_dtype}")

    eager = before_template()
    if CUDA_ONLY not in eager:
        raise SystemExit(f"the template of {BEFORE} has no line {CUDA_ONLY!r} to switch compilation on")
    hard_limit = args.hard_limit or 2 * args.budget + 900
    spaces = {name: prepared_workspace("cpu", args.budget, args.cache, hard_limit=hard_limit)
              for name in ("eager", "compiled", "shipped")}
    s = spaces["shipped"][0].settings()
    variants = {"eager": eager, "compiled": eager.replace(CUDA_ONLY, ANY_DEVICE), "shipped": train_template(s)}
    compile_dirs = Path(tempfile.mkdtemp(prefix="autoresearch-bench-compile-"))
    threads = {"OMP_NUM_THREADS": "1"} if args.side_by_side else {}
    runners = {name: Runner(ws, s, prepared.data_sha256, extra_env={
        **threads,
        "TORCHINDUCTOR_CACHE_DIR": str(compile_dirs / name / "inductor"),
        "TRITON_CACHE_DIR": str(compile_dirs / name / "triton")}) for name, (ws, prepared) in spaces.items()}
    how = "side by side, one thread each" if args.side_by_side else "sequential and interleaved"
    print(f"training: cpu preset, budget {args.budget:g} s, {args.repeats} run(s) of each variant, {how}; "
          f"workspaces {', '.join(str(ws.root) for ws, _ in spaces.values())}; empty compile caches in {compile_dirs}")
    runs: list[Run] = []
    names = list(variants)
    for repeat in range(args.repeats):
        run_id = f"{repeat + 1:04d}"

        def one(name: str) -> Run:
            run = measure(spaces[name][0], runners[name], name, variants[name], run_id)
            print_run(run)
            return run

        if args.side_by_side:
            with ThreadPoolExecutor(len(names)) as pool:
                runs += pool.map(one, names)
        else:
            runs += [one(name) for name in names[repeat % len(names):] + names[:repeat % len(names)]]

    table = summarise(runs, args.budget)
    base = table["eager"]
    print(f"\nper variant ({args.repeats} run(s) each; overhead = wall + evaluation - budget; experiments/hour "
          "at a 300 s budget with that overhead):")
    for name, v in table.items():
        print(f"  {name:9s} steps {v['steps']:6.1f} ({v['steps'] / base['steps']:.2f}x) | tok/s {v['tokens_per_s']:7,.0f} "
              f"({v['tokens_per_s'] / base['tokens_per_s']:.2f}x) | val_bpb {v['val_bpb']:.4f} "
              f"({v['val_bpb'] - base['val_bpb']:+.4f}) | peak RSS {v['peak_mb']:6,.0f} MB ({v['peak_mb'] / base['peak_mb']:.2f}x) | "
              f"compile cold {v['cold_s']:5.1f} s, warm {v['warm_s']:5.1f} s | overhead {v['overhead_s']:5.1f} s, "
              f"{v['per_hour_300']:.1f}/h at 300 s")
    ship = table["shipped"]
    checks = [
        (f"steps {ship['steps'] / base['steps']:.2f}x eager's", ship["steps"] / base["steps"] >= TARGET_STEPS, f">= {TARGET_STEPS}x"),
        (f"val_bpb {ship['val_bpb'] - base['val_bpb']:+.4f} against eager's", ship["val_bpb"] < base["val_bpb"], "lower"),
        (f"peak RSS {ship['peak_mb'] / base['peak_mb']:.2f}x eager's", ship["peak_mb"] <= TARGET_RSS * base["peak_mb"], f"<= {TARGET_RSS}x"),
        (f"warm compile {ship['warm_s']:.1f} s", ship["warm_s"] < TARGET_WARM_COMPILE, f"< {TARGET_WARM_COMPILE:g} s"),
    ]
    for text, ok, target in checks:
        print(f"RESULT shipped cpu preset: {text} (target {target}: {'met' if ok else 'NOT met'})")

    shipped = [r for r in runs if r.variant == "shipped"]
    rate = ship["tokens_per_s"]
    model_flops = rate * shipped[0].flops_per_token
    mfu = model_flops / peak
    print(f"RESULT mfu {100 * mfu:.1f}% of the measured {train_dtype} ceiling "
          f"({model_flops / 1e9:.1f} / {peak / 1e9:.1f} GFLOP/s); ratio to the {100 * TARGET_MFU:.0f}% target: "
          f"{mfu / TARGET_MFU:.2f}x -> {'met' if mfu >= TARGET_MFU else 'NOT met'}")


if __name__ == "__main__":
    main()
