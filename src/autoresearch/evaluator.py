"""The runner's evaluator: a fresh process that scores a handed-over model.

    python -m autoresearch.evaluator --spec SPEC.json --out RESULT.json

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
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from autoresearch import atomic
from autoresearch.data.prepare import PreparedData, data_sha256, open_prepared
from autoresearch.data.shards import file_sha256
from autoresearch.devices import tune_allocator
from autoresearch.errors import AutoresearchError, DataError
from autoresearch.evaluate import Score, cross_entropy_nats, eval_rows, score_rows
from autoresearch.settings import Settings


@dataclass(frozen=True)
class EvalSpec:
    model_file: str
    model_sha256: str
    settings: dict
    data_sha256: str
    device: str
    autocast: str | None  # e.g. "bfloat16"

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


def load_program(path: Path, device: str) -> torch.nn.Module:
    program = torch.export.load(str(path))
    module = program.module()
    # Export inserts dtype assertions for .float()/.to() calls; under the re-applied autocast the
    # dtypes legitimately differ, and the assertions compute nothing.
    for node in list(module.graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten._assert_tensor_metadata.default:
            module.graph.erase_node(node)
    module.recompile()
    return module.to(device)


def evaluate(spec: EvalSpec) -> dict:
    started = time.perf_counter()
    settings = Settings(**spec.settings)
    prepared = open_prepared(settings)
    verify_data(prepared, spec.data_sha256)
    model_path = Path(spec.model_file)
    if not model_path.exists() or file_sha256(model_path) != spec.model_sha256:
        raise AutoresearchError("the handed-over model file is missing or was modified after the hand-over")
    module = load_program(model_path, spec.device)
    loaded = time.perf_counter()
    token_bytes = torch.from_numpy(prepared.tokenizer().token_byte_lengths())
    cast = getattr(torch, spec.autocast) if spec.autocast else None

    def forward(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(spec.device, dtype=cast or torch.float32, enabled=cast is not None):
            logits = module(x)
        return cross_entropy_nats(logits, y)

    def score(split: str, n_tokens: int) -> Score:
        rows = eval_rows(prepared.shard_paths(split), settings.max_seq_len, n_tokens)
        with torch.inference_mode():
            return score_rows(forward, rows, token_bytes, settings.eval_batch_size, spec.device, fixed_batch=True)

    val = score("val", settings.eval_tokens)
    heldout = score("heldout", heldout_tokens(settings))
    return {
        "val_bpb": val.bpb,
        "heldout_bpb": heldout.bpb,
        "val_tokens": val.tokens,
        "heldout_tokens": heldout.tokens,
        "load_seconds": round(loaded - started, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "device": spec.device,
        "autocast": spec.autocast,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoresearch.evaluator")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    tune_allocator()
    try:
        result = evaluate(EvalSpec.from_json(args.spec.read_text()))
    except AutoresearchError as e:
        atomic.write_json(args.out, {"error": str(e)})
        print(f"evaluator: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a model that loads but fails to run: the proposer's error, reported
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        atomic.write_json(args.out, {"error": f"the handed-over model failed in the evaluator: {type(e).__name__}: {first}"})
        raise
    atomic.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
