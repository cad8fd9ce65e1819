"""Seeing the research: progress.png, report.html, the shared summary, and the dashboard's server.

The research folders are synthetic (autoresearch.report.synthetic): a ledger with baseline
repeats, keeps, discards, confirmation runs, crashes, timeouts and an invalid proposal, and run
folders with metrics, logs, diffs and proposals, as the loop writes them.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import struct
import subprocess
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autoresearch import report, rundir, status
from autoresearch.cli import main
from autoresearch.errors import AutoresearchError, LedgerError, ReportError
from autoresearch.ledger import Ledger
from autoresearch.report import dashboard, reading
from autoresearch.report.build import build
from autoresearch.report.plot import DPI, SIZE_INCHES
from autoresearch.report.synthetic import Shape, make_research

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def research(tmp_path: Path) -> Path:
    folder = tmp_path / "research"
    make_research(folder, Shape(experiments=24, steps=80, seed=2))
    return folder


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (checking the signature and the chunk's place)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def check_png(path: Path) -> None:
    data = path.read_bytes()
    width, height = png_size(data)
    assert (width, height) == (round(SIZE_INCHES[0] * DPI), round(SIZE_INCHES[1] * DPI))
    assert 20_000 < len(data) < 2_000_000
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as image:
        image.verify()


class Links(HTMLParser):
    """Every src/href/srcset/action value, every id, and the tags, of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        self.tags.append((tag, values))
        if "id" in values:
            self.ids.add(values["id"])
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            if values.get(name) is not None:
                self.refs.append((tag, name, values[name]))


def parse(text: str) -> Links:
    links = Links()
    links.feed(text)
    return links


def assert_self_contained(text: str) -> Links:
    links = parse(text)
    assert not re.search(r"https?://", text), "the report must not name any web address"
    assert "@import" not in text and "url(" not in text
    for tag, name, value in links.refs:
        assert value.startswith("#") or value.startswith("data:image/png;base64,"), (tag, name, value[:60])
    assert not [t for t, v in links.tags if t == "script"], "the report needs no script"
    assert not [t for t, v in links.tags if t == "link"], "no external stylesheet or icon"
    internal = {value[1:] for _, name, value in links.refs if value.startswith("#")}
    assert internal <= links.ids, f"links to missing anchors: {sorted(internal - links.ids)[:5]}"
    return links


# --- the report -------------------------------------------------------------------------------


def test_report_from_a_ledger_with_every_outcome(research: Path) -> None:
    built = build(research)
    rows = Ledger.open(research / "results.tsv").rows
    assert {r.status for r in rows} >= {"keep", "discard", "crash", "timeout", "invalid"}
    assert {r.kind for r in rows} >= {"baseline", "experiment", "confirm"}
    assert built.progress == research / "progress.png" and built.report == research / "report.html"
    check_png(built.progress)

    text = built.report.read_text(encoding="utf-8")
    links = assert_self_contained(text)
    records = built.research.records
    assert len(records) == len(rows)
    for rec in records:  # every run is listed, with its own entry
        assert rec.anchor in links.ids
        assert f'href="#{rec.anchor}"' in text
    for row in rows:
        assert row.description.replace('"', "&quot;") in text
    # each experiment's diff, and its loss curve against the baseline's (runs with metrics)
    with_diff = [r for r in records if r.run_dir is not None and (r.run_dir / rundir.DIFF_FILE).is_file()]
    assert with_diff and text.count("<pre class=\"diff\">") == len(with_diff)
    with_curve = [r for r in records if r.run_dir is not None and (r.run_dir / rundir.METRICS_FILE).is_file()]
    assert text.count('<svg class="curve"') == len(with_curve)
    assert text.count("<title>baseline</title>") == len(with_curve) - 1  # all but the baseline itself
    # the kept changes with their gains
    kept_section = text.split('id="kept"')[1].split('id="runs"')[0]
    for rec in built.research.improvements():
        assert f"{rec.step_gain:+.6f}" in kept_section
    assert "end of train.log" in text and "RuntimeError" in text  # a crash shows its log tail


def test_report_summary_is_the_status_summary(research: Path, capsys) -> None:
    built = build(research)
    rows = Ledger.open(research / "results.tsv").rows
    again = status.summarize(rows)
    assert again.frontier == built.research.summary.frontier
    assert again.best == built.research.summary.best and again.kept == built.research.summary.kept
    text = built.report.read_text(encoding="utf-8")
    for label, line in status.headline(built.research.summary):
        assert f"<th>{label}</th><td>{line.replace('&', '&amp;')}</td>" in text
    s = built.research.summary
    assert s.best == min(r.best for r in built.research.records if r.best is not None)
    assert s.keep_rate == pytest.approx(s.kept / s.experiments)
    status.render(rows, None)
    out = capsys.readouterr().out
    assert "keep rate" in out and f"{s.best:.6f}" in out and "experiments/hour" in out


def test_report_writes_into_out_dir_from_the_cli(research: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "report"
    assert main(["report", str(research), "--out", str(out)]) == 0
    check_png(out / "progress.png")
    assert (out / "report.html").stat().st_size > 10_000
    assert not (research / "report.html").exists() and not (research / "progress.png").exists()


def test_report_of_a_plain_reference_ledger(tmp_path: Path) -> None:
    folder = tmp_path / "old-runs"
    make_research(folder, Shape(experiments=30, seed=1), reference=True)
    header = (folder / "results.tsv").read_text().splitlines()[0]
    assert header.split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert not (folder / "runs").exists()
    built = build(folder)
    check_png(built.progress)
    research = built.research
    assert research.reference
    first = research.records[0]
    assert first.row.kind == "baseline" and research.summary.baseline == first.row.val_bpb
    kept = [r.row.val_bpb for r in research.records if r.row.status == "keep" and r.row.val_bpb is not None]
    assert research.summary.best == min(kept)
    text = built.report.read_text(encoding="utf-8")
    links = assert_self_contained(text)
    assert "reference-format" in text
    assert {f"row-{n}" for n in range(1, len(research.records) + 1)} <= links.ids
    assert '<svg class="curve"' not in text  # no run folders: no curves, and no error either


def git(folder: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(folder)}
    return subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_reference_workspace_diffs_come_from_git(tmp_path: Path) -> None:
    """A reference workspace: diffs of the ledger's commits from git, even of reset (discarded) ones."""
    ws = tmp_path / "ref-ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "autoresearch/mar5")
    (ws / "train.py").write_text("DEPTH = 8\nLR = 0.04\n")
    git(ws, "add", "train.py")
    git(ws, "commit", "-qm", "baseline")
    base = git(ws, "rev-parse", "--short=7", "HEAD")
    (ws / "train.py").write_text("DEPTH = 9\nLR = 0.04\n")
    git(ws, "commit", "-qam", "depth 9")
    kept = git(ws, "rev-parse", "--short=7", "HEAD")
    (ws / "train.py").write_text("DEPTH = 9\nLR = 0.08\n")
    git(ws, "commit", "-qam", "double lr")
    discarded = git(ws, "rev-parse", "--short=7", "HEAD")
    git(ws, "reset", "-q", "--hard", kept)  # the reference resets a discarded commit away
    (ws / "results.tsv").write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        f"{base}\t0.997900\t44.0\tkeep\tbaseline\n"
        f"{kept}\t0.993000\t44.2\tkeep\tdepth 9\n"
        f"{discarded}\t0.999000\t44.2\tdiscard\tdouble lr\n"
        "abcdef0\t0.000000\t0.0\tcrash\ta commit git no longer has\n")
    built = build(ws)
    text = built.report.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert text.count('<pre class="diff">') == 2
    assert '<span class="add">+DEPTH = 9</span>' in text
    assert '<span class="add">+LR = 0.08</span>' in text
    assert "a commit git no longer has" in text


def test_a_folder_that_is_not_a_git_repository_has_no_diffs(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    make_research(folder, Shape(experiments=6), reference=True)
    assert reading.load_diffs(reading.load(folder)) == {}


@pytest.mark.parametrize("content, error, expected", [
    (None, ReportError, "no results.tsv in"),
    (b"", LedgerError, "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", LedgerError, "not a text file"),
    (b"commit,val_bpb,memory_gb,status,description\nabc1234,0.99,44,keep,x\n", LedgerError, "header lacks"),
    (b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\n", ReportError, "no runs yet"),
    (b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\t0.99\t44.0\tkept\tx\n", ReportError,
     "has no row that can be read"),
])
def test_missing_or_corrupt_ledger_is_a_clear_error(tmp_path: Path, capsys, content, error, expected) -> None:
    if content is not None:
        (tmp_path / "results.tsv").write_bytes(content)
    with pytest.raises(error, match=re.escape(expected)):
        build(tmp_path)
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "progress.png").exists()


@pytest.mark.parametrize("content, expected", [
    (b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\t0.99\t44.0\tkeep\tok\nabc1235\tlots\t44.0\tdiscard\tx\n",
     "line 3: a value is not a number: val_bpb 'lots'"),
    (b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\t0.99\t44.0\tkept\tx\nabc1234\t0.99\t44.0\tkeep\tok\n",
     "line 2: unknown status 'kept'"),
    (b"commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234 0.99 44.0 keep x\nabc1234\t0.99\t44.0\tkeep\tok\n",
     "line 2: 1 tab-separated cell"),
])
def test_a_damaged_line_is_a_warning_and_the_report_shows_the_rest(tmp_path: Path, capsys, content, expected) -> None:
    (tmp_path / "results.tsv").write_bytes(content)
    assert main(["report", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: ") and f"results.tsv, {expected}" in err and "Traceback" not in err
    assert (tmp_path / "report.html").exists() and (tmp_path / "progress.png").exists()
    assert (tmp_path / "results.tsv").read_bytes() == content  # the report changes nothing
    doc = dashboard.state(tmp_path)
    assert doc["error"] is None and len(doc["ledger"]) == 1 and expected in doc["warnings"][0]


# --- reading run folders ----------------------------------------------------------------------


def test_the_report_takes_the_run_folder_names_from_rundir() -> None:
    """No copy of a run-folder file name in the report's modules: each is imported from rundir."""
    names = {value for key, value in vars(rundir).items() if key.isupper() and isinstance(value, str)}
    assert {"metrics.jsonl", "train.log", "result.json", "diff.patch", "proposal.json"} <= names
    for path in sorted(Path(report.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        copies = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]
        assert not copies, f"{path.name} spells {copies} itself: import the name from autoresearch.rundir"
    assert set(dashboard.SERVED_FILES) == {rundir.LOG_FILE, rundir.DIFF_FILE, rundir.METRICS_FILE,
                                           rundir.RESULT_FILE, rundir.PROPOSAL_FILE}


def test_loss_curve_survives_a_half_written_line_and_bad_values(tmp_path: Path) -> None:
    lines = [json.dumps({"step": i, "loss": 5.0 - i / 100, "training_seconds": i * 0.5}) for i in range(500)]
    lines.insert(3, '{"step": 3, "loss": NaN, "training_seconds": 1.5}')
    lines.insert(5, '{"step": 4, "loss": true, "training_seconds": 2}')
    lines.insert(7, "garbage")
    (tmp_path / rundir.METRICS_FILE).write_text("\n".join(lines) + '\n{"step": 500, "lo')
    curve = reading.read_curve(tmp_path)
    assert curve is not None and curve.records == 500 and len(curve.x) == reading.CURVE_POINTS
    assert curve.x_label == "training seconds" and curve.last["step"] == 499
    assert curve.loss[0] == pytest.approx(5.0 - 1 / 100 * 1.0, abs=0.02) and curve.loss[-1] < curve.loss[0]
    (tmp_path / rundir.METRICS_FILE).write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    assert reading.read_curve(tmp_path).x_label == "step"
    assert reading.read_curve(tmp_path / "missing") is None and reading.read_curve(None) is None


def test_log_tail_shows_what_a_terminal_shows(tmp_path: Path) -> None:
    (tmp_path / rundir.LOG_FILE).write_text("start\n\rstep 1\rstep 2\rstep 3   \nTraceback\nValueError: x\n\n")
    assert rundir.log_tail(tmp_path) == "start\nstep 3   \nTraceback\nValueError: x"
    assert rundir.log_tail(tmp_path, lines=2) == "Traceback\nValueError: x"
    assert rundir.log_tail(tmp_path / "missing") == "" and rundir.log_tail(None) == ""


# --- the dashboard's server -------------------------------------------------------------------


@pytest.fixture
def served(research: Path):
    server, thread = dashboard.start(research, port=0, interval_s=0.5)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def request(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_dashboard_serves_the_page_and_the_state(served, research: Path) -> None:
    assert served.server_address[0] == "127.0.0.1"
    code, headers, body = request(served.url)
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    page = body.decode()
    links = parse(page)
    assert all(v.startswith(("/", "#")) or v == "data:," for _, _, v in links.refs)  # data:, = no favicon fetch
    assert not [v for t, v in links.tags if t == "script" and "src" in v]
    assert re.findall(r"fetch\(([^,)]*)", page) == ['"/api/state"']

    code, headers, body = request(served.url + "api/state")
    doc = json.loads(body)
    rows = Ledger.open(research / "results.tsv").rows
    assert code == 200 and doc["schema"] == dashboard.SCHEMA and doc["error"] is None
    assert [r["run_id"] for r in doc["ledger"]] == [r.run_id for r in rows]
    assert doc["summary"]["best"] == pytest.approx(reading.load(research).summary.best)
    assert doc["summary"]["lines"][0][0] == "baseline"
    assert doc["baseline_curve"]["run_id"] == "0001" and len(doc["baseline_curve"]["x"]) == 80
    assert doc["current"] is None
    code, _, _ = request(served.url + "api/state", headers={"If-None-Match": headers["ETag"]})
    assert code == 304
    code, headers, body = request(served.url + "runs/0001/train.log")
    assert code == 200 and body == (research / "runs" / "0001" / "train.log").read_bytes()


def test_dashboard_is_read_only_and_stays_inside_the_folder(served, research: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the dashboard")
    (research / "runs" / "evil").symlink_to(tmp_path)  # a run id whose folder leads outside
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"):
        code, headers, _ = request(served.url + "api/state", method=method)
        assert code == 405 and headers.get("Allow") == "GET", method
    for path in ("runs/../results.tsv", "runs/%2e%2e/results.tsv", "runs/0001/../../results.tsv",
                 "runs/0001/%2e%2e%2f%2e%2e%2fresults.tsv", "runs/0001/../../../secret.txt", "runs/evil/secret.txt",
                 "runs/0001/handed_over.pt2", "runs/0001/", "results.tsv", "..%2fsecret.txt", "%2e%2e/secret.txt",
                 "etc/passwd", "runs//etc/passwd"):
        code, _, body = request(served.url + path)
        assert code == 404, path
        assert b"not for the dashboard" not in body
    (research / "runs" / "0002" / "train.log").unlink()
    (research / "runs" / "0002" / "train.log").symlink_to(secret)
    code, _, body = request(served.url + "runs/0002/train.log")
    assert code == 404 and b"not for the dashboard" not in body
    (research / "runs" / "0002" / "train.log").unlink()
    (research / "runs" / "0002" / "train.log").write_text("x")
    before = tree_digest(research)
    code, _, _ = request(served.url + "api/state", headers={"Host": "attacker.example:80"})
    assert code == 403
    request(served.url + "api/state")
    request(served.url)
    assert tree_digest(research) == before


def flight(phase: str, description: str = "", runs: tuple[str, ...] = (), kind: str = "experiment") -> dict:
    """An entry of .autoresearch/flights.json as the loop writes it."""
    return {"phase": phase, "parent": "abc1234", "proposer": "search", "kind": kind, "description": description,
            "hypothesis": "", "params": {}, "candidate": "", "runs": list(runs), "tokens": 0, "cost_usd": 0.0,
            "workers": 1}


def write_flights(folder: Path, *flights: dict) -> None:
    from autoresearch.workspace import FLIGHTS_FILE, STATE_DIR

    (folder / STATE_DIR).mkdir(exist_ok=True)
    (folder / STATE_DIR / FLIGHTS_FILE).write_text(json.dumps(list(flights)))


def test_dashboard_follows_the_run_under_way(tmp_path: Path) -> None:
    from autoresearch import settings

    folder = tmp_path / "ws"
    make_research(folder, Shape(experiments=4, steps=20))
    settings.save(settings.from_preset("tiny", time_budget=120.0), folder)
    assert dashboard.state(folder)["current"] is None  # no state file: the loop is idle
    write_flights(folder, flight("running", "wider MLP", ("0099",)))
    run = folder / "runs" / "0099"
    run.mkdir()
    (run / rundir.METRICS_FILE).write_text("".join(
        json.dumps({"step": i, "loss": 4 - i / 50, "training_seconds": i * 0.9, "progress": i * 0.9 / 120}) + "\n"
        for i in range(50)))
    doc = dashboard.state(folder)
    cur = doc["current"]
    assert cur["phase"] == "running" and cur["run_id"] == "0099" and cur["description"] == "wider MLP"
    assert cur["budget_s"] == 120.0 and cur["training_seconds"] == pytest.approx(49 * 0.9)
    assert cur["time_left_s"] == pytest.approx(120 - 49 * 0.9) and cur["step"] == 49
    assert len(cur["curve"]["x"]) == 50 and time.time() - 60 < cur["last_output_at"] <= time.time()
    assert dashboard.state(folder) == doc  # nothing changed: the same document (and ETag), no redraw
    write_flights(folder, flight("proposing"))
    cur = dashboard.state(folder)["current"]
    assert cur["phase"] == "proposing" and cur["run_id"] == "" and cur["curve"] is None
    write_flights(folder, flight("proposing", kind="baseline"))
    assert dashboard.state(folder)["current"]["description"] == "baseline"
    write_flights(folder)
    assert dashboard.state(folder)["current"] is None
    # several under way (parallel workers): the one whose run started last shows, even while another is proposed
    write_flights(folder, flight("running", "deeper", ("0098",)), flight("running", "wider MLP", ("0099",)),
                  flight("queued", "combine: x"), flight("proposing"))
    cur = dashboard.state(folder)["current"]
    assert cur["phase"] == "running" and cur["run_id"] == "0099" and cur["description"] == "wider MLP"
    assert cur["step"] == 49
    # a run already in the ledger is over: its candidate, waiting for its next run, is not running now
    recorded = Ledger.open(folder / "results.tsv").rows[-1].run_id
    write_flights(folder, flight("running", "confirming", (recorded,)), flight("queued", "next"))
    assert dashboard.state(folder)["current"] is None
    write_flights(folder, flight("running", "confirming", (recorded, "0099")))
    assert dashboard.state(folder)["current"]["run_id"] == "0099"
    (folder / ".autoresearch" / "flights.json").write_text("{not json")
    assert dashboard.state(folder)["current"] is None


def test_the_live_run_is_the_newest_run_by_number(tmp_path: Path) -> None:
    make_research(tmp_path, Shape(experiments=2, steps=5))
    write_flights(tmp_path, flight("running", "older", ("9999",)), flight("running", "newer", ("10000",)))
    live = reading.live_run(reading.load(tmp_path))
    assert live is not None and live.run_id == "10000" and live.description == "newer" and live.curve is None


def test_dashboard_before_the_first_row_and_on_a_corrupt_ledger(tmp_path: Path) -> None:
    doc = dashboard.state(tmp_path)  # the loop has started; its baseline is not recorded yet
    assert doc["error"] is None and doc["ledger"] == [] and doc["summary"]["best"] is None
    (tmp_path / "results.tsv").write_text("commit,val_bpb\n")
    doc = dashboard.state(tmp_path)
    assert "header lacks" in doc["error"] and doc["ledger"] == []
    json.dumps(doc, allow_nan=False)


def test_dashboard_port_in_use_is_a_clear_error(served, research: Path) -> None:
    with pytest.raises(ReportError, match="--port"):
        dashboard.start(research, port=served.server_address[1])


def test_non_finite_numbers_in_the_ledger_read_as_missing(tmp_path: Path) -> None:
    (tmp_path / "results.tsv").write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "abc1234\t1.000000\t44.0\tkeep\tbaseline\n"
        "abc1235\tnan\t44.0\tdiscard\tdiverged\n"
        "abc1236\tinf\tinf\tdiscard\tdiverged too\n"
        "abc1237\t0.990000\t44.0\tkeep\tbetter\n")
    research = build(tmp_path).research
    assert [r.row.val_bpb for r in research.records] == [1.0, None, None, 0.99]
    assert research.summary.best == 0.99
    json.dumps(dashboard.state(tmp_path), allow_nan=False)
