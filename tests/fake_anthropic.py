"""A scripted fake of the Anthropic Messages API: a real HTTP server on 127.0.0.1 for tests.

Usage:

    from fake_anthropic import FakeAnthropic, Fault, reply, text, tool_use   # tests/ is on sys.path

    with FakeAnthropic() as server:                      # port 0: a free port
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        server.enqueue(
            Fault.status(429, retry_after=0),            # then...
            reply(tool_use("str_replace_based_edit_tool", {"command": "view", "path": "train.py"})),
            reply(text("MATRIX_LR 0.04 -> 0.06"), usage={"input_tokens": 10, "output_tokens": 5}),
        )
        ... run the code under test with the real anthropic SDK ...
        server.requests[1]["messages"]                   # every request body, in order, as JSON

`POST /v1/messages` answers each request with the next queued item. A `Reply` (content blocks
made with `text`, `tool_use`, `thinking`; optional usage and stop_reason) goes out as SSE when the
body asks for `"stream": true` (message_start; content_block_start/delta/stop with text_delta,
input_json_delta or thinking/signature_delta; message_delta with usage and stop_reason;
message_stop) and as one JSON message otherwise. A `Fault` misbehaves instead:

- `Fault.status(code, retry_after=None, error_type=None)`: an HTTP error with the API's JSON error
  body (429 rate_limit_error, 529 overloaded_error, 500 api_error, 401 authentication_error, ...).
- `Fault.drop(after_events=0)`: close the connection, at once or after that many SSE events.
- `Fault.stream_error(after_events=2, error_type="overloaded_error")`: `event: error` mid-stream.
- `Fault.slow(seconds)`: send nothing for that long, then close (to exceed a client time-out).
- `Fault.malformed(after_events=2)`: a 200 stream whose next event after that many is not JSON.

`POST /v1/messages/count_tokens` (the agents' fail-fast check) answers from the server's settings,
never from the queue: 404 `not_found_error` "model: X" when `known_models` is set and lacks the
model, 401 when `api_key` is set and the request carries another, `check_fault` when set, else a
token count. `server.counts` is how many such requests came.

An empty queue answers 400 ("no scripted response left") so a test that under-scripts fails loudly.
`server.requests` holds every request body (faulted ones included); `server.headers` their headers.

It does not check a request against the API's schema, count tokens, or validate tool inputs.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from fake_http import LocalServer, StreamingHandler

DEFAULT_USAGE = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict, tool_id: str | None = None) -> dict:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


def thinking(value: str, signature: str = "fake-signature") -> dict:
    return {"type": "thinking", "thinking": value, "signature": signature}


@dataclass
class Reply:
    content: list[dict]
    usage: dict | None = None
    stop_reason: str | None = None  # default: "tool_use" if a block is a tool_use, else "end_turn"


def reply(*blocks: dict, usage: dict | None = None, stop_reason: str | None = None) -> Reply:
    return Reply(list(blocks), usage, stop_reason)


@dataclass
class Fault:
    kind: str  # "status", "drop", "stream_error", "slow", "malformed"
    code: int = 500
    error_type: str | None = None
    retry_after: float | None = None
    after_events: int = 0
    seconds: float = 0.0

    @classmethod
    def status(cls, code: int, retry_after: float | None = None, error_type: str | None = None) -> Fault:
        return cls("status", code=code, retry_after=retry_after, error_type=error_type)

    @classmethod
    def drop(cls, after_events: int = 0) -> Fault:
        return cls("drop", after_events=after_events)

    @classmethod
    def stream_error(cls, after_events: int = 2, error_type: str = "overloaded_error") -> Fault:
        return cls("stream_error", after_events=after_events, error_type=error_type)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls("slow", seconds=seconds)

    @classmethod
    def malformed(cls, after_events: int = 2) -> Fault:
        return cls("malformed", after_events=after_events)


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 503: "api_error", 529: "overloaded_error"}


@dataclass
class _State:
    queue: deque = field(default_factory=deque)
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0
    counts: int = 0
    known_models: set[str] | None = None
    api_key: str | None = None
    check_fault: Fault | None = None


def _message_events(item: Reply, model: str, message_id: str) -> list[tuple[str, dict]]:
    usage = {**DEFAULT_USAGE, **(item.usage or {})}
    has_tool = any(block["type"] == "tool_use" for block in item.content)
    stop_reason = item.stop_reason or ("tool_use" if has_tool else "end_turn")
    start_usage = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": start_usage}})]
    for index, block in enumerate(item.content):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            body = block["text"]
            for start in range(0, max(len(body), 1), 16):
                delta = {"type": "text_delta", "text": body[start:start + 16]}
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": delta}))
        elif block["type"] == "tool_use":
            start_block = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": start_block}))
            encoded = json.dumps(block["input"])
            for start in range(0, len(encoded), 20):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": encoded[start:start + 20]}}))
        elif block["type"] == "thinking":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "thinking", "thinking": "",
                                                                     "signature": ""}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "thinking_delta", "thinking": block["thinking"]}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "signature_delta", "signature": block["signature"]}}))
        else:
            raise ValueError(f"fake server cannot stream a {block['type']!r} block")
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _message_json(item: Reply, model: str, message_id: str) -> dict:
    has_tool = any(block["type"] == "tool_use" for block in item.content)
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": item.content, "stop_sequence": None,
            "stop_reason": item.stop_reason or ("tool_use" if has_tool else "end_turn"),
            "usage": {**DEFAULT_USAGE, **(item.usage or {})}}


class _Handler(StreamingHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - the http.server naming
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        if self.path.split("?")[0] == "/v1/messages/count_tokens":
            with contextlib.suppress(OSError):
                self._count_tokens(body)
            return
        with self.state.lock:
            self.state.requests.append(body)
            self.state.headers.append({k.lower(): v for k, v in self.headers.items()})
            self.state.counter += 1
            number = self.state.counter
            item = self.state.queue.popleft() if self.state.queue else None
        with contextlib.suppress(OSError):  # the client gave up (a time-out test): nothing to do
            self._answer(item, body, f"msg_fake_{number:04d}")

    def _count_tokens(self, body: dict) -> None:
        with self.state.lock:
            self.state.counts += 1
        key = self.headers.get("x-api-key") or (self.headers.get("authorization") or "").removeprefix("Bearer ")
        fault = self.state.check_fault
        if fault is not None:
            return self._error(fault.code, fault.error_type or _ERROR_TYPES.get(fault.code, "api_error"),
                               f"fake {fault.code}", fault.retry_after)
        if self.state.api_key is not None and key != self.state.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        model = body.get("model", "")
        if self.state.known_models is not None and model not in self.state.known_models:
            return self._error(404, "not_found_error", f"model: {model}")
        payload = json.dumps({"input_tokens": 8}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _answer(self, item: Reply | Fault | None, body: dict, message_id: str) -> None:
        if self.path.split("?")[0] != "/v1/messages":
            return self._error(404, "not_found_error", f"fake server serves /v1/messages, not {self.path}")
        if item is None:
            return self._error(400, "invalid_request_error", "fake server: no scripted response left")
        model = body.get("model", "unknown-model")
        streaming = bool(body.get("stream"))
        if isinstance(item, Fault):
            if item.kind == "status":
                return self._error(item.code, item.error_type or _ERROR_TYPES.get(item.code, "api_error"),
                                   f"fake {item.code}", item.retry_after)
            if item.kind == "slow":
                time.sleep(item.seconds)
                return self._close()
            if item.kind == "drop" and item.after_events == 0:
                return self._close()
            events = _message_events(reply(text("this reply is cut short " * 8)), model, message_id)
            self._start_stream()
            for name, payload in events[: item.after_events]:
                self._send_event(name, payload)
            if item.kind == "malformed":
                self._write_chunk(b"event: content_block_delta\ndata: {this is not json\n\n")
                return self._end_stream()
            if item.kind == "stream_error":
                self._send_event("error", {"type": "error", "error": {"type": item.error_type,
                                                                       "message": "fake error mid-stream"}})
                return self._end_stream()
            return self._close()  # "drop" mid-stream: no terminating chunk
        if streaming:
            self._start_stream()
            for name, payload in _message_events(item, model, message_id):
                self._send_event(name, payload)
            return self._end_stream()
        payload = json.dumps(_message_json(item, model, message_id)).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    # --- wire helpers -------------------------------------------------------------------------

    def _error(self, status: int, error_type: str, message: str, retry_after: float | None = None) -> None:
        payload = json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("connection", "close")
        if retry_after is not None:
            self.send_header("retry-after", f"{retry_after:g}")
        self.end_headers()
        self.wfile.write(payload)

    def _send_event(self, name: str, payload: dict) -> None:
        self._write_chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())



class FakeAnthropic(LocalServer):
    """The server; use as a context manager, or call start() and stop()."""

    def __init__(self, known_models: set[str] | None = None, api_key: str | None = None) -> None:
        super().__init__(_State(known_models=known_models, api_key=api_key), _Handler, "fake-anthropic")
        self._tool_ids = 0

    @property
    def base_url(self) -> str:
        return self.origin

    @property
    def counts(self) -> int:
        return self._state.counts

    def enqueue(self, *items: Reply | Fault) -> None:
        """Queue responses, answered in order; tool_use blocks without an id get a unique one."""
        for item in items:
            if isinstance(item, Reply):
                for block in item.content:
                    if block.get("type") == "tool_use" and not block.get("id"):
                        self._tool_ids += 1
                        block["id"] = f"toolu_fake_{self._tool_ids:04d}"
            with self._state.lock:
                self._state.queue.append(item)
