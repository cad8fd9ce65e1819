"""Where a CPU training step spends its time: the cpu preset's model under torch.profiler.

Builds the workspace's model and optimizer from train.py's own definitions (everything above its
setup section, executed as train.py would), runs a few warm-up steps, then profiles three steps
and prints the operators by self CPU time, grouped into matmuls (the part the GEMM ceiling
describes), attention, and everything else.

    python bench/profile_cpu.py [--cache DIR] [--bf16 auto|on|off]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import torch

from _workspace import machine, prepared_workspace

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention": ("scaled_dot_product", "flash_attention", "_efficient_attention"),
}


def group_of(name: str) -> str:
    for group, keys in GROUPS.items():
        if any(k in name for k in keys):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    ws, _ = prepared_workspace("cpu", 60.0, args.cache)
    source = ws.train_py.read_text().split("# --- setup")[0]
    if args.bf16 != "auto":
        source = source.replace("USE_BF16 = ", f"USE_BF16 = {args.bf16 == 'on'}  # ", 1)
    os.chdir(ws.root)
    sys.path.insert(0, str(ws.root))
    ns: dict = {"__name__": "train_definitions"}
    exec(compile(source, str(ws.train_py), "exec"), ns)

    tokenizer = ns["Tokenizer"].from_directory()
    width = -(-ns["DEPTH"] * ns["ASPECT_RATIO"] // ns["HEAD_DIM"]) * ns["HEAD_DIM"]
    model = ns["GPT"](tokenizer.get_vocab_size(), ns["DEPTH"], width, ns["HEAD_DIM"], ns["MAX_SEQ_LEN"], ns["WINDOW_PATTERN"])
    model.init_weights()
    optimizer = ns["build_optimizer"](model, width)
    loader = ns["make_dataloader"](tokenizer, ns["DEVICE_BATCH_SIZE"], ns["MAX_SEQ_LEN"], "train", device="cpu", seed=0)
    accum = ns["TOTAL_BATCH_SIZE"] // (ns["DEVICE_BATCH_SIZE"] * ns["MAX_SEQ_LEN"])

    def step() -> None:
        for _ in range(accum):
            x, y, _ = next(loader)
            with ns["autocast"]:
                loss = model(x, y)
            (loss / accum).backward()
        optimizer.step()
        model.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    by_group: dict[str, float] = defaultdict(float)
    for e in events:
        by_group[group_of(e.key)] += e.self_cpu_time_total
    print(f"dtype: {'bf16' if ns['USE_BF16'] else 'fp32'}; {total / 3 / 1e3:.0f} ms of operator time per step")
    for group, t in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {group:10s} {100 * t / total:5.1f}%")
    print("top operators by self CPU time:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {100 * e.self_cpu_time_total / total:5.1f}%  {e.key}")


if __name__ == "__main__":
    main()
