"""A real HTTP server on 127.0.0.1 for the hostile answers the simulator does not stage: bodies
that trickle, bodies of a gigabyte generated as they are sent, redirects that loop or leave
http. Each test gives the function that answers; the server counts requests and body bytes.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self


class Exchange:
    """One request, and the means to answer it byte by byte."""

    def __init__(self, handler: http.server.BaseHTTPRequestHandler, server: LoopbackServer):
        self._handler = handler
        self._server = server
        self.method = handler.command
        self.path = handler.path

    def start(self, status: int, headers: dict[str, str] | None = None) -> None:
        """The status line and headers; the connection closes after the body (no keep-alive),
        so a body without Content-Length ends when the server stops writing."""
        lines = [f"HTTP/1.1 {status} X"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines += ["Connection: close", "", ""]
        self._handler.wfile.write("\r\n".join(lines).encode("latin-1"))
        self._handler.wfile.flush()

    def write(self, data: bytes) -> bool:
        """Send body bytes; False once the client has gone (or the server is stopping)."""
        if self._server.stopping.is_set():
            return False
        try:
            self._handler.wfile.write(data)
            self._handler.wfile.flush()
        except OSError:
            return False
        with self._server.lock:
            self._server.body_bytes += len(data)
        return True

    def stream(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            if not self.write(chunk):
                return

    def trickle(self, byte: bytes = b" ", every: float = 0.1, at_most: float = 30.0) -> None:
        """One byte every ``every`` seconds until the client goes (at most ``at_most`` s)."""
        end = time.monotonic() + at_most
        while time.monotonic() < end and self.write(byte):
            self._server.stopping.wait(every)


class LoopbackServer:
    """``with LoopbackServer(answer) as server:`` serves ``answer(exchange)`` per request."""

    def __init__(self, answer: Callable[[Exchange], None], *, send_buffer: int = 64 * 1024):
        self.answer = answer
        self.requests: list[str] = []
        self.body_bytes = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                # A small send buffer: bytes the client never read stay few, so the count of
                # bytes written says how far the client read.
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
                super().setup()

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._serve()

            def _serve(self) -> None:
                with outer.lock:
                    outer.requests.append(f"{self.command} {self.path}")
                self.close_connection = True
                # The client going away mid-answer is what these tests provoke.
                with contextlib.suppress(OSError):
                    outer.answer(Exchange(self, outer))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def zeros(total: int, chunk: int = 64 * 1024) -> Iterable[bytes]:
    """``total`` bytes, generated as they are sent (never all in memory)."""
    block = b"0" * chunk
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece
