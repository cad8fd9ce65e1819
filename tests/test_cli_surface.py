"""The command line as a user meets it: --version, --help, status (terminal, piped, --json), logs,
the errors of report/dashboard outside a workspace, the mode of written files, and the plot's
axes. The CLI runs as a real subprocess wherever what is checked is what a user sees."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from importlib import metadata
from pathlib import Path

import pytest

from autoresearch import atomic, logs, settings, status
from autoresearch.cli import build_parser
from autoresearch.errors import UnknownRunError
from autoresearch.ledger import Ledger, Row
from autoresearch.report import dashboard, plot, reading
from autoresearch.report.synthetic import Shape, make_research
from autoresearch.rundir import LOG_FILE, RESULT_FILE

DOCS = Path(__file__).resolve().parents[1] / "docs"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = set("┏┓┗┛┃━│─┡┩╇┳┻└┘┼┬┴")


def cli(*args: str, cwd: Path, umask: int = -1, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoresearch", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, umask=umask)


@pytest.fixture
def research(tmp_path: Path) -> Path:
    """A synthetic research folder (48 runs, run folders) that is a workspace (autoresearch.toml)."""
    folder = tmp_path / "research"
    make_research(folder, Shape(experiments=40, steps=20, seed=3))
    settings.save(settings.from_preset("tiny"), folder)
    return folder


# --- --version and --help -------------------------------------------------------------------------


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    done = cli("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"autoresearch {metadata.version('autoresearch')}"


def test_every_subcommand_help_has_examples_choices_and_defaults() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "\nExamples:\n" in text and f"  autoresearch {name}" in text.split("Examples:")[1], name
    loop = sub.choices["loop"].format_help()
    assert "{search,llm,cmd}" in loop and "{claude,codex,aider,gemini,opencode}" in loop
    assert "(default: 12)" in sub.choices["status"].format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["loop", "--proposer", "gpt"])


# --- status -----------------------------------------------------------------------------------------


def test_status_piped_is_plain_unpadded_text(research: Path) -> None:
    done = cli("status", "--last", "5", cwd=research)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not ANSI.search(done.stdout) and not BOX & set(done.stdout)
    assert all(line == line.rstrip() for line in lines)  # no padding to a width
    assert all(len(line) < 160 for line in lines if "\t" not in line)
    rule = [line for line in lines if line.startswith("rule ")]
    assert len(rule) == 1 and "--rule" in rule[0] and "The keep rule" not in done.stdout
    table = lines[lines.index("last 5 runs") + 1:]
    header = table[0].split("\t")
    assert header[:3] == ["run", "commit", "val_bpb"] and len(table) == 6
    rows = Ledger.open(research / "results.tsv").rows[-5:]
    for line, row in zip(table[1:], rows):
        cells = line.split("\t")
        assert len(cells) == len(header) and cells[0] == row.run_id and cells[header.index("status")] == row.status
    full = cli("status", "--rule", cwd=research).stdout
    assert "The keep rule" in full and "- Kept when gain" in full


def test_status_on_a_terminal_fits_its_width(research: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 90, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "autoresearch", "status", "--last", "6"], cwd=research,
                          stdin=slave, stdout=slave, stderr=subprocess.PIPE, env={**env, "TERM": "xterm"}, timeout=120)
    os.close(slave)
    reader.join(timeout=30)
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    text = ANSI.sub("", b"".join(chunks).decode())
    lines = text.replace("\r", "").splitlines()
    assert any(BOX & set(line) for line in lines)  # a table on a terminal
    assert max(len(line) for line in lines) <= 90
    assert "0048" in text and "best" in text


def test_status_json_is_the_dashboards_state(research: Path) -> None:
    done = cli("status", "--json", cwd=research)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc == json.loads(json.dumps(dashboard.state(research)))  # one document, two doors
    assert doc["schema_version"] == 1 and doc["error"] is None
    rows = Ledger.open(research / "results.tsv").rows
    assert [r["run_id"] for r in doc["ledger"]] == [r.run_id for r in rows] and doc["ledger"][-1]["run_id"] == "0048"
    assert doc["best"]["val_bpb"] == doc["summary"]["best"] and doc["noise"]["sigma"] == doc["summary"]["sigma"]
    assert doc["rule"]["short"] in done.stdout and "The keep rule" in doc["rule"]["text"]


def test_every_field_of_the_state_document_is_documented(research: Path) -> None:
    doc = dashboard.state(research)
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", (DOCS / "json.md").read_text(), re.M))
    fields = set(doc) | set(doc["summary"]) | set(doc["noise"]) | set(doc["best"]) | set(doc["ledger"][0])
    assert fields - documented == set()


def test_status_json_of_a_damaged_ledger_warns_and_holds_the_valid_rows(research: Path) -> None:
    path = research / "results.tsv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace("\tkeep\t", "\tkep\t", 1).replace("\tdiscard\t", "\tdiscrd\t", 1)
    path.write_text("\n".join(lines) + "\n")
    done = cli("status", "--json", cwd=research)
    assert done.returncode == 0 and "results.tsv, line 4" in done.stderr  # a warning, not a refusal
    doc = json.loads(done.stdout)
    assert any("results.tsv, line 4" in w for w in doc["warnings"]) and len(doc["ledger"]) == len(lines) - 2
    (path).write_text("commit,val_bpb\n")  # not a ledger at all: an error
    done = cli("status", "--json", cwd=research)
    assert done.returncode == 1 and done.stdout == "" and "header lacks" in done.stderr


# --- logs ---------------------------------------------------------------------------------------------


def test_logs_prints_a_runs_train_log(research: Path) -> None:
    done = cli("logs", "0003", cwd=research)
    assert done.returncode == 0 and done.stdout == (research / "runs" / "0003" / LOG_FILE).read_text()
    assert cli("logs", "3", cwd=research).stdout == done.stdout
    last = cli("logs", "last", cwd=research)
    assert last.stdout == (research / "runs" / "0048" / LOG_FILE).read_text()
    unknown = cli("logs", "0999", cwd=research)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip() == (f"error: no run '0999' in {research}: its runs are 0001 to 0048 (48 runs), "
                                      "or `last` for the newest")


def test_logs_follows_the_run_under_way_until_it_ends(research: Path) -> None:
    run_dir = research / "runs" / "0049"  # started: a folder, not yet in results.tsv
    run_dir.mkdir()
    (run_dir / LOG_FILE).write_text("step 00000 | loss 9.0\n")
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "logs", "last", "-f"], cwd=research,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "step 00000 | loss 9.0\n"
        with open(run_dir / LOG_FILE, "a") as f:
            f.write("step 00001 | loss 8.0\n")
        assert proc.stdout.readline() == "step 00001 | loss 8.0\n"
        assert proc.poll() is None  # still following: the run has no result yet
        with open(run_dir / LOG_FILE, "a") as f:
            f.write("---\nval_bpb: 0.99\n")
        (run_dir / RESULT_FILE).write_text("{}")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out == "---\nval_bpb: 0.99\n"


def test_logs_of_a_folder_without_runs(tmp_path: Path) -> None:
    settings.save(settings.from_preset("tiny"), tmp_path)
    with pytest.raises(UnknownRunError, match="has no runs yet"):
        logs.resolve(tmp_path, "last")


# --- report and dashboard outside a workspace ------------------------------------------------------


@pytest.mark.parametrize("command", ["dashboard", "report"])
def test_outside_a_workspace_is_a_one_line_error(tmp_path: Path, command: str) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    done = cli(command, "--port", "0", cwd=empty) if command == "dashboard" else cli(command, cwd=empty)
    assert done.returncode == 1 and done.stdout == ""
    err = done.stderr.strip()
    assert "\n" not in err and str(empty.resolve()) in err and "autoresearch init" in err
    assert f"autoresearch {command} FOLDER" in err


# --- file modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_keep_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    done = cli("init", "ws", "--preset", "tiny", cwd=tmp_path, umask=umask)
    assert done.returncode == 0, done.stderr
    for name in ("train.py", "program.md", "autoresearch.toml", ".gitignore"):
        assert (tmp_path / "ws" / name).stat().st_mode & 0o777 == mode, name


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic.write_text(target, "one")
    atomic.write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["file.txt"]


# --- the plot --------------------------------------------------------------------------------------------


def ledger(folder: Path, rows: list[Row]) -> reading.Research:
    folder.mkdir(parents=True, exist_ok=True)
    Ledger.open(folder / "results.tsv").append(*rows)
    return reading.load(folder)


def base(n: int, value: float) -> Row:
    return Row(f"a{n:06d}", value, 40.0, "keep", "baseline", run_id=f"{n:04d}", kind="baseline")


def experiment(n: int, value: float | None, status: str, description: str = "x") -> Row:
    return Row(f"b{n:06d}", value, 40.0 if value else None, status, description, run_id=f"{n:04d}", parent="a000001")


def drawn(fig) -> tuple[tuple[float, float], list[float], list[str], str]:
    ax = fig.axes[0]
    ys = [float(y) for coll in ax.collections if hasattr(coll, "get_offsets") for _, y in coll.get_offsets()]
    return ax.get_ylim(), ys, [t.get_text() for t in ax.texts], ax.get_title(loc="left")


def test_plot_keeps_every_point_in_view_and_has_no_strip_without_crashes(tmp_path: Path) -> None:
    rows = [base(1, 1.000), base(2, 1.001), experiment(3, 0.990, "keep", "better"),
            experiment(4, 0.900, "discard", "lucky but too much code"), experiment(5, 0.995, "discard"),
            experiment(6, 0.991, "discard")]
    research = ledger(tmp_path / "r", rows)
    (low, top), ys, texts, _ = drawn(plot.progress_figure(research))
    assert low < 0.900 and all(low < r.val_bpb < top for r in rows)
    assert 0.900 in [round(y, 6) for y in ys]  # drawn where it is, not moved to an edge
    assert "no val_bpb" not in texts and plot.scale_for(research).strip is None


def test_plot_has_the_strip_when_a_run_crashed(tmp_path: Path) -> None:
    research = ledger(tmp_path / "r", [base(1, 1.0), base(2, 1.002), experiment(3, None, "crash"),
                                       experiment(4, 0.99, "keep")])
    (low, top), _, texts, _ = drawn(plot.progress_figure(research))
    strip = plot.scale_for(research).strip
    assert "no val_bpb" in texts and strip is not None and low < strip < top


def test_plot_title_has_no_sign_on_zero(tmp_path: Path) -> None:
    research = ledger(tmp_path / "r", [base(1, 1.0), base(2, 1.0), experiment(3, 1.01, "discard")])
    _, _, _, title = drawn(plot.progress_figure(research))
    assert "(0.00%)" in title and "-0.00" not in title
    assert "-0.00" not in "".join(text for _, text in status.headline(research.summary))
