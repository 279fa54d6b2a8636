"""A scripted fake of an OpenAI-compatible Chat Completions server on 127.0.0.1, for tests.

Usage:

    from fake_openai import FakeOpenAI, Fault, reply, call      # tests/ is on sys.path

    with FakeOpenAI(models=["local-model"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)   # .../v1
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        server.enqueue(
            Fault.status(429, retry_after=0),
            reply(call("str_replace_based_edit_tool", {"command": "view", "path": "train.py"})),
            reply("DEPTH 8 -> 9", usage={"prompt_tokens": 100, "completion_tokens": 5}),
        )
        ... the real openai SDK talks to it ...
        server.requests[1]["messages"]                   # every chat request body, in order

`POST /v1/chat/completions` answers each request with the next queued item. A `Reply` (text and
tool calls; optional usage, cached tokens and finish_reason) goes out as SSE chunks when the body
asks for `"stream": true` (a role chunk, text in 8-character pieces, each tool call's id and name
in one chunk and its JSON arguments split into 7-character pieces, a finish chunk, then a usage
chunk when `stream_options.include_usage` is set, then `data: [DONE]`) and as one JSON
`chat.completion` otherwise. A `Fault` misbehaves instead: `Fault.status(code, retry_after=None,
error_type=None)` (an HTTP error with OpenAI's error body), `Fault.drop(after_chunks=0)` (close the
connection), `Fault.malformed(after_chunks=1)` (a chunk that is not JSON), and
`Fault.stream_error(after_chunks=1)` (an `{"error": ...}` object inside the stream).

`GET /v1/models` lists `models` (all models are accepted when it is None); `check_fault`, when set,
answers that request instead (a Fault.status). An empty chat queue answers 400 so an
under-scripted test fails loudly. The key is checked when `api_key` is given (401 otherwise).

It does not check a request against the API's schema, count tokens, or validate tool arguments.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from fake_http import LocalServer, StreamingHandler

DEFAULT_USAGE = {"prompt_tokens": 100, "completion_tokens": 20}
TEXT_PIECE, ARGUMENT_PIECE = 8, 7


def call(name: str, arguments: dict | str, call_id: str | None = None) -> dict:
    """A tool call; a str is sent as the raw arguments (to test invalid JSON)."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "name": name, "arguments": raw}


@dataclass
class Reply:
    text: str
    calls: list[dict]
    usage: dict | None = None
    cached_tokens: int = 0
    finish_reason: str | None = None  # default: "tool_calls" with calls, else "stop"


def reply(*parts: str | dict, usage: dict | None = None, cached_tokens: int = 0,
          finish_reason: str | None = None) -> Reply:
    text = "".join(part for part in parts if isinstance(part, str))
    return Reply(text, [part for part in parts if isinstance(part, dict)], usage, cached_tokens, finish_reason)


@dataclass
class Fault:
    kind: str  # "status", "drop", "malformed", "stream_error"
    code: int = 500
    error_type: str | None = None
    retry_after: float | None = None
    after_chunks: int = 0

    @classmethod
    def status(cls, code: int, retry_after: float | None = None, error_type: str | None = None) -> Fault:
        return cls("status", code=code, retry_after=retry_after, error_type=error_type)

    @classmethod
    def drop(cls, after_chunks: int = 0) -> Fault:
        return cls("drop", after_chunks=after_chunks)

    @classmethod
    def malformed(cls, after_chunks: int = 1) -> Fault:
        return cls("malformed", after_chunks=after_chunks)

    @classmethod
    def stream_error(cls, after_chunks: int = 1) -> Fault:
        return cls("stream_error", after_chunks=after_chunks)


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied",
                404: "model_not_found", 429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


@dataclass
class _State:
    queue: deque = field(default_factory=deque)
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    model_lists: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0
    models: list[str] | None = None
    api_key: str | None = None
    check_fault: Fault | None = None


def _chunks(item: Reply, model: str, completion_id: str, include_usage: bool) -> list[dict]:
    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    for start in range(0, len(item.text), TEXT_PIECE):
        chunks.append(chunk({"content": item.text[start:start + TEXT_PIECE]}))
    for index, tool in enumerate(item.calls):
        chunks.append(chunk({"tool_calls": [{"index": index, "id": tool["id"], "type": "function",
                                             "function": {"name": tool["name"], "arguments": ""}}]}))
        raw = tool["arguments"]
        for start in range(0, len(raw), ARGUMENT_PIECE):
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {
                "arguments": raw[start:start + ARGUMENT_PIECE]}}]}))
    chunks.append(chunk({}, _finish(item)))
    if include_usage:
        chunks.append({"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": model, "choices": [], "usage": _usage(item)})
    return chunks


def _finish(item: Reply) -> str:
    return item.finish_reason or ("tool_calls" if item.calls else "stop")


def _usage(item: Reply) -> dict:
    usage = {**DEFAULT_USAGE, **(item.usage or {})}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    usage["prompt_tokens_details"] = {"cached_tokens": item.cached_tokens}
    return usage


class _Handler(StreamingHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _authorized(self) -> bool:
        if self.state.api_key is None or self.headers.get("authorization") == f"Bearer {self.state.api_key}":
            return True
        self._error(401, "invalid_api_key", "Incorrect API key provided")
        return False

    def do_GET(self) -> None:  # noqa: N802
        with contextlib.suppress(OSError):
            if self.path.split("?")[0] != "/v1/models":
                return self._error(404, "not_found", f"fake server serves /v1/models, not {self.path}")
            with self.state.lock:
                self.state.model_lists += 1
            if self.state.check_fault is not None:
                fault = self.state.check_fault
                return self._error(fault.code, fault.error_type or _ERROR_TYPES.get(fault.code, "error"),
                                   f"fake {fault.code}", fault.retry_after)
            if not self._authorized():
                return None
            models = self.state.models or []
            self._json({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                    "owned_by": "fake"} for name in models]})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        with contextlib.suppress(OSError):
            if self.path.split("?")[0] != "/v1/chat/completions":
                return self._error(404, "not_found", f"fake server serves /v1/chat/completions, not {self.path}")
            if not self._authorized():
                return None
            model = body.get("model", "unknown-model")
            if self.state.models is not None and model not in self.state.models:
                return self._error(404, "model_not_found", f"The model `{model}` does not exist")
            with self.state.lock:
                self.state.requests.append(body)
                self.state.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.state.counter += 1
                number = self.state.counter
                item = self.state.queue.popleft() if self.state.queue else None
            self._answer(item, body, model, f"chatcmpl-fake{number:04d}")

    def _answer(self, item: Reply | Fault | None, body: dict, model: str, completion_id: str) -> None:
        if item is None:
            return self._error(400, "invalid_request_error", "fake server: no scripted response left")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if isinstance(item, Fault):
            if item.kind == "status":
                return self._error(item.code, item.error_type or _ERROR_TYPES.get(item.code, "error"),
                                   f"fake {item.code}", item.retry_after)
            if item.kind == "drop" and item.after_chunks == 0:
                return self._close()
            chunks = _chunks(reply("this reply is cut short " * 4), model, completion_id, include_usage)
            self._start_stream()
            for payload in chunks[: item.after_chunks]:
                self._send(json.dumps(payload))
            if item.kind == "malformed":
                self._send("{this is not json")
                return self._end_stream()
            if item.kind == "stream_error":
                self._send(json.dumps({"error": {"message": "fake error mid-stream", "type": "server_error"}}))
                return self._end_stream()
            return self._close()
        if body.get("stream"):
            self._start_stream()
            for payload in _chunks(item, model, completion_id, include_usage):
                self._send(json.dumps(payload))
            self._send("[DONE]")
            return self._end_stream()
        message: dict = {"role": "assistant", "content": item.text or None}
        if item.calls:
            message["tool_calls"] = [{"id": tool["id"], "type": "function",
                                      "function": {"name": tool["name"], "arguments": tool["arguments"]}}
                                     for tool in item.calls]
        self._json({"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": _finish(item)}],
                    "usage": _usage(item)})

    # --- wire helpers -------------------------------------------------------------------------

    def _json(self, document: dict, status: int = 200, retry_after: float | None = None) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("connection", "close")
        if retry_after is not None:
            self.send_header("retry-after", f"{retry_after:g}")
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, error_type: str, message: str, retry_after: float | None = None) -> None:
        self._json({"error": {"message": message, "type": error_type, "code": error_type, "param": None}},
                   status, retry_after)

    def _send(self, data: str) -> None:
        self._write_chunk(f"data: {data}\n\n".encode())



class FakeOpenAI(LocalServer):
    """The server; use as a context manager, or call start() and stop()."""

    def __init__(self, models: list[str] | None = None, api_key: str | None = None) -> None:
        super().__init__(_State(models=models, api_key=api_key), _Handler, "fake-openai")
        self._call_ids = 0

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def model_lists(self) -> int:
        return self._state.model_lists

    def enqueue(self, *items: Reply | Fault) -> None:
        """Queue responses, answered in order; tool calls without an id get a unique one."""
        for item in items:
            if isinstance(item, Reply):
                for tool in item.calls:
                    if not tool.get("id"):
                        self._call_ids += 1
                        tool["id"] = f"call_fake_{self._call_ids:04d}"
            with self._state.lock:
                self._state.queue.append(item)
