"""results.tsv: one reader, one notion of a valid row, for the loop, `status`, the proposers and the report.

A damaged line is never skipped in silence: it is a `Damaged` line with its number and what is
wrong, left in the file, and every command warns about it. A file that is not a ledger at all is a
LedgerError that names the file and says how to fix it. (tests/test_ledger_check.py: no row lost.)
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from autoresearch import ledger, settings
from autoresearch.cli import main
from autoresearch.errors import AutoresearchError, LedgerError
from autoresearch.ledger import COLUMNS, KINDS, REFERENCE_COLUMNS, Ledger, Row, parse, read, render

HEADER = "\t".join(COLUMNS)
REFERENCE_HEADER = "\t".join(REFERENCE_COLUMNS)


def rows() -> list[Row]:
    """One row of each kind and status, with every column that can be empty both empty and set."""
    return [
        Row("abc1234def", 1.0, 44.0, "keep", "baseline", run_id="0001", kind="baseline",
            timestamp="2025-01-06T21:05:00+00:00", proposer="baseline", training_seconds=300.0, wall_seconds=325.5,
            num_steps=953, total_tokens_m=499.6, mfu_percent=39.8, complexity=1234, fingerprint="f" * 16),
        Row("bcd2345", 0.99, 44.2, "keep", "deeper (DEPTH = 9)", run_id="0002", timestamp="2025-01-06T21:11:00+00:00",
            parent="abc1234", proposer="llm", gain=0.01, noise=0.0008, complexity_delta=12, memory_delta=0.2,
            threshold=0.0016, rule="gain", reason="gain 0.0100 >= 2 x se", cost_usd=0.0123, tokens=4567, workers=2),
        Row("bcd2345", 0.991, 44.2, "keep", "deeper (DEPTH = 9) (confirmation run)", run_id="0003", kind="confirm"),
        Row("cde3456", None, None, "crash", "wider\twith a tab\nand a newline", run_id="0004",
            rule="train.py exited with code 1", flags="printed val_bpb differs"),
        Row("def4567", None, 30.1, "timeout", "slow", run_id="0005", rule="killed at the hard limit"),
        Row("bcd2345", None, None, "invalid", "changed prepare.py", parent="bcd2345", rule="changed files"),
        Row("efa5678", 1.2, 44.0, "discard", "worse", run_id="0006", memory_delta=-0.0001),
        Row("abc1234", 1.01, 44.0, "keep", "measured again", run_id="0007", kind="rebaseline", rule="rebaseline"),
        Row("fab6789", 1.4, 44.0, "discard", "faster (disturbed)", run_id="0008", kind="disturbed", rule="disturbed",
            interference=0.45, slowdown=0.3),
        Row("bcd2345", 0.992, 44.2, "keep", "control", run_id="0009", kind="control", rule="control",
            interference=0.0, slowdown=-0.01),
        Row("abc1234", 1.003, 44.0, "keep", "audit of abc1234: the baseline", run_id="0010", kind="audit",
            rule="audit", reason="re-measures abc1234 (`autoresearch audit`): does its gain reproduce?"),
    ]


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "results.tsv"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_a_written_ledger_reads_back_as_written(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "results.tsv")
    ledger.append(*rows())
    contents = read(ledger.path)
    assert contents.columns == COLUMNS and not contents.reference
    back = contents.rows
    assert back == Ledger.open(ledger.path).rows
    want = rows()
    assert [r.commit for r in back] == [r.commit[:7] for r in want]
    assert back[0] == replace(want[0], total_tokens_m=499.6)  # every column comes back
    assert back[1].cost_usd == 0.0123 and back[1].tokens == 4567 and back[1].workers == 2
    assert back[3].description == "wider with a tab and a newline" and back[3].val_bpb is None
    assert back[4].memory_gb == 30.1 and back[5].memory_gb == 0.0  # no memory is written as 0.0
    assert back[6].memory_delta == 0.0
    assert [r.kind for r in back] == [r.kind for r in want] and [r.status for r in back] == [r.status for r in want]


def test_pandas_reads_what_render_writes(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    path = write(tmp_path, render(rows()))
    df = pd.read_csv(path, sep="\t")
    assert tuple(df.columns) == COLUMNS and len(df) == len(rows())
    assert tuple(df.columns[:5]) == REFERENCE_COLUMNS
    assert list(df["status"]) == [r.status for r in rows()]
    assert df["val_bpb"].dtype.kind == "f" and df["val_bpb"].iloc[0] == 1.0 and df["val_bpb"].iloc[3] == 0.0
    assert all(len(str(c)) == 7 for c in df["commit"])


def test_a_plain_reference_ledger_reads(tmp_path: Path) -> None:
    path = write(tmp_path, f"{REFERENCE_HEADER}\n"
                           "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
                           "b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04\n"
                           "c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation\n"
                           "d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)\n")
    contents = read(path)
    assert contents.reference and contents.columns == REFERENCE_COLUMNS
    assert [r.val_bpb for r in contents.rows] == [0.9979, 0.9932, 1.005, None]  # 0.000000: a crash, no value
    assert [r.memory_gb for r in contents.rows] == [44.0, 44.2, 44.0, 0.0]
    assert {r.kind for r in contents.rows} == {"experiment"} and contents.rows[3].description == "double model width (OOM)"
    assert Ledger.open(path).rows == contents.rows  # the loop reads it the same way


def test_what_is_not_damage(tmp_path: Path) -> None:
    """Blank lines, CRLF line ends, a byte-order mark, columns in another order, columns this version
    does not know, trailing empty cells an editor trimmed away, nan and inf (read as no value)."""
    text = ("\ufeffstatus\tcommit\tdescription\tval_bpb\tmemory_gb\tfuture_column\tnum_steps\tgain\r\n"
            "\r\n"
            "keep\tabc1234\tbaseline\t1.0\t44.0\twhatever\t953\t\r\n"
            "discard\tabc1235\tdiverged\tnan\tinf\t\tnan\t-inf\r\n"
            "   \n"
            "crash\tabc1236\tshort\t\t\n"
            "keep\tabc1237\tbetter\t0.99\t44.0\n")
    got = parse(text, "x.tsv").rows
    assert [(r.status, r.commit, r.val_bpb, r.memory_gb, r.num_steps, r.gain) for r in got] == [
        ("keep", "abc1234", 1.0, 44.0, 953, None), ("discard", "abc1235", None, None, None, None),
        ("crash", "abc1236", None, None, None, None), ("keep", "abc1237", 0.99, 44.0, None, None)]


GOOD = "abc1234\t0.99\t44.0\tkeep\tok"


@pytest.mark.parametrize("text, expected", [
    ("", "is empty"),
    ("\n\n  \n", "is empty"),
    ("commit,val_bpb,memory_gb,status,description\nabc1234,0.99,44,keep,x\n",
     "is not a results ledger: its header lacks commit, val_bpb, memory_gb, status, description (line 1)"),
    ("commit\tval_bpb\tstatus\tdescription\n", "its header lacks memory_gb (line 1)"),
    (f"commit\tval_bpb\tmemory_gb\tstatus\tdescription\tval_bpb\n{GOOD}\t1\n", "line 1: the header names val_bpb more than once"),
])
def test_a_file_that_is_not_a_ledger_is_an_error(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LedgerError, match=re.escape(expected)) as caught:
        read(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    with pytest.raises(LedgerError, match=re.escape(expected)):  # the loop's reader is the same one
        Ledger.open(path)


FIRST_ROW = render(rows()[:1]).splitlines()[1]
CUT = "\t".join(FIRST_ROW.split("\t")[:8])  # a last line cut short by a crash mid-write: no line end


@pytest.mark.parametrize("text, expected", [
    (f"{REFERENCE_HEADER}\n{GOOD}\nabc1235 0.99 44.0 keep x\n", "line 3: 1 tab-separated cell(s), expected at least 5"),
    (f"{REFERENCE_HEADER}\n{GOOD}\nabc1235\t0.99\t44.0\tkeep\n", "line 3: 4 tab-separated cell(s)"),
    (f"{REFERENCE_HEADER}\n\n{GOOD}\n\nabc1235\tlots\t44.0\tdiscard\tx\n", "line 5: a value is not a number: val_bpb 'lots'"),
    (f"{REFERENCE_HEADER}\nabc1235\t0.99\t44 GB\tdiscard\tx\n{GOOD}\n", "line 2: a value is not a number: memory_gb '44 GB'"),
    (f"{REFERENCE_HEADER}\nabc1234\t0.99\t44.0\tkept\tx\n{GOOD}\n", "line 2: unknown status 'kept' (expected one of keep,"),
    (f"{REFERENCE_HEADER}\nabc1234\t0.99\t44.0\t\tx\n{GOOD}\n", "line 2: unknown status ''"),
    (f"{REFERENCE_HEADER}\tkind\n{GOOD}\tbaseline\n{GOOD}\trepeat\n", "line 3: unknown kind 'repeat'"),
    (f"{REFERENCE_HEADER}\tnum_steps\n{GOOD}\t9.5k\n{GOOD}\t1\n", "line 2: a value is not a number: num_steps '9.5k'"),
    (f"{REFERENCE_HEADER}\ttimestamp\n{GOOD}\tyesterday\n", "line 2: timestamp 'yesterday' is not an ISO 8601 time"),
    (f"{REFERENCE_HEADER}\tkind\n{GOOD}\tbaseline\nabc1235\t0.98\t44", "line 3: 3 tab-separated cell(s)"),
    (f"{HEADER}\n{FIRST_ROW}\n{CUT}", "line 3: cut short: no line end and 8 of the header's"),
])
def test_each_kind_of_damage_names_its_line_and_keeps_the_others(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    contents = read(path)
    (damaged,) = contents.damaged
    assert damaged.describe(path).startswith(f"{path}, {expected}")
    good = [line for line in text.splitlines()[1:] if line.strip()]
    assert damaged.text in good and len(contents.rows) == len(good) - 1  # every other line is read
    (warning,) = ledger.warnings(contents)
    assert warning.startswith(f"warning: {path}, {expected}") and "\n" not in warning
    assert Ledger.open(path).damaged == contents.damaged  # the loop's reader is the same one


def test_a_line_that_is_not_utf8_is_damaged_and_kept_byte_for_byte(tmp_path: Path) -> None:
    bad = b"abc1235\t0.99\t44.0\tkeep\tcaf\xe9\n"
    path = write(tmp_path, f"{REFERENCE_HEADER}\n{GOOD}\n".encode() + bad)
    contents = read(path)
    assert [d.line for d in contents.damaged] == [3] and "not UTF-8" in contents.damaged[0].problem
    assert len(contents.rows) == 1
    Ledger.open(path).write(contents.rows)
    assert ledger.damaged_path(path).read_bytes().endswith(b"\t" + bad)  # set aside as it was
    with pytest.raises(LedgerError, match=re.escape("is not a text file (not UTF-8, from line 1)")):
        read(write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary"))


def test_a_missing_ledger_is_empty_for_the_loop_and_an_error_for_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "results.tsv"
    stale = tmp_path / ".results.tsv.1234.tmp"
    stale.write_text("half written")
    assert Ledger.open(path).rows == [] and not stale.exists()  # a write cut short by a kill is dropped
    with pytest.raises(LedgerError, match="no results.tsv in"):
        read(path)
    path.mkdir()
    with pytest.raises(LedgerError, match="cannot read"):
        read(path)


def test_append_refuses_what_read_would_refuse(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "results.tsv")
    for bad in (Row("abc1234", 1.0, 1.0, "kept", "x"), Row("abc1234", 1.0, 1.0, "keep", "x", kind="repeat")):
        with pytest.raises(ValueError):
            ledger.append(bad)
    assert not ledger.path.exists()
    assert set(KINDS) == {r.kind for r in rows()}


def test_status_names_the_damaged_line_and_shows_the_others(tmp_path: Path, monkeypatch, capsys) -> None:
    settings.save(settings.from_preset("tiny"), tmp_path)
    Ledger.open(tmp_path / "results.tsv").append(*rows())
    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 0
    assert capsys.readouterr().err == ""
    lines = (tmp_path / "results.tsv").read_text().splitlines()
    lines[3] = lines[3].replace("\tkeep\t", "\tkep\t", 1)
    (tmp_path / "results.tsv").write_text("\n".join(lines) + "\n")
    assert main(["status"]) == 0  # a warning, not a refusal
    out, err = capsys.readouterr()
    assert err.startswith("warning: ") and "results.tsv, line 4: unknown status 'kep'" in err and "Traceback" not in err
    assert "baseline" in out and "0006" in out  # the valid rows are shown
    assert (tmp_path / "results.tsv").read_text().splitlines()[3] == lines[3]  # a reader changes nothing
    assert issubclass(LedgerError, AutoresearchError)


def test_a_writer_sets_aside_what_it_does_not_keep(tmp_path: Path) -> None:
    """Every line of the file on disk that the rows written do not hold goes to results.tsv.damaged,
    with its line number: a damaged line, and a row written by someone else while the ledger was open."""
    path = tmp_path / "results.tsv"
    book = Ledger.open(path)
    book.append(*rows()[:3])
    other = render(rows()[6:7]).splitlines()[1]
    with path.open("a") as f:
        f.write("garbage\n")
        f.write(other + "\n")  # a valid row this writer did not write
    assert not book.in_sync()
    stray = book.append(rows()[4])
    assert [(d.line, d.text) for d in stray] == [(5, "garbage"), (6, other)]
    assert [r.run_id for r in read(path).rows] == ["0001", "0002", "0003", "0005"] and book.in_sync()
    kept = ledger.read_set_aside(path)
    assert [(d.line, d.text) for d in kept] == [(d.line, d.text) for d in stray]
    assert "did not know of" in kept[1].problem
    ledger.set_aside(path, stray)  # a writer killed before its rename sets them aside again: not twice
    assert len(ledger.read_set_aside(path)) == 2
    assert read(path).set_aside == kept


def test_a_row_rebuilds_exactly_from_its_cells(tmp_path: Path) -> None:
    for row in rows():
        assert ledger.line(ledger.from_cells(ledger.cells(row))) == ledger.line(row)
        ledger.save_row(tmp_path, row)
        assert ledger.load_row(tmp_path) == ledger.from_cells(ledger.cells(row))
    (tmp_path / ledger.ROW_FILE).write_text('{"commit": "abc"}')
    assert ledger.load_row(tmp_path) is None
