from __future__ import annotations

import subprocess
import sys

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


def test_init_picks_a_preset_for_this_machine_and_says_so(tmp_path, capsys):
    assert main(["init", str(tmp_path / "auto"), "--set", "eval_tokens=65536"]) == 0
    out = capsys.readouterr().out
    assert "picked preset 'cpu' for this machine" in out
    assert S.load(tmp_path / "auto").eval_tokens == 65536


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
