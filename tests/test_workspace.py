from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch import hparams, workspace
from autoresearch import settings as S
from autoresearch.cli import main
from autoresearch.errors import WorkspaceError


def test_init_creates_a_committed_workspace(tmp_path, capsys):
    target = tmp_path / "ws"
    assert main(["init", str(target), "--preset", "tiny", "--budget", "7"]) == 0
    names = {p.name for p in target.iterdir()}
    assert {"train.py", "program.md", "prepare.py", "autoresearch.toml", ".gitignore", ".git"} <= names
    log = subprocess.run(["git", "log", "--oneline"], cwd=target, capture_output=True, text=True).stdout
    assert "autoresearch init: preset tiny" in log
    status = subprocess.run(["git", "status", "--porcelain"], cwd=target, capture_output=True, text=True).stdout
    assert status == ""
    assert S.load(target).time_budget == 7.0
    for ignored in ("results.tsv", "runs/", "notes.md"):
        assert ignored in (target / ".gitignore").read_text()
    assert "next: cd" in capsys.readouterr().out


def test_init_writes_the_presets_hyperparameters(tmp_path):
    ws = workspace.init(tmp_path / "cpu", S.from_preset("cpu"))
    block = hparams.read_block(ws.train_py.read_text())
    for name, value in S.PRESETS["cpu"].train.items():
        assert block[name].value == value
    gpu = hparams.read_block(workspace.template("train.py"))
    assert gpu["DEPTH"].value == 8 and gpu["TOTAL_BATCH_SIZE"].value == 2**19  # the reference's


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU's flags from /proc/cpuinfo")
def test_init_picks_a_preset_for_this_machine_and_says_so(tmp_path, capsys):
    # The CPU's own flags say which preset fits: native bf16 (AVX512-BF16 or AMX) or not.
    expected = "cpu-bf16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "cpu"
    assert main(["init", str(tmp_path / "auto"), "--set", "eval_tokens=65536"]) == 0
    out = capsys.readouterr().out
    assert f"picked preset '{expected}' for this machine" in out
    assert S.load(tmp_path / "auto").preset == expected
    assert S.load(tmp_path / "auto").eval_tokens == 65536
    block = hparams.read_block((tmp_path / "auto" / "train.py").read_text())
    assert block["TOTAL_BATCH_SIZE"].value == S.PRESETS[expected].train["TOTAL_BATCH_SIZE"]


def test_the_two_cpu_presets_differ_only_in_train_py(tmp_path):
    # Results of the two compare: the same data, tokenizer, evaluation, clock and costs.
    cpu, bf16 = S.from_preset("cpu").as_dict(), S.from_preset("cpu-bf16").as_dict()
    assert {k for k in cpu if cpu[k] != bf16[k]} == {"preset"}
    assert S.PRESETS["cpu"].train != S.PRESETS["cpu-bf16"].train
    ws = workspace.init(tmp_path / "bf16", S.from_preset("cpu-bf16"))
    block = hparams.read_block(ws.train_py.read_text())
    assert all(block[name].value == value for name, value in S.PRESETS["cpu-bf16"].train.items())


def test_init_refuses_a_non_empty_folder_and_bad_values(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    assert main(["init", str(tmp_path / "full"), "--preset", "tiny"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "mine"
    assert main(["init", str(tmp_path / "b"), "--preset", "tiny", "--set", "nonsense"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "c"), "--dataset", "wikipedia"]) == 1
    assert "unknown dataset" in capsys.readouterr().err


def test_commands_outside_a_workspace_say_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["prepare"]) == 1
    assert "autoresearch init" in capsys.readouterr().err
    with pytest.raises(WorkspaceError):
        workspace.find(tmp_path)


def test_fixed_files_are_checked(tmp_path):
    ws = workspace.init(tmp_path / "ws", S.from_preset("tiny"))
    assert ws.check_fixed_files() == []
    (ws.root / "prepare.py").write_text((ws.root / "prepare.py").read_text() + "\nEVAL_TOKENS = 1\n")
    (ws.root / "autoresearch.toml").write_text((ws.root / "autoresearch.toml").read_text().replace("10.0", "11.0"))
    assert ws.check_fixed_files() == ["prepare.py", "autoresearch.toml"]


def test_help_is_there_for_newcomers():
    out = subprocess.run([sys.executable, "-m", "autoresearch", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "val_bpb" in out.stdout and "autoresearch init" in out.stdout
