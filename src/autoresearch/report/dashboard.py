"""`autoresearch dashboard`: a local, read-only web page that follows the research while it runs.

The page (page.py) polls one JSON endpoint, `/api/state`, and redraws: the summary, the progress
chart, the run under way with its loss curve and time left, and the ledger. The state is read
from the folder on every request (results.tsv, the loop's state file .autoresearch/flights.json,
the current run's metrics), so the dashboard needs no connection to the loop: it can be started, stopped and
restarted at any time, on any folder, and never changes anything.

Safety, because a web server is a door into the machine:
- it listens on 127.0.0.1 only, and answers only requests addressed to a loopback host name
  (a web page elsewhere cannot reach it through DNS rebinding);
- GET only: every other method is answered 405;
- the only files it serves are a fixed list of run-folder files, by run id, checked to resolve
  inside the folder's runs/ (no path traversal, no symlink escapes);
- its page loads nothing from the network (Content-Security-Policy `default-src 'none'`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from autoresearch.errors import AutoresearchError, ReportError
from autoresearch.report import state as state_doc
from autoresearch.report.page import render_page
from autoresearch.rundir import DIFF_FILE, LOG_FILE, METRICS_FILE, PROPOSAL_FILE, RESULT_FILE
from autoresearch.workspace import RUNS_DIR

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_INTERVAL = 2.0  # seconds between the page's polls
SCHEMA = state_doc.SCHEMA_VERSION  # version of the /api/state document; fields are only ever added within a version
SERVED_FILES = {  # run-folder files the dashboard links to, and their content types
    LOG_FILE: "text/plain; charset=utf-8",
    DIFF_FILE: "text/plain; charset=utf-8",
    METRICS_FILE: "text/plain; charset=utf-8",
    RESULT_FILE: "application/json",
    PROPOSAL_FILE: "application/json",
}
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


# --- the state document -----------------------------------------------------------------------


def state(folder: Path) -> dict:
    """The /api/state document (report/state.py; its fields, a stable interface, are in docs/json.md).

    A ledger that cannot be read is not fatal here: the page shows the document's `error`."""
    try:
        return state_doc.document(folder)
    except AutoresearchError as e:
        return state_doc.error_document(folder, str(e))


# --- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    folder: Path
    interval_s: float


class DashboardServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer bound to loopback that serves one folder's dashboard."""

    daemon_threads = True  # a browser's open connection must not keep the process alive on Ctrl-C

    def __init__(self, site: Site, port: int) -> None:
        self.site = site
        try:
            super().__init__((HOST, port), Handler)
        except OSError as e:
            raise ReportError(
                f"cannot listen on {HOST}:{port} ({e.strerror}): another program uses that port; "
                "choose another with --port (or --port 0 for any free one)") from None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "autoresearch-dashboard"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._loopback_host():
            self._send_text(HTTPStatus.FORBIDDEN, "this dashboard answers only on 127.0.0.1 / localhost\n")
            return
        path = unquote(urlsplit(self.path).path)
        site = self.server.site
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, render_page(site.interval_s).encode(), "text/html; charset=utf-8")
        elif path == "/api/state":
            self._send_json(state(site.folder))
        elif path.startswith("/runs/"):
            self._send_run_file(path)
        else:
            self._send_text(HTTPStatus.NOT_FOUND, "not found: the dashboard serves /, /api/state and /runs/ID/FILE\n")

    def _not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        body = b"the dashboard is read-only: GET only\n"
        self.send_header("Allow", "GET")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD response has no body
            self.wfile.write(body)

    def __getattr__(self, name: str):
        """Every method other than GET (POST, PUT, DELETE, HEAD, or made-up ones) gets 405, not 501."""
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass  # a poll every two seconds would drown the terminal

    # --- responses ----------------------------------------------------------------------------

    def _loopback_host(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_NAMES

    def _send_run_file(self, path: str) -> None:
        parts = path.split("/")  # "", "runs", run_id, name
        runs = (self.server.site.folder / RUNS_DIR).resolve()
        if (len(parts) != 4 or not RUN_ID.match(parts[2]) or parts[3] not in SERVED_FILES):
            served = ", ".join(sorted(SERVED_FILES))
            self._send_text(HTTPStatus.NOT_FOUND, f"not found: /runs/ID/FILE serves {served}\n")
            return
        target = (runs / parts[2] / parts[3]).resolve()
        if not target.is_relative_to(runs) or not target.is_file():
            self._send_text(HTTPStatus.NOT_FOUND, "not found\n")
            return
        self._send(HTTPStatus.OK, target.read_bytes(), SERVED_FILES[parts[3]])

    def _send_json(self, document: dict) -> None:
        body = json.dumps(document, separators=(",", ":"), allow_nan=False, default=str).encode()
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if self.headers.get("If-None-Match") == tag:  # nothing changed since the last poll
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", tag)
            self.end_headers()
            return
        self._send(HTTPStatus.OK, body, "application/json", {"ETag": tag})

    def _send_text(self, status: HTTPStatus, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def start(folder: Path, port: int = DEFAULT_PORT,
          interval_s: float = DEFAULT_INTERVAL) -> tuple[DashboardServer, threading.Thread]:
    """Serve in a background thread (tests, embedding); stop with server.shutdown(); server.server_close()."""
    server = DashboardServer(Site(Path(folder).resolve(), interval_s), port)
    thread = threading.Thread(target=server.serve_forever, name="autoresearch-dashboard", daemon=True)
    thread.start()
    return server, thread


def serve(folder: Path, port: int = DEFAULT_PORT, interval_s: float = DEFAULT_INTERVAL, log=print) -> None:
    """Serve until Ctrl-C."""
    server = DashboardServer(Site(Path(folder).resolve(), interval_s), port)
    log(f"dashboard of {server.site.folder} on {server.url} (read-only; Ctrl-C to stop)")
    for line in state(server.site.folder).get("warnings", []):  # also on the page, while they last
        log(line)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
