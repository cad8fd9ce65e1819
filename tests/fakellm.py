"""A chat API on loopback that speaks OpenAI's and Anthropic's HTTP, with scripted answers.

    POST /v1/chat/completions   OpenAI chat completions (non-streaming)
    POST /v1/messages           Anthropic messages (non-streaming)

Each request takes the next step of the script: a reply (text and token usage), an HTTP error
(e.g. 429 with a Retry-After header, 500), or a stall longer than the client's timeout. When the
script runs out, the last reply is repeated. Every request is recorded (path, headers, JSON body)
so a test can check exactly what the official client libraries sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.loopback import LoopbackServer


@dataclass
class Step:
    text: str = ""
    status: int = 200
    input_tokens: int = 1000
    output_tokens: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0  # seconds to wait before answering


def reply(text: str, input_tokens: int = 1000, output_tokens: int = 200) -> Step:
    return Step(text=text, input_tokens=input_tokens, output_tokens=output_tokens)


def error(status: int, retry_after: float | None = None) -> Step:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return Step(status=status, headers=headers)


def stall(seconds: float) -> Step:
    return Step(text="too late", stall=seconds)


class FakeLLM(LoopbackServer):
    def __init__(self, script: list[Step] | None = None) -> None:
        self.script: list[Step] = list(script or [])
        self.last: Step | None = None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                fake._serve(self)

        super().__init__(Handler)

    def __exit__(self, *exc) -> None:
        self.closing.set()  # ends stalls early
        super().__exit__(*exc)

    def add(self, *steps: Step) -> None:
        with self.lock:
            self.script.extend(steps)

    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]

    def _next(self) -> Step:
        with self.lock:
            if self.script:
                self.last = self.script.pop(0)
            if self.last is None:
                self.last = reply("Description: nothing scripted")
            return self.last

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        path = h.path.split("?", 1)[0]
        self.requests.append({"path": path, "headers": {k.lower(): v for k, v in h.headers.items()}, "body": body})
        step = self._next()
        if step.stall:
            self.closing.wait(step.stall)
        anthropic = path.endswith("/messages")
        if step.status != 200:
            kind = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}.get(step.status, "api_error")
            payload = ({"type": "error", "error": {"type": kind, "message": f"scripted {step.status}"}} if anthropic
                       else {"error": {"message": f"scripted {step.status}", "type": kind, "code": None}})
            return self._send(h, step.status, payload, step.headers)
        model = body.get("model", "fake-model")
        if anthropic:
            payload = {
                "id": f"msg_{len(self.requests)}", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": step.text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": step.input_tokens, "output_tokens": step.output_tokens},
            }
        elif path.endswith("/chat/completions"):
            payload = {
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": step.text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": step.input_tokens, "completion_tokens": step.output_tokens,
                          "total_tokens": step.input_tokens + step.output_tokens},
            }
        else:
            return self._send(h, 404, {"error": {"message": f"no route {path}"}}, {})
        self._send(h, 200, payload, step.headers)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass
