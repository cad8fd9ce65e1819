"""The hand-over: how a trained model leaves the training process.

Inside a run, `evaluate_bpb` does not decide anything. It exports the model with `torch.export`
at the evaluation shape (a graph of tensor operations plus weights: no Python code travels)
into the run folder, then writes one line on a pipe that only the runner reads. The runner
notes the time on its own clock and copies and hashes the file at once; after train.py has
exited, the runner's own evaluator process loads that copy and computes the metric.

Environment of a run (set by the runner):
    AUTORESEARCH_RUN_DIR       the run folder (metrics stream, exported model)
    AUTORESEARCH_HANDOVER_FD   the write end of the hand-over pipe
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from autoresearch.errors import HandoverError
from autoresearch.rundir import MODEL_FILE

ENV_RUN_DIR = "AUTORESEARCH_RUN_DIR"
ENV_HANDOVER_FD = "AUTORESEARCH_HANDOVER_FD"
EXPORT_HELP = (
    "make forward(idx) exportable by torch.export: return logits (batch, seq, vocab) when called "
    "without targets; avoid .item(), Python branches on tensor values, and state changes in "
    "forward; call evaluate_bpb on the plain nn.Module (torch.compile wrappers are unwrapped)"
)


def run_dir() -> Path | None:
    value = os.environ.get(ENV_RUN_DIR)
    return Path(value) if value else None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile / DDP wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module) or inner is model:
            return model
        model = inner


def model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for `device` in the caller's context, if any."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def export_model(model: torch.nn.Module, batch_size: int, seq_len: int, vocab_size: int) -> torch.export.ExportedProgram:
    """Export `model(idx) -> logits` at (batch_size, seq_len), or explain what to change.

    Export does not capture an autocast context faithfully, so the graph is traced without
    autocast; the evaluator re-applies the caller's autocast dtype around it (bit-exact).
    """
    module = unwrap(model)
    device = model_device(module)
    example = torch.zeros((batch_size, seq_len), dtype=torch.long, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            program = torch.export.export(module, (example,), strict=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HandoverError(f"torch.export could not capture the model ({type(e).__name__}: {first}); {EXPORT_HELP}") from e
    finally:
        module.train(was_training)
    outputs = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
    first_out = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    meta = getattr(first_out, "meta", {}).get("val")
    shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
    if shape is None or len(shape) != 3 or shape[:2] != (batch_size, seq_len) or shape[2] < vocab_size:
        raise HandoverError(
            f"the exported model returns shape {shape}, not logits ({batch_size}, {seq_len}, >={vocab_size}); {EXPORT_HELP}"
        )
    return program


def hand_over(model: torch.nn.Module, batch_size: int, seq_len: int, vocab_size: int) -> Path | None:
    """Export the model into the run folder and tell the runner. No-op outside a run."""
    directory = run_dir()
    fd = os.environ.get(ENV_HANDOVER_FD)
    if directory is None or fd is None:
        return None
    started = time.perf_counter()
    device = model_device(unwrap(model))
    cast = autocast_dtype(device)
    program = export_model(model, batch_size, seq_len, vocab_size)
    path = directory / MODEL_FILE
    tmp = directory / (MODEL_FILE + ".tmp")
    torch.export.save(program, tmp)
    os.replace(tmp, path)
    message = {
        "event": "handover",
        "file": MODEL_FILE,
        "export_seconds": round(time.perf_counter() - started, 2),
        "device": device.type,
        "autocast": str(cast).removeprefix("torch.") if cast is not None else None,
    }
    try:
        os.write(int(fd), (json.dumps(message) + "\n").encode())
    except OSError as e:
        raise HandoverError(f"the runner's hand-over pipe is closed ({e}); was the run started by `autoresearch run`?") from None
    return path
