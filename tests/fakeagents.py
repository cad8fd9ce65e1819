"""A scripted model on loopback for the real coding-agent CLIs, speaking each one's wire protocol.

    claude    Anthropic Messages, streamed (POST /v1/messages, SSE)
    codex     OpenAI Responses, streamed (POST /v1/responses, SSE), tool `exec_command`
    gemini    Gemini API (POST /v1beta/models/M:streamGenerateContent?alt=sse, and :generateContent)
    opencode  OpenAI Chat Completions, streamed with `delta.tool_calls` (POST /v1/chat/completions)
    aider     OpenAI Chat Completions, not streamed, no tools: the reply in aider's "whole" format

The script is a list of actions (read, edit, write, shell, finish). The step served is the number of
tool results already in the conversation, so side requests (a session title, a summary, a retry)
never move the script on; a request without tools gets a short text. Every request is recorded
(path and JSON body): a test checks what the agent sent, and that it sent nothing elsewhere.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.loopback import LoopbackServer


@dataclass(frozen=True)
class Action:
    kind: str  # read | edit | write | shell | finish
    path: str = ""
    old: str = ""
    new: str = ""  # edit: the replacement; write: the content; shell: the command; finish: the text


def read(path: str) -> Action:
    return Action("read", path)


def edit(path: str, old: str, new: str) -> Action:
    return Action("edit", path, old, new)


def write(path: str, content: str) -> Action:
    return Action("write", path, new=content)


def shell(command: str) -> Action:
    return Action("shell", new=command)


def finish(text: str) -> Action:
    return Action("finish", new=text)


PROPOSAL = "Description: raise the matrix lr to 0.05\nHypothesis: faster learning within the budget\n"


def standard_script(proposal: str = PROPOSAL) -> list[Action]:
    """Read train.py, edit one line, write proposal.md, finish."""
    return [read("train.py"), edit("train.py", "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"),
            write("proposal.md", proposal), finish("Done. Description: raise the matrix lr to 0.05")]


def sse(event: str | None, data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()


@dataclass
class FakeAgentModel(LoopbackServer):
    agent: str
    workspace: Path | None = None
    script: list[Action] = field(default_factory=standard_script)
    requests: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                fake._record(self, {})
                fake._json(self, 404, {"error": {"message": f"no route GET {self.path}"}})

            def do_POST(self) -> None:
                fake._serve(self)

        super().__init__(Handler)

    # --- the script -------------------------------------------------------------------------

    def abs(self, path: str) -> str:
        return str((self.workspace or Path(".")) / path)

    def step(self, results: int) -> Action:
        return self.script[min(results, len(self.script) - 1)]

    def whole_reply(self) -> str:
        """aider: every edit and write of the script as whole files, then the final text."""
        files: dict[str, str] = {}
        for a in self.script:
            if a.kind == "edit":
                text = files.get(a.path) or (self.workspace / a.path).read_text()
                files[a.path] = text.replace(a.old, a.new, 1)
            elif a.kind == "write":
                files[a.path] = a.new
        blocks = [f"{path}\n```\n{text.rstrip()}\n```\n" for path, text in files.items()]
        final = next((a.new for a in self.script if a.kind == "finish"), "Done.")
        return "\n".join(blocks) + "\n" + final

    # --- the wire ---------------------------------------------------------------------------

    def _record(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        with self.lock:
            self.requests.append({"method": h.command, "path": h.path, "body": body,
                                  "headers": {k.lower(): v for k, v in h.headers.items()}})

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        self._record(h, body)
        path = h.path.split("?", 1)[0]
        if path.endswith("/messages"):
            return self._anthropic(h, body)
        if path.endswith("/responses"):
            return self._responses(h, body)
        if ":streamGenerateContent" in path or ":generateContent" in path:
            return self._gemini(h, body, stream=":streamGenerateContent" in path)
        if path.endswith("/chat/completions"):
            return self._chat(h, body)
        self._json(h, 404, {"error": {"message": f"no route {path}"}})

    def _json(self, h: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _stream(self, h: BaseHTTPRequestHandler, chunks: list[bytes]) -> None:
        try:
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Cache-Control", "no-cache")
            h.send_header("Connection", "close")
            h.end_headers()
            for chunk in chunks:
                h.wfile.write(chunk)
                h.wfile.flush()
            h.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass

    # Anthropic Messages (claude)
    def _anthropic(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        results = sum(1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
                      for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result")
        n = len(self.requests)
        if not body.get("tools"):
            action = finish("Tuning the learning rate")
        else:
            action = self.step(results)
        tool = None
        if action.kind == "read":
            tool = ("Read", {"file_path": self.abs(action.path)})
        elif action.kind == "edit":
            tool = ("Edit", {"file_path": self.abs(action.path), "old_string": action.old, "new_string": action.new})
        elif action.kind == "write":
            tool = ("Write", {"file_path": self.abs(action.path), "content": action.new})
        elif action.kind == "shell":
            tool = ("Bash", {"command": action.new, "description": "run a command"})
        msg = {"id": f"msg_{n}", "type": "message", "role": "assistant", "model": body.get("model", "fake"),
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 100, "output_tokens": 1}}
        if not body.get("stream"):
            content = ([{"type": "tool_use", "id": f"toolu_{n}", "name": tool[0], "input": tool[1]}] if tool
                       else [{"type": "text", "text": action.new}])
            return self._json(h, 200, {**msg, "content": content, "stop_reason": "tool_use" if tool else "end_turn",
                                       "usage": {"input_tokens": 100, "output_tokens": 20}})
        chunks = [sse("message_start", {"type": "message_start", "message": msg})]
        if tool:
            chunks += [sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                           "type": "tool_use", "id": f"toolu_{n}", "name": tool[0], "input": {}}}),
                       sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                           "type": "input_json_delta", "partial_json": json.dumps(tool[1])}})]
        else:
            chunks += [sse("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}),
                       sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": action.new}})]
        chunks += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   sse("message_delta", {"type": "message_delta", "delta": {
                       "stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 20}}),
                   sse("message_stop", {"type": "message_stop"})]
        self._stream(h, chunks)

    # OpenAI Responses (codex)
    def _responses(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        items = body.get("input", []) if isinstance(body.get("input"), list) else []
        results = sum(1 for i in items if isinstance(i, dict) and i.get("type", "").endswith("call_output"))
        n = len(self.requests)
        action = self.step(results) if body.get("tools") else finish("Tuning the learning rate")
        command = None
        if action.kind == "read":
            command = f"cat {action.path}"
        elif action.kind == "edit":  # a patch replaces whole lines
            line = next(ln for ln in (self.workspace / action.path).read_text().splitlines() if action.old in ln)
            command = (f"apply_patch <<'EOF'\n*** Begin Patch\n*** Update File: {action.path}\n@@\n-{line}\n"
                       f"+{line.replace(action.old, action.new, 1)}\n*** End Patch\nEOF\n")
        elif action.kind == "write":
            lines = "".join(f"+{ln}\n" for ln in action.new.splitlines())
            command = f"apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: {action.path}\n{lines}*** End Patch\nEOF\n"
        elif action.kind == "shell":
            command = action.new
        if command is not None:
            # yield_time_ms: wait for the command's end, a slow start of python and torch included
            args = {"cmd": command, "workdir": str(self.workspace), "yield_time_ms": 120_000}
            item = {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": "exec_command",
                    "arguments": json.dumps(args)}
        else:
            item = {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": action.new, "annotations": []}]}
        usage = {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 120}
        self._stream(h, [
            sse("response.created", {"type": "response.created", "response": {"id": f"resp_{n}"}}),
            sse("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
            sse("response.completed", {"type": "response.completed", "response": {
                "id": f"resp_{n}", "usage": usage, "output": [item]}}),
        ])

    # Gemini API (gemini)
    def _gemini(self, h: BaseHTTPRequestHandler, body: dict, stream: bool) -> None:
        results = sum(1 for c in body.get("contents", []) for p in c.get("parts", [])
                      if isinstance(p, dict) and "functionResponse" in p)
        usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120}
        if not stream:  # a side request that expects JSON (e.g. who speaks next)
            text = json.dumps({"reasoning": "the model is done", "next_speaker": "user"})
            return self._json(h, 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                                       "finishReason": "STOP", "index": 0}], "usageMetadata": usage})
        action = self.step(results) if body.get("tools") else finish("Tuning the learning rate")
        call = None
        if action.kind == "read":
            call = {"name": "read_file", "args": {"file_path": self.abs(action.path)}}
        elif action.kind == "edit":
            call = {"name": "replace", "args": {"file_path": self.abs(action.path), "old_string": action.old,
                                                "new_string": action.new, "instruction": "change one line"}}
        elif action.kind == "write":
            call = {"name": "write_file", "args": {"file_path": self.abs(action.path), "content": action.new}}
        elif action.kind == "shell":
            call = {"name": "run_shell_command", "args": {"command": action.new, "description": "run"}}
        part = {"functionCall": call} if call else {"text": action.new}
        self._stream(h, [sse(None, {"candidates": [{"content": {"role": "model", "parts": [part]},
                                                    "finishReason": "STOP", "index": 0}], "usageMetadata": usage})])

    # OpenAI Chat Completions (opencode streamed with tools; aider plain)
    def _chat(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        n = len(self.requests)
        model = body.get("model", "fake-model")
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        if self.agent == "aider":
            asked = json.dumps(body.get("messages", []))
            text = self.whole_reply() if "MATRIX_LR" in asked and "summar" not in asked.lower()[:2000] else \
                "The user asked for one change to train.py; the learning rate was raised."
            message = {"role": "assistant", "content": text}
            payload = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": model,
                       "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}
            if not body.get("stream"):
                return self._json(h, 200, payload)
        results = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        action = self.step(results) if body.get("tools") else finish("Tuning the learning rate")
        call = None
        if action.kind == "read":
            call = ("read", {"filePath": self.abs(action.path)})
        elif action.kind == "edit":
            call = ("edit", {"filePath": self.abs(action.path), "oldString": action.old, "newString": action.new})
        elif action.kind == "write":
            call = ("write", {"filePath": self.abs(action.path), "content": action.new})
        elif action.kind == "shell":
            call = ("bash", {"command": action.new, "description": "run a command"})

        def chunk(delta: dict, finish_reason: str | None = None, with_usage: bool = False) -> bytes:
            data = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if with_usage:
                data["usage"] = usage
            return sse(None, data)

        if call:
            chunks = [chunk({"role": "assistant", "content": None, "tool_calls": [{
                          "index": 0, "id": f"call_{n}", "type": "function",
                          "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}),
                      chunk({}, "tool_calls", with_usage=True)]
        else:
            chunks = [chunk({"role": "assistant", "content": action.new}), chunk({}, "stop", with_usage=True)]
        self._stream(h, chunks + [sse(None, "[DONE]")])
