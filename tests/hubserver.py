"""A minimal Hugging Face hub on loopback, speaking the HTTP that huggingface_hub uses.

    HEAD/GET /datasets/<repo>/resolve/<rev>/<path>   file metadata and bytes (Range supported)
    GET      /api/datasets/<repo>/tree/<rev>         the repository listing

Files are served from memory; `throttle` (bytes per second) slows downloads so a test can kill a
client mid-transfer. Every request is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from http.server import BaseHTTPRequestHandler

from tests.loopback import LoopbackServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(LoopbackServer):
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}  # (repo, path) -> content
        self.requests: list[dict] = []
        self.sent: dict[str, int] = {}  # path -> bytes sent so far
        self.throttle: float | None = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        super().__init__(Handler)

    def add(self, repo: str, path: str, content: bytes) -> None:
        self.files[(repo, path)] = content

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append({"method": h.command, "path": h.path, "range": h.headers.get("Range")})
        path = h.path.split("?", 1)[0]
        tree = re.match(r"^/api/datasets/([^/]+/[^/]+)/tree/([^/]+)", path)
        if tree:
            repo = tree.group(1)
            listing = [
                {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                for (r, p), c in sorted(self.files.items())
                if r == repo
            ]
            if not listing:
                return self._send(h, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, body)
            return self._send(h, 200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, body)
        m = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        content = self.files.get((m.group(1), m.group(3))) if m else None
        if content is None:
            return self._send(h, 404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
            "Accept-Ranges": "bytes",
        }
        rng = h.headers.get("Range")
        status, start = 200, 0
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        self._send(h, status, content[start:], headers, body, key=m.group(3))

    def _send(self, h, status, data, headers, body, key=None) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not body:
            return
        chunk = 16384
        try:
            for i in range(0, len(data), chunk):
                h.wfile.write(data[i : i + chunk])
                if key:
                    self.sent[key] = self.sent.get(key, 0) + len(data[i : i + chunk])
                if self.throttle:
                    time.sleep(chunk / self.throttle)
        except (BrokenPipeError, ConnectionResetError):
            pass
