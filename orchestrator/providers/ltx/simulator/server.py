"""The LTX simulator's lifecycle: a keep-alive ThreadingHTTPServer on loopback, run in a
background thread, that tracks its connections so ``stop()`` closes them and joins every thread
it started; and :class:`LtxSimulator`, the object tests and the demo hold."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

from orchestrator.providers.ltx.simulator.config import LtxSimConfig
from orchestrator.providers.ltx.simulator.faults import LtxFaultBook, LtxFaultRule
from orchestrator.providers.ltx.simulator.handler import LtxHandler
from orchestrator.providers.ltx.simulator.journal import Journal, job_to_json, revive
from orchestrator.providers.ltx.simulator.state import LtxState
from orchestrator.providers.ltx.simulator.stats import LtxSimStats

#: How long stop() waits for connection threads after closing their sockets.
_JOIN_TIMEOUT: Final = 2.0
#: serve_forever() notices shutdown() only between polls: keep stop() fast.
_POLL_INTERVAL: Final = 0.02
THREAD_PREFIX: Final = "ltx-simulator"


class LtxHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when a client opens many connections at once.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        config: LtxSimConfig,
        state: LtxState,
        faults: LtxFaultBook,
    ) -> None:
        self.config = config
        self.state = state
        self.faults = faults
        self.base_url = ""
        self.stopping = threading.Event()
        self._connections_lock = threading.Lock()
        self._connections: dict[threading.Thread, Any] = {}
        self._closing = False
        super().__init__(address, LtxHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can stall start().
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Track each connection thread (ThreadingMixIn does not track daemon threads), so that
        # stop() can close idle keep-alive connections and join their threads.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{THREAD_PREFIX}-connection",
            daemon=True,
        )
        with self._connections_lock:
            if self._closing:
                self.shutdown_request(request)
                return
            self._connections[thread] = request
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer is routine under fault injection and at shutdown.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            self._closing = True
            open_connections = list(self._connections.items())
        for _, request in open_connections:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)
        for thread, _ in open_connections:
            thread.join(_JOIN_TIMEOUT)


class LtxSimulator:
    """An LTX-compatible v2 API on loopback, run in a background thread.

    ``start()`` returns the base URL (also ``.url``); ``stop()`` closes every connection and
    joins every thread it started. Also a context manager. The account (jobs, uploads,
    counters) lives as long as the object, or, with ``config.state_file``, its jobs as long as
    that file (they are loaded here).
    """

    def __init__(self, config: LtxSimConfig | None = None) -> None:
        self.config = config if config is not None else LtxSimConfig()
        self._faults = LtxFaultBook(self.config.faults, seed=self.config.seed)
        self._journal: Journal | None = None
        self._last_port: int | None = None
        if self.config.state_file is not None:
            journal = Journal(self.config.state_file)
            self._journal = journal
            self._state = LtxState(
                self.config,
                self._faults,
                on_commit=lambda job: journal.append({"task": job_to_json(job)}),
            )
            loaded = journal.load()
            self._last_port = loaded.port
            self._state.restore(
                revive(loaded.tasks, clock_now=self.config.clock(), wall_now=time.time())
            )
        else:
            self._state = LtxState(self.config, self._faults)
        self._lock = threading.Lock()
        self._server: LtxHttpServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the simulator is not running: call start() first")
        return self._url

    def _bind(self) -> LtxHttpServer:
        config = self.config
        if config.port == 0 and self._last_port is not None:
            # Where the earlier simulator listened: the video URLs it handed out stay valid.
            with contextlib.suppress(OSError):
                return LtxHttpServer(
                    (config.host, self._last_port), config, self._state, self._faults
                )
        return LtxHttpServer((config.host, config.port), config, self._state, self._faults)

    def start(self) -> str:
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the simulator is already running")
            server = self._bind()
            if self._journal is not None:
                self._last_port = int(server.server_address[1])
                try:
                    self._journal.append({"port": self._last_port})
                except OSError:
                    server.server_close()
                    raise
            host, port = server.server_address[:2]
            # A wildcard bind is reachable on loopback; video URLs must name a connectable host.
            url_host = "127.0.0.1" if host in ("", "0.0.0.0") else str(host)
            server.base_url = f"http://{url_host}:{port}"
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=THREAD_PREFIX,
                daemon=True,
            )
            thread.start()
            self._server, self._thread, self._url = server, thread, server.base_url
            return server.base_url

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread, self._url = None, None, None
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()

    def __enter__(self) -> LtxSimulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> LtxSimStats:
        return self._state.stats()

    def add_fault(self, rule: LtxFaultRule) -> None:
        self._faults.add(rule)

    def set_billing_after(self, count: int | None) -> None:
        """After ``count`` committed jobs in total, every further submit answers 402; None
        lifts the limit."""
        self._state.set_billing_after(count)
