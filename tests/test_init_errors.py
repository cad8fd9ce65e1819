"""`autoresearch init` refuses bad input by name, and a changed frozen setting names itself."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch import settings as S
from autoresearch.cli import main

BAD_VALUES = ("abc", "", "-1", "nan", "1.5x")


def init(capsys, folder: Path, *args: str) -> tuple[int, str, str]:
    code = main(["init", str(folder), "--preset", "tiny", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(S.Settings)])
def test_every_bad_set_value_is_one_error_line_naming_the_key(tmp_path, capsys, key):
    for value in BAD_VALUES:
        folder = tmp_path / f"ws-{BAD_VALUES.index(value)}"
        code, _, err = init(capsys, folder, "--set", f"{key}={value}")
        assert code == 1, (key, value, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], (key, value, err)
        assert not folder.exists()


def test_bad_values_from_a_real_process_are_one_line_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args, key in ((["--set", "eval_batch_size=many"], "eval_batch_size"),
                      (["--budget", "5", "--set", "time_budget=6"], "time_budget")):
        done = subprocess.run([sys.executable, "-m", "autoresearch", "init", str(tmp_path / "ws"), "--preset", "tiny",
                               *args], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert done.stderr.startswith("error: ") and key in done.stderr


def test_set_works_like_the_options(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text\n")
    assert init(capsys, tmp_path / "a", "--set", "time_budget=5", "--set", f"dataset=files:{corpus}")[0] == 0
    s = S.load(tmp_path / "a")
    assert (s.time_budget, s.dataset) == (5.0, f"files:{corpus}")
    # --set preset=... is --preset; the same value both ways is fine.
    assert main(["init", str(tmp_path / "b"), "--set", "preset=tiny", "--set", "keep_z=3"]) == 0
    assert S.load(tmp_path / "b").preset == "tiny" and S.load(tmp_path / "b").keep_z == 3.0
    assert init(capsys, tmp_path / "c", "--budget", "5", "--set", "time_budget=5.0")[0] == 0


@pytest.mark.parametrize("args, message", [
    (["--budget", "5", "--set", "time_budget=6"], "time_budget is given twice with different values"),
    (["--dataset", "pystdlib", "--set", "dataset=climbmix"], "dataset is given twice"),
    (["--set", "preset=cpu"], "preset is given twice"),
    (["--set", "keep_z=1", "--set", "keep_z=2"], "keep_z is given twice"),
    (["--set", "kep_z=1"], "unknown setting 'kep_z'; did you mean keep_z?"),
    (["--set", "colour=red"], "unknown setting 'colour'; valid keys: baseline_runs, "),
    (["--set", "baseline_runs=0"], "error: baseline_runs must be >= 1, got 0"),
    (["--set", "max_seq_len=long"], "max_seq_len must be int (a whole number), got 'long'"),
    (["--set", "val_permille=300", "--set", "heldout_permille=300"], "heldout_permille must be below 200"),
    (["--set", "novalue"], "--set takes KEY=VALUE"),
])
def test_refusals_name_the_setting_and_the_rule(tmp_path, capsys, args, message):
    code, _, err = init(capsys, tmp_path / "ws", *args)
    assert code == 1 and message in err, err


def test_a_files_dataset_is_checked_at_init_and_frozen_absolute(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = init(capsys, tmp_path / "a", "--dataset", "files:missing")
    assert code == 1 and "dataset files:missing matches no .txt, .jsonl or .parquet file" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("not a corpus file")
    assert init(capsys, tmp_path / "a", "--dataset", "files:empty")[0] == 1
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "x.csv").write_text("a,b")
    code, _, err = init(capsys, tmp_path / "a", "--dataset", "files:odd/*")
    assert code == 1 and "unsupported file" in err and err.startswith("error: dataset ")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "doc.txt").write_text("text\n")
    assert init(capsys, tmp_path / "a", "--dataset", "files:corpus")[0] == 0
    assert S.load(tmp_path / "a").dataset == f"files:{tmp_path / 'corpus'}"


def test_a_changed_frozen_setting_is_refused_by_name(tmp_path, capsys, monkeypatch):
    assert init(capsys, tmp_path / "ws", "--budget", "5")[0] == 0
    toml = tmp_path / "ws" / S.SETTINGS_FILE
    toml.write_text(toml.read_text().replace("time_budget = 5.0", "time_budget = 7.0"))
    monkeypatch.chdir(tmp_path / "ws")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert "setting time_budget was changed after init from 5.0 to 7.0" in err
    assert "git checkout -- autoresearch.toml" in err and len(err.strip().splitlines()) == 1
    toml.write_text(toml.read_text().replace("keep_z = 2.0", "keep_z = 3.0"))
    assert main(["loop", "--max-experiments", "1"]) == 1
    assert "time_budget was changed after init from 5.0 to 7.0 (and 1 other setting(s))" in capsys.readouterr().err
