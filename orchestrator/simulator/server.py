"""The HTTP side: a keep-alive ThreadingHTTPServer speaking Kling's legacy /v1 wire format and
its API 2.0 (see :mod:`.api2`) beside it, on one account.

Routes::

    POST /v1/<family>                 create        (auth, faults, billing, rate, validation,
                                                     external-id uniqueness, slots)
    GET  /v1/<family>/<id>            query         (<id>: task id or external_task_id)
    GET  /v1/<family>?pageNum=&pageSize=   list     (newest first)
    POST /<v2 path>/<v2 name>         API 2.0 create (text-to-video/kling-2.6, ...)
    GET  /tasks?task_ids=|external_task_ids=   API 2.0 batch query (fault op "query")
    POST /tasks                       API 2.0 time-window list (fault op "list")
    GET  /account/costs?start_time=&end_time=  resource packs (fault op "account")
    GET  /assets/<task_id>/<i>[-wm].<mp4|png>  asset download, -wm the watermarked copy (no
                                      auth, like a CDN URL; signed and expiring with
                                      SimConfig.asset_url_ttl; op "asset" faults)
    GET  /_sim/stats                  SimStats as JSON (for out-of-process users)

Handlers do no work per task beyond a few dict lookups under one lock; the only sleeps are
injected delays, which end early when the simulator stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.providers.kling.catalogue import V2
from orchestrator.simulator import account, api2
from orchestrator.simulator.assets import HOTLINK_PAGE, HOTLINK_PAGE_TYPE, AssetSigner
from orchestrator.simulator.auth import check_authorization
from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.families import FAMILIES, CreateSpec, Family, Target
from orchestrator.simulator.faults import (
    ASSET_BODY_EFFECTS,
    PRE_COMMIT_EFFECTS,
    FaultBook,
    FaultRule,
)
from orchestrator.simulator.journal import Journal, task_from_json, task_to_json
from orchestrator.simulator.media import BUILDERS, MEDIA_TYPES
from orchestrator.simulator.state import WATERMARK_MARK, SimState, SimStats, TaskRecord
from orchestrator.simulator.task_wire import legacy_task, v2_created, v2_task
from orchestrator.simulator.wire import ApiError, failure, invalid, success

#: Large enough for a 10 MB image sent as base64 plus the rest of the body.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: How long stop() waits for connection threads after closing their sockets.
_JOIN_TIMEOUT = 2.0
#: serve_forever() notices shutdown() only between polls: keep stop() fast.
_POLL_INTERVAL = 0.02


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 would drop SYNs when a benchmark opens ~200
    # connections at once, turning into 1 s client-side connect retries.
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], config: SimConfig, state: SimState, faults: FaultBook
    ) -> None:
        self.config = config
        self.state = state
        self.faults = faults
        self.signer = AssetSigner(config.secret_key, config.asset_url_ttl, config.clock)
        self.target = Target(extra_models=frozenset(config.extra_models))
        #: When the account's resource pack was bought (Unix ms): a while before the start.
        self.pack_purchased_ms = (
            int(time.time() * 1000) - account.PURCHASED_DAYS_AGO * account.DAY_MS
        )
        self.base_url = ""
        self.stopping = threading.Event()
        self._connections_lock = threading.Lock()
        self._connections: dict[threading.Thread, Any] = {}
        self._closing = False
        super().__init__(address, _Handler)

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
            name="kling-simulator-connection",
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


@dataclass(frozen=True)
class _Route:
    """What an API request is, once its method and path are known."""

    #: What SimStats counts it as: create, query, list, batch_query, window_list or account.
    kind: str
    #: The op fault rules are drawn for (see faults.OPS).
    fault_op: str
    family: Family | None = None
    #: A legacy query's id, or the model an API 2.0 create path names.
    ident: str | None = None


#: API 2.0 routes at the host root that are not creates: path -> {method: (kind, fault op)}.
_ROOT_ROUTES: dict[str, dict[str, tuple[str, str]]] = {
    "/tasks": {"GET": ("batch_query", "query"), "POST": ("window_list", "list")},
    "/account/costs": {"GET": ("account", "account")},
}


def _legacy_route(method: str, path: str) -> _Route | None:
    """``/v1/<family>[/<id>]``: a create or list of the family, or a query of the (unquoted)
    id."""
    rest = path[len("/v1/") :]
    for family_path, family in FAMILIES.items():
        if rest == family_path:
            ident = None
        elif rest.startswith(family_path + "/"):
            raw = rest[len(family_path) + 1 :]
            if not raw or "/" in raw:
                return None
            ident = unquote(raw)
        else:
            continue
        if method == "POST" and ident is None:
            return _Route("create", "create", family)
        if method == "GET" and ident is None:
            return _Route("list", "list", family)
        if method == "GET":
            return _Route("query", "query", family, ident)
        return None
    return None


def _route(method: str, path: str) -> _Route | None:
    if path.startswith("/v1/"):
        return _legacy_route(method, path)
    known = _ROOT_ROUTES.get(path, {}).get(method)
    if known is not None:
        return _Route(*known)
    base, _, model = path[1:].partition("/")
    family = api2.V2_FAMILIES.get(base)
    if family is not None and method == "POST" and model and "/" not in model:
        return _Route("create", "create", family, unquote(model))
    return None


def _is_api_path(path: str) -> bool:
    """Whether a path belongs to the API (authenticated even when its method is not served)."""
    return (
        path.startswith("/v1/")
        or path in _ROOT_ROUTES
        or path[1:].partition("/")[0] in api2.V2_FAMILIES
    )


def _page_param(params: dict[str, list[str]], name: str, default: int, high: int) -> int:
    values = params.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise invalid(f"{name} must be an integer from 1 to {high}") from None
    if not 1 <= value <= high:
        raise invalid(f"{name} must be an integer from 1 to {high}, got {value}")
    return value


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The request body when it is a JSON object, else None."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _fault_error(rule: FaultRule) -> ApiError:
    # Wall-clock time, not config.clock: an HTTP-date is read against the client's real clock.
    return ApiError(
        rule.code,
        rule.message,
        http_status=rule.http_status,
        retry_after=rule.retry_after_header(time.time()),
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle plus delayed ACKs can add
    # ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    server: _Server
    #: The API request being served: its identity (to recognise a resend), and whether its
    #: credentials are a JWT (renewable) rather than the API key.
    _request_key: tuple[str, str, str, str] = ("", "", "", "")
    _renewable: bool = True

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet by design: tests and the demo own the terminal, and headers carry tokens.
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        body = self._read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        try:
            if _is_api_path(url.path):
                self._serve_api(method, url.path, url.query, body)
            elif url.path.startswith("/assets/") and method == "GET":
                self._serve_asset(url.path, url.query)
            elif url.path == "/_sim/stats" and method == "GET":
                self._send_json(200, self.server.state.stats().to_dict())
            else:
                self._send_json(404, failure("", ApiError(1202, "invalid method")))
        except OSError:
            raise
        except Exception:
            # A simulator bug must look like a server error to the client, and be visible.
            self.server.handle_error(self.request, self.client_address)
            self._send_error("", ApiError(5000, "internal error"))

    def _serve_api(self, method: str, path: str, query: str, body: bytes) -> None:
        state = self.server.state
        route = _route(method, path)
        if route is not None:
            state.count_request(route.kind)
            if route.kind == "create" and route.family is not None and route.family.api == V2:
                state.count_request("create_v2")
        request_id = state.new_request_id()
        authorization = self.headers.get("Authorization")
        # Identifies a resend of this request (JwtAuth resends it as is, with a new token).
        self._request_key = (method, path, query, hashlib.sha256(body).hexdigest())
        api_key = self.server.config.api_key
        self._renewable = api_key is None or (authorization or "").split()[-1:] != [api_key]
        try:
            check_authorization(authorization, self.server.config)
            if route is None:
                raise ApiError(1202, "invalid method")
            if route.kind == "create":
                self._create(route, body, request_id)
            elif route.kind == "query":
                self._query(route, request_id)
            elif route.kind == "list":
                self._list(route, query, request_id)
            elif route.kind == "batch_query":
                self._batch_query(route, query, request_id)
            elif route.kind == "window_list":
                self._window_list(route, body, request_id)
            else:
                self._account(route, query, request_id)
        except ApiError as error:
            if route is not None and route.kind == "create":
                state.note_create_answer(str(error.code))
            self._send_error(request_id, error)

    def _create(self, route: _Route, raw: bytes, request_id: str) -> None:
        server = self.server
        family = route.family
        assert family is not None
        body = _json_object(raw)
        prompt = family.prompt_of(body) if body is not None else None
        self._pause(server.faults.total_delay(route.fault_op, prompt))
        rule = self._take_pre_commit(route.fault_op, prompt)
        if rule is not None:
            if rule.effect == "drop_before_commit":
                server.state.note_create_answer("dropped")
                self._drop()
                return
            raise _fault_error(rule)
        spec: CreateSpec | ApiError
        if body is None:
            spec = invalid("request body must be a JSON object")
        else:
            try:
                spec = family.validate(body, replace(server.target, path_model=route.ident))
            except ApiError as error:
                spec = error
        task, answer = server.state.commit(family, spec)
        if answer is not None and answer.effect == "delay_after_commit":
            self._pause(answer.delay)
            answer = None
        if answer is not None and answer.effect == "drop_after_commit":
            server.state.note_create_answer("dropped")
            self._drop()
        elif answer is not None:
            server.state.note_create_answer(str(answer.code))
            self._send_error(request_id, _fault_error(answer))
        else:
            server.state.note_create_answer("0")
            now = server.state.now()
            if family.api == V2:
                data = v2_created(task, now)
            else:
                data = legacy_task(task, now, server.base_url, server.signer.query)
            self._send_json(200, success(request_id, data))

    def _query(self, route: _Route, request_id: str) -> None:
        server = self.server
        family, ident = route.family, route.ident
        assert family is not None and ident is not None
        peeked = server.state.find(family, ident, looked_up=False)
        prompt = peeked.spec.prompt if peeked is not None else None
        if not self._apply_faults(route.fault_op, prompt):
            return
        task = server.state.find(family, ident, looked_up=True)
        if task is None:
            if server.config.not_found_style == "404/1203":
                raise ApiError(1203, "Task not found")
            # What live probes saw (1201 is overloaded: the message says "not found").
            raise ApiError(1201, f"Task not found by id/external id: {ident}")
        wire = legacy_task(task, server.state.now(), server.base_url, server.signer.query)
        self._send_json(200, success(request_id, wire))

    def _list(self, route: _Route, query: str, request_id: str) -> None:
        server = self.server
        assert route.family is not None
        if not self._apply_faults(route.fault_op, None):
            return
        params = parse_qs(query)
        page = _page_param(params, "pageNum", 1, 1000)
        size = _page_param(params, "pageSize", 30, 500)
        tasks = server.state.list_page(route.family, page, size)
        now = server.state.now()
        wires = [legacy_task(t, now, server.base_url, server.signer.query) for t in tasks]
        self._send_json(200, success(request_id, wires))

    def _batch_query(self, route: _Route, query: str, request_id: str) -> None:
        server = self.server
        ids, by_external = api2.batch_ids(query)
        # Fault rules match against the prompts of the tasks the query names, one per line.
        peeked = server.state.find_v2(ids, by_external=by_external, looked_up=False)
        prompt = "\n".join(task.spec.prompt for task in peeked) if peeked else None
        if not self._apply_faults(route.fault_op, prompt):
            return
        tasks = server.state.find_v2(ids, by_external=by_external)
        now = server.state.now()
        wires = [v2_task(t, now, server.base_url, server.signer.query) for t in tasks]
        self._send_json(200, success(request_id, wires))

    def _window_list(self, route: _Route, raw: bytes, request_id: str) -> None:
        server = self.server
        if not self._apply_faults(route.fault_op, None):
            return
        window = api2.parse_window(_json_object(raw))
        tasks, next_position = server.state.window_page(window.keeps, window.cursor, window.limit)
        now = server.state.now()
        data = {
            "result": [v2_task(t, now, server.base_url, server.signer.query) for t in tasks],
            "count": len(tasks),
            "next_cursor": api2.encode_cursor(next_position) if next_position is not None else None,
            "has_more": next_position is not None,
        }
        self._send_json(200, success(request_id, data))

    def _account(self, route: _Route, query: str, request_id: str) -> None:
        server = self.server
        if not self._apply_faults(route.fault_op, None):
            return
        start_ms, end_ms = account.window(query)
        if not server.config.resource_packs:
            self._send_json(200, account.NO_PACKS)
            return
        data = account.costs(
            server.state.pack_usage(),
            purchased_ms=server.pack_purchased_ms,
            start_ms=start_ms,
            end_ms=end_ms,
        )
        self._send_json(200, success(request_id, data))

    def _apply_faults(self, op: str, prompt: str | None) -> bool:
        """Run read-side faults; False when the connection was dropped. Raises for errors."""
        self._pause(self.server.faults.total_delay(op, prompt))
        rule = self._take_pre_commit(op, prompt)
        if rule is None:
            return True
        if rule.effect == "drop_before_commit":
            self._drop()
            return False
        raise _fault_error(rule)

    def _take_pre_commit(self, op: str, prompt: str | None) -> FaultRule | None:
        """The pre-commit fault for this API request, if one fires.

        An injected 1003/1004 says the request's token is not yet valid or expired; a JWT
        client then mints a new token and resends the same request. That resend is spared: a
        token minted a moment ago cannot have expired, and a real client would take a second
        refusal for a clock or credential problem and stop (only a real skew,
        SimConfig.clock_skew, refuses fresh tokens). The new token is not compared with the
        old one: two JWTs minted within the same second are identical. A request carrying the
        API key is never spared: nothing renews it.
        """
        state = self.server.state
        spare = self._renewable and state.is_token_resend(self._request_key)
        rule = self.server.faults.take(op, prompt, PRE_COMMIT_EFFECTS, spare_token_errors=spare)
        if rule is not None and rule.rejects_token:
            state.note_token_rejected(self._request_key)
        return rule

    def _serve_asset(self, path: str, query: str) -> None:
        state = self.server.state
        state.count_request("asset")
        with state.asset_in_flight():
            self._answer_asset(path, query)

    def _answer_asset(self, path: str, query: str) -> None:
        """Faults first (matched against the prompt of the task the path names, finished or
        not), then 404 for an asset that cannot be served, 403 for a URL that expired or is not
        properly signed, then the file (or a truncated body, or an HTML page)."""
        server = self.server
        state = server.state
        parts = path[len("/assets/") :].split("/")
        task = None
        index, suffix = 0, ""
        watermarked = False
        if len(parts) == 2:
            stem, _, suffix = parts[1].partition(".")
            if stem.endswith(WATERMARK_MARK):
                stem, watermarked = stem[: -len(WATERMARK_MARK)], True
            if stem.isascii() and stem.isdigit() and suffix in BUILDERS:
                index = int(stem)
                task = state.asset_task(unquote(parts[0]), index, suffix, finished=False)
        prompt = task.spec.prompt if task is not None else None
        self._pause(server.faults.total_delay("asset", prompt))
        rule = server.faults.take("asset", prompt, PRE_COMMIT_EFFECTS)
        if rule is not None:
            if rule.effect == "drop_before_commit":
                state.note_asset_answer("dropped")
                self._drop()
                return
            error = _fault_error(rule)
            state.note_asset_answer(str(error.http_status))
            self._send_error("", error)
            return
        if task is None or task.status(state.now()) != "succeed":
            state.note_asset_answer("404")
            self._send_json(404, failure("", ApiError(1203, "asset not found")))
            return
        refusal = server.signer.refusal(path, query)
        if refusal is not None:
            state.note_asset_answer("403")
            self._send_json(403, failure("", ApiError(1103, refusal, http_status=403)))
            return
        # The watermarked copy differs from the file (a client must not mistake one for the
        # other when it checks what it downloaded).
        content = BUILDERS[suffix](task.task_id + (" watermarked" if watermarked else ""), index)
        rule = server.faults.take("asset", prompt, ASSET_BODY_EFFECTS)
        if rule is None:
            state.note_asset_answer("200", len(content))
            self._send_bytes(200, content, MEDIA_TYPES[suffix])
        elif rule.effect == "truncate":
            sent = len(content) // 2
            state.note_asset_answer("truncated", sent)
            self._send_truncated(content, sent, MEDIA_TYPES[suffix])
        else:
            state.note_asset_answer("wrong_type", len(HOTLINK_PAGE))
            self._send_bytes(200, HOTLINK_PAGE, HOTLINK_PAGE_TYPE)

    def _send_truncated(self, body: bytes, sent: int, content_type: str) -> None:
        """Announce all of ``body`` but send only its first ``sent`` bytes, then hang up."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:sent])
        self._drop()

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a body we refuse to read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_error("", ApiError(1200, "chunked request bodies are not supported"))
            return None
        header = self.headers.get("Content-Length")
        if not header:
            return b""
        try:
            length = int(header)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            # The unread body would desynchronise the keep-alive stream: answer and close.
            self.close_connection = True
            self._send_error("", ApiError(1200, "invalid or too large Content-Length"))
            return None
        return self.rfile.read(length)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.server.stopping.wait(seconds)

    def _drop(self) -> None:
        # shutdown() rather than just closing: the client must see the connection end now
        # (a transport error), not a hang until its own timeout.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_error(self, request_id: str, error: ApiError) -> None:
        headers = [("Retry-After", error.retry_after)] if error.retry_after is not None else []
        self._send_json(error.http_status, failure(request_id, error), headers)

    def _send_json(
        self, status: int, payload: Any, headers: list[tuple[str, str]] | None = None
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or ():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class Simulator:
    """A Kling-compatible server on loopback, run in a background thread.

    ``start()`` returns the base URL; ``stop()`` closes every connection and joins every thread
    it started. Also a context manager. State (tasks, counters) lives as long as the object, or,
    with ``config.state_file``, as long as that file (its tasks are loaded here).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self._faults = FaultBook(self.config.faults, seed=self.config.seed)
        self._journal: Journal | None = None
        self._last_port: int | None = None
        if self.config.state_file is not None:
            journal = Journal(self.config.state_file)
            self._journal = journal
            self._state = SimState(
                self.config,
                self._faults,
                on_commit=lambda task: journal.append({"task": task_to_json(task)}),
            )
            loaded = journal.load()
            self._last_port = loaded.port
            self._state.restore(self._revived(loaded.tasks))
        else:
            self._state = SimState(self.config, self._faults)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the simulator is not running: call start() first")
        return self._url

    def _revived(self, entries: Iterable[Mapping[str, Any]]) -> Iterator[TaskRecord]:
        clock_now, wall_now = self.config.clock(), time.time()
        for entry in entries:
            try:
                yield task_from_json(entry, clock_now=clock_now, wall_now=wall_now)
            except (KeyError, TypeError, ValueError):
                continue  # a line from another version, or damaged: not a task we can serve

    def _bind(self) -> _Server:
        address = (self.config.host, self.config.port)
        if self.config.port == 0 and self._last_port is not None:
            # Where the earlier simulator listened: the asset URLs it handed out stay valid.
            try:
                return _Server(
                    (self.config.host, self._last_port), self.config, self._state, self._faults
                )
            except OSError:
                pass  # taken meanwhile: any free port
        return _Server(address, self.config, self._state, self._faults)

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
            # A wildcard bind is reachable on loopback; asset URLs must name a connectable host.
            url_host = "127.0.0.1" if host in ("", "0.0.0.0") else str(host)
            server.base_url = f"http://{url_host}:{port}"
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name="kling-simulator",
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

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> SimStats:
        return self._state.stats()

    def add_fault(self, rule: FaultRule) -> None:
        self._faults.add(rule)

    def set_billing_after(self, k: int | None) -> None:
        """After ``k`` committed creates in total (since the simulator was built), every further
        create answers 429/1102; None lifts the limit."""
        self._state.set_billing_after(k)
