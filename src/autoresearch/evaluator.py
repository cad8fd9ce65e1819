"""The runner's evaluator: a fresh process that scores a handed-over model.

    python -m autoresearch.evaluator --spec SPEC.json --out RESULT.json            (one shot)
    python -I -m autoresearch.evaluator --serve        (started with the run; pipes only)

With `--serve` the runner starts the evaluator when it launches train.py. Its first stdin line is
the spec; while training runs it imports torch, verifies the data, reads the evaluation rows
into memory and warms up torch.export's loader; then it waits for a second line (the model
file, its hash, the device and autocast dtype) and prints the result as one JSON line on stdout.
So after train.py exits only the model load and the scoring remain. Everything passes through
pipes only the runner holds (no file train.py could plant or edit), `-I` keeps the working
folder off the import path, and on Linux it is made non-dumpable, so a process of the same
non-root user cannot ptrace it or read its memory.

The spec (written by the runner, from what it holds in memory) names the model file and its
sha256, the settings, the expected data fingerprint, the device and the autocast dtype that
train.py used. Nothing written by the training process is trusted: the model file must match the
hash the runner took at hand-over; the validation and held-out shards must match the manifest,
and the manifest and tokenizer must match the data fingerprint the loop started with.

The result holds `val_bpb` (on the pinned validation rows) and `heldout_bpb` (on rows of the
never-exposed held-out split): a model that has seen the validation data shows a gap between
them that honest models do not.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from autoresearch import atomic
from autoresearch.data.prepare import PreparedData, data_sha256, open_prepared
from autoresearch.devices import tune_allocator
from autoresearch.errors import AutoresearchError, DataError
from autoresearch.evaluate import Score, cross_entropy_nats, eval_rows, score_rows
from autoresearch.settings import Settings


_PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class EvalSpec:
    settings: dict
    data_sha256: str
    model_file: str = ""  # empty for --serve: the model is named on stdin after the hand-over
    model_sha256: str = ""
    device: str = "cpu"
    autocast: str | None = None  # e.g. "bfloat16"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvalSpec:
        return cls(**json.loads(text))


def heldout_tokens(settings: Settings) -> int:
    """Held-out rows scored: 1/16 of the evaluation (at least 16 rows), enough to show a gap from
    memorised val data without adding much to the evaluation's time."""
    return max(16 * settings.max_seq_len, settings.eval_tokens // 16)


def verify_data(prepared: PreparedData, expected: str) -> None:
    """The manifest's entries and the tokenizer on disk must give the expected fingerprint, and
    the evaluation shards must match the manifest."""
    if data_sha256(prepared.manifest["splits"], prepared.tokenizer().sha256()) != expected:
        raise DataError(
            "the prepared data or tokenizer no longer matches the fingerprint this research started "
            "with (modified or re-prepared): restore it with `autoresearch prepare` or start a new workspace"
        )
    prepared.verify(("val", "heldout"))


@dataclass(frozen=True)
class EvalData:
    """What the evaluation needs besides the model, read and verified once, held in memory (so
    changing the files afterwards changes nothing)."""

    settings: Settings
    val_rows: np.ndarray
    heldout_rows: np.ndarray
    token_bytes: torch.Tensor


def load_data(settings: Settings, expected_sha256: str) -> EvalData:
    prepared = open_prepared(settings)
    verify_data(prepared, expected_sha256)
    return EvalData(
        settings=settings,
        val_rows=eval_rows(prepared.shard_paths("val"), settings.max_seq_len, settings.eval_tokens),
        heldout_rows=eval_rows(prepared.shard_paths("heldout"), settings.max_seq_len, heldout_tokens(settings)),
        token_bytes=torch.from_numpy(prepared.tokenizer().token_byte_lengths()),
    )


def warm_up_loader() -> None:
    """Export and reload a tiny module in memory: the first torch.export.load in a process pays
    ~1 s of one-time initialisation, which should not land on the evaluation's critical path."""
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), buffer)
    buffer.seek(0)
    torch.export.load(buffer).module()


def load_program(path: Path, device: str, expected_sha256: str | None = None) -> torch.nn.Module:
    """Load an exported program. With `expected_sha256`, the bytes that are hashed are the bytes
    that are loaded (read once), so the file cannot be swapped between the check and the load."""
    data = path.read_bytes() if path.exists() else b""
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise AutoresearchError("the handed-over model file is missing or was modified after the hand-over")
    program = torch.export.load(io.BytesIO(data))
    module = program.module()
    # Export inserts dtype assertions for .float()/.to() calls; under the re-applied autocast the
    # dtypes legitimately differ, and the assertions compute nothing.
    for node in list(module.graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten._assert_tensor_metadata.default:
            module.graph.erase_node(node)
    module.recompile()
    return module.to(device)


def score_model(data: EvalData, model_file: Path, model_sha256: str, device: str, autocast: str | None) -> dict:
    started = time.perf_counter()
    module = load_program(model_file, device, model_sha256)
    loaded = time.perf_counter()
    cast = getattr(torch, autocast) if autocast else None
    token_bytes = data.token_bytes.to(device)

    def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=cast or torch.float32, enabled=cast is not None):
            logits = module(x)
        return cross_entropy_nats(logits, y)

    def score(rows: np.ndarray) -> Score:
        with torch.inference_mode():
            return score_rows(forward, rows, token_bytes, data.settings.eval_batch_size, device, fixed_batch=True)

    val, heldout = score(data.val_rows), score(data.heldout_rows)
    return {
        "val_bpb": val.bpb,
        "heldout_bpb": heldout.bpb,
        "val_tokens": val.tokens,
        "heldout_tokens": heldout.tokens,
        "load_seconds": round(loaded - started, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "device": device,
        "autocast": autocast,
    }


def evaluate(spec: EvalSpec) -> dict:
    started = time.perf_counter()
    data = load_data(Settings(**spec.settings), spec.data_sha256)
    result = score_model(data, Path(spec.model_file), spec.model_sha256, spec.device, spec.autocast)
    return {**result, "seconds": round(time.perf_counter() - started, 2)}


def serve(stdin: TextIO) -> dict:
    """Get ready while train.py trains, then evaluate the model named on stdin's second line."""
    _protect_process()
    spec = EvalSpec.from_json(stdin.readline())
    data = load_data(Settings(**spec.settings), spec.data_sha256)
    warm_up_loader()
    line = stdin.readline()
    if not line.strip():
        raise AutoresearchError("no model was handed to the evaluator (the run ended without one)")
    order = json.loads(line)
    result = score_model(data, Path(order["model_file"]), order["model_sha256"], order["device"], order.get("autocast"))
    return {**result, "nonce": order.get("nonce", "")}


def _protect_process() -> None:
    # Not niced: it only sleeps while train.py trains, and a niced evaluator on a busy machine gets a
    # tenth of a core to score with (an unprivileged process cannot raise its priority back).
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoresearch.evaluator")
    parser.add_argument("--spec", type=Path, help="the spec (one-shot mode)")
    parser.add_argument("--out", type=Path, help="where the result goes (one-shot mode)")
    parser.add_argument("--serve", action="store_true",
                        help="read the spec, then the model's order, from stdin; print the result on stdout")
    args = parser.parse_args(argv)
    if not args.serve and (args.spec is None or args.out is None):
        parser.error("--spec and --out are required without --serve")

    def emit(record: dict) -> None:
        if args.serve:
            print(json.dumps(record), flush=True)
        else:
            atomic.write_json(args.out, record)

    tune_allocator()
    try:
        result = serve(sys.stdin) if args.serve else evaluate(EvalSpec.from_json(args.spec.read_text()))
    except AutoresearchError as e:
        emit({"error": str(e)})
        print(f"evaluator: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a model that loads but fails to run: the proposer's error, reported
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        emit({"error": f"the handed-over model failed in the evaluator: {type(e).__name__}: {first}"})
        raise
    emit(result)
    if args.serve:  # the runner is waiting for the exit: skip the interpreter's slow teardown of torch
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
