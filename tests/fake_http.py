"""The server half the fake API servers share: a ThreadingHTTPServer on 127.0.0.1 around one state.

`LocalServer(state, handler, name)` serves `handler` (a BaseHTTPRequestHandler subclass that reads
`self.state`) on a free port of 127.0.0.1 in a daemon thread; use it as a context manager, or call
start() and stop(). The state object must have `requests`, `headers`, `queue`, `lock` and
`check_fault`. `StreamingHandler` is the chunked server-sent-events writing both handlers use.
tests/fake_anthropic.py and tests/fake_openai.py build on them.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

Server = TypeVar("Server", bound="LocalServer")


class StreamingHandler(BaseHTTPRequestHandler):
    """Writes a `text/event-stream` response as HTTP/1.1 chunks, and can drop the connection."""

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("connection", "close")
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _close(self) -> None:
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(2)  # SHUT_RDWR: the client sees the connection drop


class LocalServer:
    def __init__(self, state: Any, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._state = state
        bound = type(f"{handler.__name__}For{name.title().replace('-', '')}", (handler,), {"state": state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=name, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[dict]:
        return self._state.requests

    @property
    def headers(self) -> list[dict]:
        return self._state.headers

    @property
    def check_fault(self) -> Any:
        return self._state.check_fault

    @check_fault.setter
    def check_fault(self, fault: Any) -> None:
        self._state.check_fault = fault

    @property
    def pending(self) -> int:
        with self._state.lock:
            return len(self._state.queue)

    def start(self: Server) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self: Server) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
