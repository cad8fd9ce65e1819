"""Webhook notifications (--notify URL) against real HTTP servers on 127.0.0.1.

The loop is the real one over a scripted executor (tests/scripted.py: no training); the webhooks
are http.server servers in threads that record what they are sent, answer 500, or accept the
connection and never answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from autoresearch.errors import SettingsError
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.research import Limits
from autoresearch.tracking import notify, webhook
from autoresearch.tracking.config import TrackingConfig, from_table
from tests.loopback import LoopbackServer
from tests.scripted import ScriptedExecutor, ScriptedProposer

BETTER = {"val": [2.0]}
CHANGES = [("clear gain", BETTER), ("clear loss", {"val": [3.5]}),
           *[(f"crash {i}", {"outcome": "crash"}) for i in range(2)], ("timeout", {"outcome": "timeout"})]
# what three tries cost at least when the server never answers: every try waits out its timeout
RETRIES_TOTAL_S = (len(webhook.PAUSES_S) + 1) * webhook.TIMEOUT_S + sum(webhook.PAUSES_S)


class Webhook:
    """A webhook on loopback that answers `status` (or, with hang, never answers); `received` holds the
    JSON documents it was sent, in order."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status, self.hang = status, hang
        self.received: list[dict] = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append({"content_type": self.headers["Content-Type"], **json.loads(body)})
                if hook.hang:
                    hook.release.wait(60)
                    return
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = LoopbackServer(Handler)

    def __enter__(self) -> Webhook:
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url + "/hook/secret-token"

    def events(self) -> list[str]:
        return [d["event"] for d in self.received]


@pytest.fixture
def workspace(make_workspace):
    ws = make_workspace("ws", budget=3)
    ws.state_dir.mkdir(exist_ok=True)
    return ws


def research(ws, notify_urls: list[str], changes=CHANGES) -> tuple[Loop, list[str]]:
    """Run the scripted research (not closed: the caller closes it); the loop and what it logged."""
    logged: list[str] = []
    loop = Loop.open(ws.root, tag="t", log=logged.append, executor=ScriptedExecutor(ws), notify=notify_urls)
    loop.run(ScriptedProposer(list(changes)), Limits(max_experiments=len(changes)))
    return loop, logged


def test_kept_crashes_and_ended_arrive_with_the_ledgers_rows(workspace):
    with Webhook() as hook:
        loop, logged = research(workspace, [hook.url])
        closing = loop.closing_line()
        loop.close()
    assert hook.events() == ["kept", "crashes", "ended"], logged
    rows = Ledger.open(workspace.ledger_path).rows
    kept, crashes, ended = hook.received
    state = json.loads(subprocess.run([sys.executable, "-m", "autoresearch", "status", "--json"], cwd=workspace.root,
                                      capture_output=True, text=True, check=True).stdout)
    for doc in hook.received:
        assert doc["content_type"] == "application/json" and doc["schema_version"] == notify.SCHEMA_VERSION
        assert doc["workspace"] == str(workspace.root) and doc["branch"] == "autoresearch/t"
        assert doc["best"]["val_bpb"] == 2.0 and doc["best"]["commit"] == state["best"]["commit"]
        assert doc["text"].startswith("autoresearch ws (autoresearch/t): ")
    gain = next(i for i, r in enumerate(rows) if r.description == "clear gain")
    assert kept["rows"] == [state["ledger"][gain]]  # the row as docs/json.md has it
    assert kept["rows"][0]["status"] == "keep" and kept["rows"][0]["improved"] is True
    assert [r["status"] for r in crashes["rows"]] == ["crash", "crash", "timeout"]
    assert crashes["rows"] == state["ledger"][-3:]
    assert ended["rows"] == [] and ended["closing_line"] == closing
    assert ended["why"] == f"{len(CHANGES)} experiment(s) proposed"
    assert not [line for line in logged if "warning" in line]


def test_a_crash_streak_is_broken_by_a_run_that_finished():
    def row(status: str, run_id: str = "0001"):
        from autoresearch.ledger import Row

        return Row(commit="abc1234", val_bpb=None, memory_gb=None, status=status, description="x", run_id=run_id,
                   kind="experiment")

    events, ledger = notify.Events(), []
    found = []
    for status, run_id in [("crash", "1"), ("timeout", "2"), ("discard", "3"), ("crash", "4"), ("invalid", ""),
                           ("crash", "5"), ("timeout", "6"), ("crash", "7"), ("crash", "8")]:
        ledger = [*ledger, row(status, run_id)]
        found += [(e.name, e.numbers) for e in events.of([ledger[-1]], ledger)]
    assert found == [("crashes", (4, 6, 7))]  # a proposal that never ran (row 5) does not break it


def test_a_server_answering_500_is_tried_three_times_then_one_warning(workspace):
    with Webhook(status=500) as hook:
        loop, logged = research(workspace, [hook.url])
        loop.close()
    tries = len(webhook.PAUSES_S) + 1
    assert hook.events() == ["kept"] * tries  # then off: the crashes and the end are not sent
    warnings = [line for line in logged if "warning" in line]
    assert len(warnings) == 1 and f"after {tries} tries (last: HTTP 500" in warnings[0], warnings
    assert hook.server.url in warnings[0] and "secret-token" not in warnings[0]  # the URL's path may be a secret
    described = {r.description for r in Ledger.open(workspace.ledger_path).rows}
    assert described >= {d for d, _ in CHANGES}  # the research went on to its end


def test_a_server_that_never_answers_does_not_hold_the_loop(workspace):
    with Webhook(hang=True) as hook:
        started = time.monotonic()
        loop, logged = research(workspace, [hook.url], changes=CHANGES[:2])
        loop.close(tracking_wait_s=1.0)  # the CLI waits longer at the end: a bound all the same
        took = time.monotonic() - started
        assert hook.events() == ["kept"]  # its first try is still waiting for an answer
    assert took < RETRIES_TOTAL_S * 2 / 3, took  # were the loop to wait, the first kept change alone would take all
    assert any("notifications are still being sent after 1 s" in line for line in logged), logged
    assert len(Ledger.open(workspace.ledger_path).rows) >= 2 + 2


@pytest.mark.parametrize("url", ["ftp://example.com/x", "hooks.example.com/x", "http:///x", "http://a b/"])
def test_a_bad_url_is_refused_before_anything_runs(workspace, url):
    with pytest.raises(SettingsError, match="is not an http:// or https:// URL with a host"):
        Loop.open(workspace.root, notify=[url], executor=ScriptedExecutor(workspace))
    assert not workspace.ledger_path.exists() and workspace.git.branch() == "main"


def test_the_cli_refuses_a_bad_url_in_one_line(workspace):
    done = subprocess.run([sys.executable, "-m", "autoresearch", "loop", "--notify", "ftp://example.com/x"],
                          cwd=workspace.root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: --notify 'ftp://example.com/x' is not an http:// or https:// URL")


def test_an_interrupted_loop_tells_why_it_ended(workspace):
    with Webhook() as hook:
        with pytest.raises(KeyboardInterrupt):
            with Loop.open(workspace.root, tag="t", log=lambda line: None, executor=ScriptedExecutor(workspace),
                           notify=[hook.url]):
                raise KeyboardInterrupt
    assert hook.events() == ["ended"]
    assert hook.received[0]["why"] == "interrupted (Ctrl-C)"
    assert hook.received[0]["closing_line"].startswith("0 experiment(s) decided")


def test_notify_in_the_tracking_section_is_read_and_checked(make_workspace):
    ws = make_workspace()
    before = ws.settings().sha256()
    path = ws.root / "autoresearch.toml"
    path.write_text(path.read_text() + '\n[tracking]\nnotify = ["https://hooks.example.com/a"]\n')
    from autoresearch.tracking import config

    assert ws.settings().sha256() == before
    assert config.load(ws.root) == TrackingConfig(notify=("https://hooks.example.com/a",))
    assert config.load(ws.root).with_notify(["http://127.0.0.1:9/b"]).notify == ("http://127.0.0.1:9/b",)
    with pytest.raises(SettingsError, match=r"\[tracking\] notify 'file:///etc/passwd' is not an http"):
        from_table({"notify": ["file:///etc/passwd"]})
    with pytest.raises(SettingsError, match="must be a list of webhook URLs"):
        from_table({"notify": 3})
