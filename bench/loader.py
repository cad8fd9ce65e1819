"""Loader throughput: our best-fit packing against the straightforward implementation.

Both pack the same pre-tokenized documents (the pystdlib training split of the cpu preset) with
the same algorithm and produce identical rows; the comparison is the reference's approach of
scanning the document buffer in Python for every placement. Runs on one core.

    python bench/loader.py [--seq-len 256 2048] [--seconds 5]

Targets (issue: harness): ours >= 10x the straightforward one and >= 3M tokens/s on one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from autoresearch import settings
from autoresearch.data.prepare import prepare
from autoresearch.loader import DocumentStream, batches, naive_packed_rows, open_split, packed_rows


def rate(make_rows, row_len: int, seconds: float) -> float:
    rows = make_rows()
    next(rows)  # fill the buffer outside the timing
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(16):
            next(rows)
        n += 16
    return n * row_len / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)

    s = settings.from_preset("cpu")
    prepared = prepare(s, log=lambda m: print(f"  {m}"))
    shard_list = open_split(prepared.shard_paths("train"))
    stream = DocumentStream(shard_list, shuffle=False)
    docs = [stream.tokens(d).tolist() for d in range(len(stream))]
    print(f"machine: {platform.processor() or platform.machine()}, 1 core; corpus: {len(docs)} documents, "
          f"{sum(map(len, docs)) / 1e6:.1f}M tokens")
    for seq_len in args.seq_len:
        row_len = seq_len + 1
        fast_stream = lambda: packed_rows(DocumentStream(shard_list, shuffle=False), row_len)  # noqa: E731
        check_fast, check_slow = fast_stream(), naive_packed_rows(docs, row_len)
        assert all(next(check_fast).tolist() == next(check_slow) for _ in range(50)), "implementations differ"
        naive = rate(lambda: naive_packed_rows(docs, row_len), row_len, args.seconds)
        ours = rate(fast_stream, row_len, args.seconds)
        batch_rows = max(1, 65536 // row_len)
        full = rate(lambda: batches(DocumentStream(shard_list, shuffle=True), batch_rows, seq_len),
                    batch_rows * seq_len, args.seconds)
        print(f"seq {seq_len:5d}: straightforward {naive / 1e6:6.2f}M tok/s | ours (rows) {ours / 1e6:6.2f}M tok/s "
              f"= {ours / naive:5.1f}x | ours (int64 torch batches of {batch_rows}) {full / 1e6:6.2f}M tok/s")
        ok = ours / naive >= 10 and full >= 3e6
        print(f"           target >= 10x and >= 3M tok/s on one core: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
