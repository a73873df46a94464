"""The HTTP side of the LTX simulator: one keep-alive request handler speaking LTX's v2 wire.

Routes::

    POST /v2/text-to-video | /v2/image-to-video   submit (auth, faults, rate, validation,
                                                  safety filter, credits, slots)
    GET  /v2/<endpoint>/<id>                      the job (404 on another endpoint, or expired)
    POST /v1/upload                               an upload URL and its storage_uri (auth)
    PUT  /uploads/<token>                         the file, to that URL (no auth: signed URL)
    GET  /assets/<id>.mp4                         the video (no auth, like a CDN URL)
    GET  /_sim/stats                              LtxSimStats as JSON

A body over ``max_body_bytes`` is answered before anything else, by "the infrastructure": an
HTML 413. Every answer carries ``x-request-id``. Handlers do a few dict lookups under the state's
lock; the only sleeps are injected delays, which end early when the simulator stops.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from orchestrator.providers.ltx.simulator.faults import (
    ASSET_BODY_EFFECTS,
    PRE_COMMIT_EFFECTS,
    LtxFaultRule,
)
from orchestrator.providers.ltx.simulator.validation import ENDPOINTS, JobSpec, validate
from orchestrator.providers.ltx.simulator.wire import (
    HTML_TYPE,
    JSON_TYPE,
    MP4_TYPE,
    TOO_LARGE_PAGE,
    XML_TYPE,
    LtxError,
    envelope,
    invalid,
    iso,
    job_body,
    not_found,
    storage_error,
)
from orchestrator.simulator.assets import HOTLINK_PAGE, HOTLINK_PAGE_TYPE
from orchestrator.simulator.media import video_mp4

if TYPE_CHECKING:
    from orchestrator.providers.ltx.simulator.server import LtxHttpServer

#: Most bytes of an oversized body read (and thrown away) before its 413, so the client gets
#: the answer rather than a reset connection; beyond this the connection is just closed after.
_DRAIN_LIMIT: Final = 256 * 1024 * 1024
_DRAIN_TIMEOUT: Final = 5.0
_MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")
DEFAULT_UPLOAD_TYPE: Final = "application/octet-stream"


@dataclass(frozen=True)
class _Route:
    #: submit, status, upload, upload_put, asset, stats, api (an unknown API path) or other.
    kind: str
    endpoint: str = ""
    ident: str = ""

    @property
    def authenticated(self) -> bool:
        return self.kind in ("submit", "status", "upload", "api")


def _route(method: str, path: str) -> _Route:
    parts = path.split("/")[1:]
    if parts[:1] == ["v2"]:
        if method == "POST" and len(parts) == 2 and parts[1] in ENDPOINTS:
            return _Route("submit", parts[1])
        if method == "GET" and len(parts) == 3 and parts[2]:
            return _Route("status", parts[1], unquote(parts[2]))
        return _Route("api")
    if parts[:1] == ["v1"]:
        return _Route("upload") if (method, parts) == ("POST", ["v1", "upload"]) else _Route("api")
    if method == "PUT" and len(parts) == 2 and parts[0] == "uploads" and parts[1]:
        return _Route("upload_put", ident=unquote(parts[1]))
    name = parts[1] if len(parts) == 2 else ""
    if method == "GET" and parts[:1] == ["assets"] and name.endswith(".mp4") and name != ".mp4":
        return _Route("asset", ident=unquote(name[: -len(".mp4")]))
    if (method, path) == ("GET", "/_sim/stats"):
        return _Route("stats")
    return _Route("other")


def _fault_error(rule: LtxFaultRule) -> LtxError:
    return LtxError(
        rule.error_type, rule.message, http_status=rule.http_status, retry_after=rule.retry_after
    )


def _json(raw: bytes) -> tuple[bool, Any]:
    """(True, the value) when ``raw`` is JSON, else (False, None)."""
    try:
        return True, json.loads(raw)
    except ValueError:
        return False, None


class LtxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle plus delayed ACKs can add
    # ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    server: LtxHttpServer
    _request_id = ""

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet by design: tests and the demo own the terminal, and headers carry keys.
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
        server = self.server
        state = server.state
        route = _route(method, urlsplit(self.path).path)
        if route.kind in ("submit", "status", "upload", "upload_put", "asset"):
            state.count(route.kind)
        self._request_id = state.new_request_id()
        config = server.config
        limit = config.max_upload_bytes if route.kind == "upload_put" else config.max_body_bytes
        try:
            body = self._read_body(limit)
            if body is None:
                if route.kind == "submit":
                    state.note_answer("413 request_too_large")
                return
            if route.authenticated:
                self._authenticate()
            if route.kind == "submit":
                self._submit(route.endpoint, body)
            elif route.kind == "status":
                self._status(route.endpoint, route.ident)
            elif route.kind == "upload":
                self._upload(body)
            elif route.kind == "upload_put":
                self._put(route.ident, body)
            elif route.kind == "asset":
                self._asset(route.ident)
            elif route.kind == "stats":
                self._send_json(200, state.stats().to_dict())
            else:
                raise not_found(f"No route for {method} {urlsplit(self.path).path}")
        except LtxError as error:
            if route.kind == "submit":
                state.note_answer(error.label)
            elif route.kind == "asset":
                state.note_asset_answer(str(error.http_status))
            self._send_error(error)
        except OSError:
            raise
        except Exception:
            # A simulator bug must look like a server error to the client, and be visible.
            server.handle_error(self.request, self.client_address)
            self._send_error(LtxError("api_error", "Internal server error"))

    def _authenticate(self) -> None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise LtxError("authentication_error", "Missing API key: send Authorization: Bearer")
        if not hmac.compare_digest(token.encode(), self.server.config.api_key.encode()):
            raise LtxError("authentication_error", "Invalid API key")

    def _submit(self, endpoint: str, raw: bytes) -> None:
        server, state = self.server, self.server.state
        parsed, body = _json(raw)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        prompt = prompt if isinstance(prompt, str) else None
        self._pause(server.faults.total_delay("submit", prompt))
        rule = server.faults.take("submit", prompt, PRE_COMMIT_EFFECTS)
        if rule is not None:
            if rule.effect == "drop_before_commit":
                state.note_answer("dropped")
                self._drop()
                return
            raise _fault_error(rule)
        spec: JobSpec | LtxError
        try:
            if not parsed:
                raise invalid("request body is not valid JSON")
            spec = validate(endpoint, body, state.uploaded)
        except LtxError as error:
            spec = error
        job, answer = state.commit(spec)
        if answer is not None and answer.effect == "drop_after_commit":
            state.note_answer("dropped")
            self._drop()
        elif answer is not None:
            raise _fault_error(answer)
        else:
            state.note_answer("202")
            created = {"id": job.job_id, "created_at": iso(job.created_at_ms / 1000)}
            self._send_json(202, created)

    def _status(self, endpoint: str, job_id: str) -> None:
        state = self.server.state
        seen = state.job(job_id)
        if not self._apply_faults("status", seen.spec.prompt if seen is not None else None):
            return
        job = state.lookup(endpoint, job_id)
        if job is None:
            raise not_found(f"Job {job_id} not found or expired")
        self._send_json(200, job_body(job, state.now(), self.server.base_url))

    def _upload(self, raw: bytes) -> None:
        if not self._apply_faults("upload", None):
            return
        parsed, body = _json(raw) if raw.strip() else (True, {})
        if not parsed or not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        unknown = sorted(set(body) - {"content_type"})
        if unknown:
            raise invalid(f"{', '.join(unknown)}: unknown field for upload")
        content_type = body.get("content_type", DEFAULT_UPLOAD_TYPE)
        if not isinstance(content_type, str) or not _MEDIA_TYPE.fullmatch(content_type):
            raise invalid(f"content_type: must be a media type such as image/png, got "
                          f"{content_type!r}")
        upload = self.server.state.issue_upload(content_type)
        answer = {
            "upload_url": f"{self.server.base_url}/uploads/{upload.token}",
            "storage_uri": upload.storage_uri,
            "expires_at": iso(upload.expires_at),
            "required_headers": {"Content-Type": content_type},
        }
        self._send_json(200, answer)

    def _put(self, token: str, raw: bytes) -> None:
        if not self._apply_faults("upload", None):
            return
        content_type = self.headers.get("Content-Type")
        code, message = self.server.state.store_upload(
            token, content_type.strip() if content_type else None, len(raw)
        )
        if code:
            self._send_bytes(403, storage_error(code, message), XML_TYPE)
        else:
            self._send_bytes(200, b"", "text/plain")

    def _asset(self, job_id: str) -> None:
        server, state = self.server, self.server.state
        seen = state.job(job_id)
        prompt = seen.spec.prompt if seen is not None else None
        self._pause(server.faults.total_delay("asset", prompt))
        rule = server.faults.take("asset", prompt, PRE_COMMIT_EFFECTS)
        if rule is not None:
            if rule.effect == "drop_before_commit":
                state.note_asset_answer("dropped")
                self._drop()
                return
            raise _fault_error(rule)
        job = state.asset_job(job_id)
        if job is None:
            raise not_found(f"Asset {job_id}.mp4 not found or expired")
        content = video_mp4(job.job_id, 0)
        rule = server.faults.take("asset", prompt, ASSET_BODY_EFFECTS)
        if rule is None:
            state.note_asset_answer("200")
            self._send_bytes(200, content, MP4_TYPE)
        elif rule.effect == "truncate":
            state.note_asset_answer("truncated")
            self._send_truncated(content, len(content) // 2)
        else:
            state.note_asset_answer("wrong_type")
            self._send_bytes(200, HOTLINK_PAGE, HOTLINK_PAGE_TYPE)

    def _apply_faults(self, op: str, prompt: str | None) -> bool:
        """Delay and pre-commit faults of a read; False once the connection was dropped."""
        faults = self.server.faults
        self._pause(faults.total_delay(op, prompt))
        rule = faults.take(op, prompt, PRE_COMMIT_EFFECTS)
        if rule is None:
            return True
        if rule.effect == "drop_before_commit":
            self._drop()
            return False
        raise _fault_error(rule)

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None after answering the infrastructure's 413."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # The unread body would desynchronise the keep-alive stream: answer and close.
            self.close_connection = True
            raise invalid("chunked request bodies are not supported: send Content-Length")
        header = self.headers.get("Content-Length")
        if not header:
            return b""
        try:
            length = int(header)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise invalid("invalid Content-Length")
        if length <= limit:
            return self.rfile.read(length)
        self.close_connection = True
        self._drain(length)
        self._send_bytes(413, TOO_LARGE_PAGE, HTML_TYPE)
        return None

    def _drain(self, length: int) -> None:
        """Read an oversized body away (up to a limit), so the client, still sending, reads
        the 413 instead of a reset connection."""
        left = min(length, _DRAIN_LIMIT)
        with contextlib.suppress(OSError):
            self.connection.settimeout(_DRAIN_TIMEOUT)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.server.stopping.wait(seconds)

    def _drop(self) -> None:
        # shutdown() rather than just closing: the client must see the connection end now
        # (a transport error), not a hang until its own timeout.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_truncated(self, body: bytes, sent: int) -> None:
        """Announce all of ``body`` but send only its first ``sent`` bytes, then hang up."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", MP4_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", self._request_id)
        self.end_headers()
        self.wfile.write(body[:sent])
        self._drop()

    def _send_error(self, error: LtxError) -> None:
        headers = [("Retry-After", error.retry_after)] if error.retry_after is not None else []
        self._send_json(error.http_status, envelope(error), headers)

    def _send_json(
        self, status: int, payload: Any, headers: list[tuple[str, str]] | None = None
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send_bytes(status, body, JSON_TYPE, headers)

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
        self.send_header("x-request-id", self._request_id)
        for name, value in headers or ():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
