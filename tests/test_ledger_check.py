"""The ledger never loses a row: the run folders are the source of truth.

Ledgers and run folders are built directly in tmp folders (a garbage line, a last line cut short,
a row missing while its run folder holds it, a row whose run folder is gone, a run recorded twice);
`status`, `report` and `autoresearch ledger check` (as the real CLI, in a subprocess) report the
damage with the same words, `--repair` restores the ledger from the run folders and sets damaged
lines aside, and the real loop (scripted measurements) restores at start and keeps what it cannot read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch import ledger, settings
from autoresearch.cli import main
from autoresearch.ledger import Ledger, Row, read, render
from autoresearch.ledger_check import inspect, merged
from autoresearch.research import Limits
from autoresearch.rundir import RESULT_FILE, RunResult
from tests.scripted import ScriptedExecutor, ScriptedProposer

STAMP = "2025-01-06T21:{:02d}:00+00:00"


def make_rows(n: int = 5) -> list[Row]:
    out = [Row("a000001", 1.0, 4.0, "keep", "baseline", run_id="0001", kind="baseline", timestamp=STAMP.format(1),
               rule="baseline", reason="measures the best commit")]
    for i in range(2, n + 1):
        out.append(Row(f"a00000{i}", 1.0 - i / 100, 4.0, "keep" if i % 2 else "discard", f"change {i}",
                       run_id=f"{i:04d}", timestamp=STAMP.format(i), parent="a000001", gain=i / 100,
                       noise=0.001, threshold=0.002, rule="gain" if i % 2 else "worse", reason=f"why {i}"))
    return out


def research_folder(tmp_path: Path, n: int = 5) -> Path:
    """A results folder as the loop leaves it: settings, results.tsv, runs/<id>/ with result.json and row.json."""
    folder = tmp_path / "research"
    folder.mkdir()
    settings.save(settings.from_preset("tiny"), folder)
    book = Ledger.open(folder / "results.tsv")
    for row in make_rows(n):
        run_dir = folder / "runs" / row.run_id
        run_dir.mkdir(parents=True)
        RunResult(row.run_id, row.commit, "ok", val_bpb=row.val_bpb, ended=row.timestamp).save(run_dir)
        ledger.save_row(run_dir, row)
    book.append(*make_rows(n))
    return folder


def lines_of(folder: Path) -> list[str]:
    return (folder / "results.tsv").read_text(encoding="utf-8").splitlines()


def write_lines(folder: Path, lines: list[str], end: str = "\n") -> None:
    (folder / "results.tsv").write_text("\n".join(lines) + end, encoding="utf-8")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real `autoresearch` command, in its own process."""
    return subprocess.run([sys.executable, "-m", "autoresearch", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ}, timeout=120)


def damage(folder: Path) -> tuple[str, str]:
    """A garbage line at line 3 and the last row cut short (no line end); returns both as they were."""
    lines = lines_of(folder)
    garbage = "this is not a row"
    cut = "\t".join(lines[-1].split("\t")[:9])
    write_lines(folder, lines[:2] + [garbage] + lines[2:-1] + [cut], end="")
    return garbage, cut


def test_damage_is_reported_the_same_way_everywhere_and_repair_loses_nothing(tmp_path, monkeypatch, capsys):
    folder = research_folder(tmp_path)
    garbage, cut = damage(folder)
    before = (folder / "results.tsv").read_bytes()
    contents = read(folder / "results.tsv")
    assert [d.line for d in contents.damaged] == [3, 7] and len(contents.rows) == 4
    expected = [d.describe(folder / "results.tsv") for d in contents.damaged]

    monkeypatch.chdir(folder)
    assert main(["status"]) == 0
    status_err = capsys.readouterr().err
    assert main(["report", str(folder)]) == 0
    report_err = capsys.readouterr().err
    check = cli("ledger", "check", str(folder), cwd=folder)
    assert check.returncode == 1, check.stdout + check.stderr
    for text in expected:  # the same words, with the line number, from each command
        assert text in status_err and text in report_err and text in check.stdout
    assert "results.tsv, line 3: 1 tab-separated cell(s)" in status_err
    assert "results.tsv, line 7: cut short" in check.stdout
    assert "run(s) 0005" in status_err and "row of run 0005" in check.stdout  # its row is in its run folder
    assert (folder / "results.tsv").read_bytes() == before  # readers change nothing

    repaired = cli("ledger", "check", "--repair", str(folder), cwd=folder)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "restored 1 row(s)" in repaired.stdout and "moved line(s) 3, 7" in repaired.stdout
    assert [r.run_id for r in read(folder / "results.tsv").rows] == ["0001", "0002", "0003", "0004", "0005"]
    assert read(folder / "results.tsv").rows == make_rows()  # rebuilt exactly
    assert [(d.line, d.text) for d in ledger.read_set_aside(folder / "results.tsv")] == [(3, garbage), (7, cut)]
    pd = pytest.importorskip("pandas")
    assert len(pd.read_csv(folder / "results.tsv", sep="\t")) == 5  # reference tools read the main file
    again = cli("ledger", "check", str(folder), cwd=folder)
    assert again.returncode == 0 and "results.tsv.damaged holds 2 line(s)" in again.stdout  # a warning now
    assert main(["status"]) == 0 and "results.tsv.damaged holds 2 line(s)" in capsys.readouterr().err


def test_a_missing_row_is_restored_in_place_and_a_row_without_its_folder_is_kept(tmp_path, capsys):
    folder = research_folder(tmp_path)
    lines = lines_of(folder)
    write_lines(folder, lines[:3] + lines[4:])  # run 0003's row is lost; its run folder holds it
    (folder / "runs" / "0004" / RESULT_FILE).unlink()
    (folder / "runs" / "0004" / ledger.ROW_FILE).unlink()
    (folder / "runs" / "0004").rmdir()  # run 0004's folder is gone; its row is the record
    check = inspect(folder / "results.tsv", folder / "runs")
    assert [r.run_id for r in check.missing] == ["0003"] and [r.run_id for _, r in check.orphans] == ["0004"]
    assert main(["ledger", "check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "problem: " in out and "run 0003" in out and "warning: " in out and "run 0004 has no run folder" in out
    assert main(["ledger", "check", "--repair", str(folder)]) == 0
    assert read(folder / "results.tsv").rows == make_rows()  # 0003 back in its place, 0004 kept
    assert not ledger.damaged_path(folder / "results.tsv").exists()  # nothing was damaged
    assert main(["ledger", "check", str(folder)]) == 0  # a row without a folder is a warning only
    assert "run 0004 has no run folder" in capsys.readouterr().out


def test_a_run_recorded_twice_keeps_the_row_its_folder_holds(tmp_path, capsys):
    folder = research_folder(tmp_path, n=3)
    lines = lines_of(folder)
    forged = lines[2].replace("change 2", "changed by hand")
    write_lines(folder, lines[:2] + [forged] + lines[2:])
    assert main(["ledger", "check", str(folder)]) == 1
    assert "lines 3, 4: 2 rows of run 0002 (line 4 is the one its run folder holds)" in capsys.readouterr().out
    assert main(["ledger", "check", "--repair", str(folder)]) == 0
    assert read(folder / "results.tsv").rows == make_rows(3)
    (kept,) = ledger.read_set_aside(folder / "results.tsv")
    assert kept.line == 3 and kept.text == forged and "second row of run 0002" in kept.problem


def test_an_edited_row_is_reported_cell_by_cell_and_put_back_from_its_run_folder(tmp_path, capsys):
    folder = research_folder(tmp_path, n=3)
    lines = lines_of(folder)
    edited = lines[2].replace("0.980000", "0.500000", 1)
    write_lines(folder, lines[:2] + [edited] + lines[3:])
    check = inspect(folder / "results.tsv", folder / "runs")
    assert [(e.line, e.row.run_id) for e in check.edited] == [(3, "0002")]
    assert main(["ledger", "check", str(folder)]) == 1
    assert "line 3: the row of run 0002 differs from its run folder's record" in capsys.readouterr().out
    assert main(["ledger", "check", "--repair", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "put back the row of run 0002 (line 3) as its run folder holds it: val_bpb '0.500000' " \
           "(row.json: '0.980000')" in out
    assert lines_of(folder) == lines
    (kept,) = ledger.read_set_aside(folder / "results.tsv")
    assert kept.text == edited and "edited" in kept.problem  # nothing is dropped


def test_repair_rebuilds_a_lost_ledger_and_a_reference_ledger_is_left_alone(tmp_path, capsys):
    folder = research_folder(tmp_path)
    (folder / "results.tsv").unlink()
    assert main(["ledger", "check", "--repair", str(folder)]) == 0
    assert read(folder / "results.tsv").rows == make_rows()
    plain = tmp_path / "plain"
    plain.mkdir()
    text = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\na1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
    (plain / "results.tsv").write_text(text)
    assert main(["ledger", "check", str(plain)]) == 0 and "ok" in capsys.readouterr().out
    assert (plain / "results.tsv").read_text() == text


def test_restored_rows_go_before_later_runs() -> None:
    rows = make_rows()
    failed = Row("a000009", None, None, "invalid", "failed proposal", rule="proposal-failed")
    got = merged([rows[0], rows[2], failed, rows[4]], [rows[3], rows[1]])
    assert [r.run_id for r in got] == ["0001", "0002", "0003", "", "0004", "0005"]


# --- the loop ----------------------------------------------------------------------------------


def test_the_loop_restores_at_start_and_keeps_what_it_cannot_read(make_workspace):
    ws = make_workspace("ws", budget=3)
    ws.state_dir.mkdir(exist_ok=True)
    logged: list[str] = []

    def loop():
        from autoresearch.loop import Loop
        return Loop.open(ws.root, tag="t", log=logged.append, executor=ScriptedExecutor(ws, 1))

    with loop() as lp:
        lp.run(ScriptedProposer([("first", {"val": [2.0]}), ("second", {"val": [3.5]})]), Limits(max_experiments=2))
    rows = Ledger.open(ws.ledger_path).rows
    for row in rows:  # every row is also in its run folder
        assert ledger.line(ledger.load_row(ws.runs_dir / row.run_id)) == ledger.line(row)
    lines = ws.ledger_path.read_text().splitlines()
    garbage = "garbage\tfrom another tool"
    cut = lines[-1][:40]
    ws.ledger_path.write_text("\n".join(lines[:2] + [garbage] + lines[2:-1] + [cut]))  # last row cut short
    logged.clear()
    with loop() as lp:
        lines_said = list(logged)
        lp.run(ScriptedProposer([("third", {"val": [3.6]})]), Limits(max_experiments=1))
    assert any(f"{ws.ledger_path}, line 3: " in line for line in lines_said)  # the damage, as status says it
    assert any(line.startswith("ledger: results.tsv: restored 1 row(s)") for line in lines_said)
    after = Ledger.open(ws.ledger_path).rows
    assert [r.run_id for r in after[:len(rows)]] == [r.run_id for r in rows]  # no row lost
    assert after[:len(rows)] == rows and after[-1].description == "third"
    ids = [r.run_id for r in after if r.run_id]
    assert len(ids) == len(set(ids))
    assert [(d.line, d.text) for d in ledger.read_set_aside(ws.ledger_path)] == [(3, garbage), (len(lines) + 1, cut)]
    assert ws.git.dirty_paths() == []  # results.tsv.damaged is ignored: the loop's cleaning never removes it


def test_a_line_written_into_the_ledger_during_a_run_is_set_aside(make_workspace):
    """The loop checks its workspace after each run and restores the ledger: what it did not write
    goes to results.tsv.damaged, not away."""
    from autoresearch.loop import Loop

    ws = make_workspace("ws", budget=3)
    ws.state_dir.mkdir(exist_ok=True)
    with Loop.open(ws.root, tag="t", log=lambda _: None, executor=ScriptedExecutor(ws, 1)) as lp:
        lp.run(ScriptedProposer([("first", {"val": [2.0]})]), Limits(max_experiments=1))
        with ws.ledger_path.open("a") as f:
            f.write("written by a run\n")
        assert "results.tsv" in lp._check_workspace()
    assert [d.text for d in ledger.read_set_aside(ws.ledger_path)] == ["written by a run"]
    assert read(ws.ledger_path).damaged == ()
    assert render(Ledger.open(ws.ledger_path).rows) == ws.ledger_path.read_text()
