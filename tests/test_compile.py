"""torch.compile under the harness: where its cache lives, which presets compile, and that compiled
runs leave nothing behind (inductor's compile workers are the run's processes)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from autoresearch import hparams, workspace
from autoresearch import settings as S
from autoresearch.compilecache import compile_env
from autoresearch.data.prepare import open_prepared
from autoresearch.processes import run_key
from autoresearch.runner import Runner


def test_the_compile_cache_lives_in_the_data_cache_for_train_py_and_the_evaluator(make_workspace):
    ws = make_workspace()
    s = ws.settings()
    cache = Path(os.environ["AUTORESEARCH_CACHE"])
    runner = Runner(ws, s, open_prepared(s).data_sha256, extra_env={"OMP_NUM_THREADS": "1"})
    env = runner._environment()
    assert Path(env["TORCHINDUCTOR_CACHE_DIR"]) == cache / "compile" / "inductor"
    assert Path(env["TRITON_CACHE_DIR"]) == cache / "compile" / "triton"
    assert env["TORCHINDUCTOR_FX_GRAPH_CACHE"] == env["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    assert env["OMP_NUM_THREADS"] == "1"  # the caller's extra variables still apply
    assert compile_env(cache) == {k: env[k] for k in compile_env(cache)}


def test_the_cpu_preset_compiles_and_the_tiny_one_stays_eager(tmp_path):
    assert S.PRESETS["cpu"].train["COMPILE"] is True
    assert S.PRESETS["tiny"].train["COMPILE"] is False  # the test suite's runs stay cheap
    tiny = workspace.init(tmp_path / "tiny", S.from_preset("tiny"))
    assert hparams.read_block(tiny.train_py.read_text())["COMPILE"].value is False
    source = workspace.template("train.py")
    assert 'torch.compile(model) if COMPILE and DEVICE != "mps"' in source  # CPU and CUDA alike


def _cache_files(cache: Path) -> set[str]:
    return {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}


@pytest.mark.slow  # compiles and trains twice
def test_a_compiled_run_fills_the_shared_cache_and_the_next_one_reuses_it(make_workspace):
    ws = make_workspace(budget=2, startup_allowance=600.0)  # a cold compile on a loaded 2-core machine
    ws.train_py.write_text(hparams.rewrite(ws.train_py.read_text(), {"COMPILE": True}))
    commit = ws.git.commit_all("compile on the CPU", paths=["train.py"])
    s = ws.settings()
    runner = Runner(ws, s, open_prepared(s).data_sha256)
    cache = Path(os.environ["AUTORESEARCH_CACHE"]) / "compile" / "inductor"

    first = runner.run("0001", commit)
    assert first.outcome == "ok", (first.error, first.flags, first.log_tail[-800:])
    assert not [f for f in first.flags if "process" in f]  # the compile workers ended with train.py
    compiled = _cache_files(cache)
    assert any(name.startswith("fxgraph/") for name in compiled)  # inductor wrote its output there

    second = runner.run("0002", commit)
    assert second.outcome == "ok", (second.error, second.flags, second.log_tail[-800:])
    assert not [f for f in second.flags if "process" in f]
    new = {name for name in _cache_files(cache) - compiled if name.startswith(("fxgraph/", "aotautograd/"))}
    assert new == set()  # the same graph: loaded from the cache, nothing compiled again
    for run_id in ("0001", "0002"):
        assert not [p for p in psutil.process_iter(["environ"])
                    if (p.info["environ"] or {}).get("AUTORESEARCH_RUN_ID") == run_key(ws.runs_dir / run_id)]
