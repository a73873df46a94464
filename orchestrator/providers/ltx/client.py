"""LTX Video's asynchronous API (v2) as a :class:`~orchestrator.providers.base.Provider`.

    create   POST /v2/<endpoint>            -> 202 {id, created_at}: one paid job
    query    GET  /v2/<endpoint>/<id>       -> pending | processing | completed | failed
    upload   POST /v1/upload, PUT <upload_url>   a local image too large to travel inline

The endpoint (``text-to-video``, ``image-to-video``) follows from the request's kind, so every
read goes where its submit went. LTX has no idempotency key, no client reference and no list:
this provider cannot look a job up (it is no ``TaskFinder``), so a submit whose answer was lost
is held unresolved by the engine, never resent on its own. Results live 24 hours after a job
ends (then 404): the engine downloads as soon as a job completes.

Every answer is read in :class:`_Channel`: the one place where LTX's wire becomes ours.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn, Self

import anyio
import anyio.to_thread
import httpx

from orchestrator.asset_network import InternalAddress, asset_transport
from orchestrator.asset_policy import AssetPolicy
from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.images import ImageError, read_image_info
from orchestrator.providers.base import Asset, ImageSource, Kind, Task, TaskRequest, TaskStatus
from orchestrator.providers.http_channel import NOT_JSON, HttpChannel, is_utf8, parse_json
from orchestrator.providers.ltx.codes import MALFORMED_HINT, classify, classify_job_failure
from orchestrator.retry import parse_retry_after

DEFAULT_BASE_URL: Final = "https://api.ltx.video"
ENDPOINTS: Final[Mapping[Kind, str]] = {
    Kind.TEXT2VIDEO: "text-to-video",
    Kind.IMAGE2VIDEO: "image-to-video",
}
#: The largest answer read: LTX's are a few hundred bytes.
MAX_ANSWER_BYTES: Final = 1024 * 1024
#: Local images up to this size travel inline as a data URI; larger ones are uploaded first.
INLINE_IMAGE_BYTES: Final = 5 * 1024 * 1024
MAX_CONNECTIONS: Final = 16
#: Manifest field -> wire field, in the order sent.
_WIRE_FIELDS: Final = (
    ("prompt", "prompt"),
    ("model", "model"),
    ("duration", "duration"),
    ("resolution", "resolution"),
    ("fps", "fps"),
    ("generate_audio", "generate_audio"),
    ("camera_motion", "camera_motion"),
)
_IMAGE_FIELDS: Final = (("image", "image_uri"), ("last_frame", "last_frame_uri"))
_STATUSES: Final[Mapping[str, TaskStatus]] = {
    "pending": TaskStatus.SUBMITTED,
    "queued": TaskStatus.SUBMITTED,
    "processing": TaskStatus.PROCESSING,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}
_IMAGE_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg"}


def _refused(message: str, hint: str) -> ProviderError:
    """A request refused before anything was sent (it may be fixed and sent later)."""
    return ProviderError(ErrorInfo(Category.VALIDATION, message, False, hint), sent=False)


def _iso_time(value: object) -> float | None:
    """An ISO-8601 time LTX sent, as Unix seconds; None when absent or unreadable."""
    if not isinstance(value, str) or not value or not is_utf8(value):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _read_image(path: Path) -> tuple[str, bytes]:
    info = read_image_info(path)
    return _IMAGE_TYPES[info.format], path.read_bytes()


class _Channel(HttpChannel):
    """LTX's answers: a 2xx JSON object, or the error envelope classified."""

    async def call(
        self, operation: str, method: str, path: str, *, body: object = None, creating: bool
    ) -> tuple[dict[str, Any], str | None]:
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        response = await self.send(operation, method, path, creating=creating, content=content)
        request_id = self._request_id(response)
        data = parse_json(response.content)
        if 200 <= response.status_code <= 299:
            if not isinstance(data, dict):
                raise self.malformed(
                    operation, response.status_code, request_id,
                    self.describe_body(response, data), creating=creating,
                )
            return data, request_id
        self._raise_rejected(operation, response, data, request_id, creating=creating)

    def _request_id(self, response: httpx.Response) -> str | None:
        found = response.headers.get("x-request-id")
        return (self.clean(found) or None) if found else None

    def _raise_rejected(
        self,
        operation: str,
        response: httpx.Response,
        data: object,
        request_id: str | None,
        *,
        creating: bool,
    ) -> NoReturn:
        status = response.status_code
        error_type: str | None = None
        message = ""
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            found_type, found_message = error.get("type"), error.get("message")
            if isinstance(found_type, str) and found_type and is_utf8(found_type):
                error_type = self.clean(found_type)[:80]
            if isinstance(found_message, str):
                message = self.clean(found_message)
        if not message:
            message = self.describe_body(response, data) if data is NOT_JSON or not isinstance(
                data, dict) else f"HTTP {status}"
        info, rule = classify(status, error_type, message)
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if retry_after is None:
            retry_after = rule.min_wait
        not_found = status == 404 and operation == "query"
        # Only a 4xx refuses a submit for sure; anything else may have created the job.
        ambiguous = creating and (rule.may_have_committed or not 400 <= status <= 499)
        raise ProviderError(
            info,
            sent=True,
            ambiguous=ambiguous,
            retry_after=retry_after,
            request_id=request_id,
            not_found=not_found,
            over_capacity=rule.over_capacity,
            details={"operation": operation},
        )

    def malformed(
        self, operation: str, status: int | None, request_id: str | None, message: str,
        *, creating: bool,
    ) -> ProviderError:
        """A 2xx answer whose body is not the documented shape (``message`` may quote it)."""
        info = ErrorInfo(
            category=Category.SERVER,
            message=self.clean(f"unexpected answer from LTX: {message}"),
            retryable=True,
            hint=MALFORMED_HINT,
            http_status=status,
        )
        # A 2xx to a submit most likely means the job exists: never resent.
        return ProviderError(info, sent=True, ambiguous=creating, request_id=request_id,
                             details={"operation": operation})


class LtxProvider:
    """LTX Video's v2 API. Capabilities: none of lookup, list or batch reads; one slot a job."""

    name = "ltx"

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        max_connections: int = MAX_CONNECTIONS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        inline_image_bytes: int = INLINE_IMAGE_BYTES,
    ) -> None:
        self._channel = _Channel(
            base_url, auth, title="LTX", timeout=timeout, transport=transport,
            max_connections=max_connections, max_answer_bytes=max_answer_bytes, clock=clock,
        )
        # Uploads go to a signed URL on a storage host: never with the API key, and only where
        # downloads may go (a hostile answer must not aim the file at this machine's network).
        if transport is None:
            limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
            upload_transport = asset_transport(AssetPolicy.for_provider(base_url), limits)
        else:
            upload_transport = transport
        self._uploads = httpx.AsyncClient(
            transport=upload_transport, timeout=httpx.Timeout(timeout), follow_redirects=False
        )
        self._timeout = timeout
        self._inline_image_bytes = inline_image_bytes

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._channel.aclose()
        await self._uploads.aclose()

    # -- the Provider protocol ----------------------------------------------------------------

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        """Submit one paid job. ``external_task_id`` is not sent: LTX takes no client id."""
        endpoint = self._endpoint(request)
        body: dict[str, Any] = {}
        for name, wire in _WIRE_FIELDS:
            value = request.fields.get(name)
            if value is not None:
                body[wire] = value
        for name, wire in _IMAGE_FIELDS:
            source = request.fields.get(name)
            if isinstance(source, ImageSource):
                body[wire] = await self._image_uri(source)
        data, request_id = await self._channel.call(
            "create", "POST", f"v2/{endpoint}", body=body, creating=True
        )
        job_id = data.get("id")
        if not isinstance(job_id, str) or not job_id or not is_utf8(job_id) or "/" in job_id:
            raise self._channel.malformed(
                "create", 202, request_id, f"no job id in {_shape(data)}", creating=True
            )
        return Task(
            task_id=job_id,
            status=TaskStatus.SUBMITTED,
            request_id=request_id,
            created_at=_iso_time(data.get("created_at")),
            raw=data,
        )

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        endpoint = self._endpoint(request)
        data, request_id = await self._channel.call(
            "query", "GET", f"v2/{endpoint}/{task_id}", creating=False
        )
        return self._task(task_id, data, request_id)

    # -- reading a job -------------------------------------------------------------------------

    def _task(self, task_id: str, data: Mapping[str, Any], request_id: str | None) -> Task:
        raw_status = data.get("status")
        status = _STATUSES.get(raw_status) if isinstance(raw_status, str) else None
        if status is None:
            what = (
                f"status {self._channel.clean(raw_status)!r}"
                if isinstance(raw_status, str)
                else f"no status in {_shape(data)}"
            )
            raise self._channel.malformed("query", 200, request_id, f"job {task_id}: {what}",
                                          creating=False)
        created = _iso_time(data.get("created_at"))
        ended = _iso_time(data.get("completed_at"))
        if status is TaskStatus.FAILED:
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            error_type = self._text(error.get("type"))
            failure = classify_job_failure(error_type or None, self._text(error.get("message")))
            return Task(task_id, status, message=failure.message, request_id=request_id,
                        failure=failure, raw=data, created_at=created, ended_at=ended)
        assets: tuple[Asset, ...] = ()
        if status is TaskStatus.SUCCEEDED:
            result = data.get("result")
            url = result.get("video_url") if isinstance(result, dict) else None
            if not isinstance(url, str) or not url or not is_utf8(url):
                raise self._channel.malformed(
                    "query", 200, request_id,
                    f"job {task_id} completed without a result.video_url", creating=False,
                )
            assets = (Asset(0, url, "video"),)
        return Task(task_id, status, assets=assets, request_id=request_id, raw=data,
                    created_at=created, ended_at=ended)

    def _text(self, value: object) -> str:
        return self._channel.clean(value) if isinstance(value, str) else ""

    # -- sending -------------------------------------------------------------------------------

    @staticmethod
    def _endpoint(request: TaskRequest) -> str:
        endpoint = ENDPOINTS.get(request.kind)
        if endpoint is None:
            raise _refused(
                f"LTX makes no {request.kind} tasks",
                "Use kind text2video or image2video with provider ltx.",
            )
        return endpoint

    async def _image_uri(self, source: ImageSource) -> str:
        """An https URL as given; a local file inline as a data URI, or uploaded when large."""
        if source.url is not None:
            return source.url
        assert source.path is not None
        try:
            content_type, content = await anyio.to_thread.run_sync(_read_image, source.path)
        except (OSError, ImageError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _refused(f"cannot read image {source.path}: {reason}",
                           "Check that the image file exists and is readable.") from None
        if len(content) <= self._inline_image_bytes:
            encoded = base64.b64encode(content).decode("ascii")
            return f"data:{content_type};base64,{encoded}"
        return await self._upload(content_type, content)

    async def _upload(self, content_type: str, content: bytes) -> str:
        """Store the file with LTX (``POST /v1/upload``, then PUT to the signed URL): its
        storage_uri. Nothing paid is sent before it is there, so every failure is unsent."""
        try:
            data, request_id = await self._channel.call(
                "upload", "POST", "v1/upload", body={"content_type": content_type},
                creating=False,
            )
        except ProviderError as err:
            raise _unsent(err) from None
        upload_url, storage_uri = data.get("upload_url"), data.get("storage_uri")
        headers = data.get("required_headers")
        if not (isinstance(upload_url, str) and upload_url.startswith(("https://", "http://"))
                and isinstance(storage_uri, str) and storage_uri and is_utf8(storage_uri)):
            raise _unsent(self._channel.malformed(
                "upload", 200, request_id, f"no upload_url or storage_uri in {_shape(data)}",
                creating=False,
            ))
        sent_headers = {"Content-Type": content_type}
        if isinstance(headers, dict):
            sent_headers.update(
                {str(k): str(v) for k, v in headers.items() if isinstance(v, str | int)}
            )
        try:
            with anyio.fail_after(self._timeout):
                response = await self._uploads.put(upload_url, content=content,
                                                   headers=sent_headers)
        except (TimeoutError, httpx.HTTPError, OSError, InternalAddress) as exc:
            raise _unsent(ProviderError(ErrorInfo(
                Category.NETWORK,
                self._channel.clean(f"uploading the image failed: {type(exc).__name__}: {exc}"),
                True,
                "The image upload to LTX's storage failed before the job was sent; it is "
                "retried.",
            ))) from None
        if not 200 <= response.status_code <= 299:
            raise _unsent(ProviderError(ErrorInfo(
                Category.SERVER,
                f"uploading the image failed: HTTP {response.status_code}",
                True,
                "LTX's storage refused the upload before the job was sent; it is retried.",
                http_status=response.status_code,
            )))
        return storage_uri


def _unsent(err: ProviderError) -> ProviderError:
    """A failure before the paid request left: safe to send again."""
    return ProviderError(err.info, sent=False, retry_after=err.retry_after,
                         request_id=err.request_id, details=err.details)


def _shape(data: Mapping[str, Any]) -> str:
    keys = ", ".join(sorted(str(k) for k in data)[:8])
    return f"an object with keys {keys}" if keys else "an empty object"
