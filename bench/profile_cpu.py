"""Where a CPU training step spends its time: the cpu preset's model under torch.profiler.

Builds the workspace's model and optimizer from train.py's own definitions (everything above its
setup section, executed as train.py would), runs a few warm-up steps, then profiles three steps
and prints the operators by self CPU time, grouped into matmuls (the part the GEMM ceiling
describes), attention, and everything else. From the matmuls' recorded shapes it prints the rate
they reach (FLOP per second of matmul time) against the square-matmul ceiling of the same dtype,
so that MFU splits into two factors: the share of the step in matmuls, and how fast matmuls of
this model's shapes run.

    python bench/profile_cpu.py [--cache DIR] [--bf16 auto|on|off] [--compile] [--set KEY=VALUE ...]

--compile profiles the model as train.py runs it with COMPILE = True (inductor's fused kernels);
--set replaces train.py hyperparameters (e.g. --set ASPECT_RATIO=48) to profile another shape.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import torch

from _workspace import hyperparameters, machine, prepared_workspace, with_hyperparameters
from train_cpu import ceiling

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
    parser.add_argument("--compile", action="store_true", help="torch.compile the model, as train.py does")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a train.py hyperparameter")
    args = parser.parse_args()
    changes = hyperparameters(args.set, "--set")
    print(f"machine: {machine()}")
    ws, _ = prepared_workspace("cpu", 60.0, args.cache)
    source = with_hyperparameters(ws.train_py.read_text(), changes, "--set").split("# --- setup")[0]
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
    train_model = torch.compile(model) if args.compile else model
    print(f"model: depth {ns['DEPTH']}, width {width}, head {ns['HEAD_DIM']}, {ns['TOTAL_BATCH_SIZE']} tokens per "
          f"step in {accum} pass(es) of {ns['DEVICE_BATCH_SIZE']} rows; {'compiled' if args.compile else 'eager'}")

    def step() -> None:
        for _ in range(accum):
            x, y, _ = next(loader)
            with ns["autocast"]:
                loss = train_model(x, y)
            (loss / accum).backward()
        optimizer.step()
        model.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
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

    flops, seconds = matmul_work(prof)
    dtype = torch.bfloat16 if ns["USE_BF16"] else torch.float32
    peak, n = ceiling(dtype, [256, 512, 1024, 2048])
    share = by_group["matmul"] / total
    rate = flops / seconds if seconds else 0.0
    print(f"matmuls: {flops / 3 / 1e9:.2f} GFLOP per step in {seconds / 3 * 1e3:.0f} ms: {rate / 1e9:.1f} GFLOP/s, "
          f"{100 * rate / peak:.0f}% of the square-matmul ceiling ({peak / 1e9:.1f} GFLOP/s at n={n})")
    print(f"RESULT mfu bound: matmul share {100 * share:.0f}% x matmul rate {100 * rate / peak:.0f}% of the ceiling "
          f"= {100 * share * rate / peak:.1f}% (attention and everything else counted as zero FLOPs)")


def matmul_work(prof) -> tuple[float, float]:
    """FLOPs and seconds of the 2-D matmuls (mm, addmm) the profile recorded, from their input shapes."""
    flops = seconds = 0.0
    for e in prof.key_averages(group_by_input_shape=True):
        shapes = [s for s in e.input_shapes if s]
        if e.key == "aten::mm" and len(shapes) >= 2 and len(shapes[0]) == 2 and len(shapes[1]) == 2:
            (m, k), (_, n) = shapes[0], shapes[1]
        elif e.key == "aten::addmm" and len(shapes) >= 3 and len(shapes[1]) == 2 and len(shapes[2]) == 2:
            (m, k), (_, n) = shapes[1], shapes[2]
        else:
            continue
        flops += 2 * m * k * n * e.count
        seconds += e.self_cpu_time_total / 1e6
    return flops, seconds


if __name__ == "__main__":
    main()
