"""bench/gpu_check.sh, the first thing to run on a GPU machine, in its dry mode: every step on the
CPU at toy sizes (sample corpus, init with the gpu preset, prepare, `autoresearch run`, figures)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # generates a corpus, prepares it, trains and evaluates
def test_the_gpu_check_runs_end_to_end_in_its_dry_mode(tmp_path):
    env = {**os.environ, "AUTORESEARCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--dry", str(tmp_path / "work")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "--preset gpu --dataset files:" in out and "autoresearch run" in out  # through the CLI, on its own data
    for row in ("steps", "tokens/s", "MFU", "compile", "launch to hand-over", "evaluation, harness", "peak memory", "val_bpb"):
        assert f"  {row}" in out, row
    assert "1,665,333" in out  # the reference's tokens/s beside ours
    figures = json.loads(out.split("RESULT json ", 1)[1].splitlines()[0])
    assert figures["dry"] and figures["steps"] >= 2 and figures["val_bpb"] > 0 and figures["eval_s"] > 0
    assert len(list((tmp_path / "work" / "sample").glob("sample_*.jsonl"))) == 16
