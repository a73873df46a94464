"""One request to Kling, one answer or one ProviderError: the only place where what Kling's wire
says (HTTP statuses, envelope codes and messages) becomes ours; sending, and the httpx
exceptions it can meet, are every provider's (:mod:`orchestrator.providers.http_channel`).

    Channel.call   send   httpx (and raw OSError) exceptions -> network / timeout errors with
                          .sent and .ambiguous; a request not answered in full (connect, send,
                          the whole body) within its timeout -> a timeout error like a read
                          timeout; a body past MAX_ANSWER_BYTES -> a server error (ambiguous on
                          a create), read no further
                   answer HTTP status + envelope code + message -> codes (classify, exists,
                          not found), Retry-After, request_id
    Channel.clean  every text taken from an answer or an exception: credentials masked, lone
                   surrogates replaced (so reports and consoles can print it), stripped, short

Both APIs (legacy /v1 and API 2.0) share the envelope ``{code, message, request_id, data}``
and the code table, so both go through here. The operation (``Op``) decides what an answer
may mean: only a create can be ambiguous or "exists", only a legacy query "not found".
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import httpx

from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.providers.http_channel import HttpChannel, parse_json
from orchestrator.providers.kling.codes import (
    CODES,
    MALFORMED_HINT,
    UNPROVEN_HINT,
    classify,
    exists_info,
    means_exists,
    means_not_found,
    not_found,
    parse_code,
    rule_for,
)
from orchestrator.retry import parse_retry_after, parse_retry_after_ms

#: The largest answer read. Kling's largest, a list page of 500 tasks, is far below it; a body
#: past it is not an answer but a broken or hostile server, and must not fill the memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class Op(enum.Enum):
    """What a request is for: it decides ambiguity, "exists" and what "not found" means."""

    CREATE = "create"
    #: a legacy query of one task by path (task id or external id)
    QUERY = "query"
    #: a legacy list page
    LIST = "list"
    #: an API 2.0 batch read (GET /tasks?task_ids= / ?external_task_ids=)
    READ = "read"
    #: an API 2.0 time-window list (POST /tasks)
    WINDOW = "window"
    ACCOUNT = "account"
    #: a body Kling POSTed to our callback_url (no HTTP answer of ours)
    CALLBACK = "callback"


@dataclass(frozen=True)
class Answer:
    data: object
    request_id: str | None
    #: None for a callback body, which answers no request
    http_status: int | None


class Channel(HttpChannel):
    """The HTTP client for one Kling host, and the translation of everything it can meet."""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
        clock: Callable[[], float] = time.time,
        max_connections: int,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        super().__init__(
            base_url, auth, title="Kling", timeout=timeout, transport=transport,
            max_connections=max_connections, max_answer_bytes=max_answer_bytes, clock=clock,
        )

    async def call(
        self,
        op: Op,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One request (``path`` from the host root); the answer of a 2xx envelope with code 0
        (or none), or the ProviderError saying what went wrong."""
        response = await self.send(op.value, method, path, creating=op is Op.CREATE,
                                   content=content, params=params, timeout=timeout)
        return self._answer(op, response)

    # -- answers -------------------------------------------------------------------------------

    def _answer(self, op: Op, response: httpx.Response) -> Answer:
        status = response.status_code
        envelope = parse_json(response.content)
        code: int | None = None
        raw_message = ""
        request_id: str | None = None
        data: object = None
        if isinstance(envelope, dict):
            code = parse_code(envelope.get("code"))
            found = envelope.get("message")
            raw_message = found if isinstance(found, str) else ""
            raw_request_id = envelope.get("request_id")
            request_id = ((self.clean(raw_request_id) or None)
                          if isinstance(raw_request_id, str) else None)
            data = envelope.get("data")
        answer = Answer(data, request_id, status)

        if 200 <= status <= 299:
            if not isinstance(envelope, dict):
                raise self.malformed(op, answer, self.describe_body(response, envelope))
            if code in (0, None):
                return answer
        self._raise_rejected(op, response, envelope, answer, code, raw_message)

    def _raise_rejected(
        self,
        op: Op,
        response: httpx.Response,
        envelope: object,
        answer: Answer,
        code: int | None,
        raw_message: str,
    ) -> NoReturn:
        status = response.status_code
        is_envelope = isinstance(envelope, dict)
        message = self.clean(raw_message)
        if not message and not is_envelope:
            message = self.describe_body(response, envelope)
        rule = rule_for(status, code)
        # Decided on Kling's raw words; what is shown is the cleaned text. A bare 404 page (no
        # Kling envelope) is a wrong URL or a proxy, not proof of absence: answering "absent"
        # on it could make the engine resubmit a task that exists.
        absent = op is Op.QUERY and is_envelope and means_not_found(status, code, raw_message)
        # Only a refusal of the request's values can say that the external id is taken: the
        # same words on a 5xx or a rate limit would not prove the task exists.
        exists = (op is Op.CREATE and is_envelope and rule.category is Category.VALIDATION
                  and means_exists(raw_message))
        if absent:
            info = not_found(status, code, message)
        elif exists:
            info = exists_info(status, code, message)
        else:
            info = classify(status, code, message, host=self.host)
        retry_after = parse_retry_after_ms(response.headers.get("retry-after-ms"))
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if retry_after is None:
            retry_after = rule.min_wait
        ambiguous = op is Op.CREATE and not exists and (
            rule.may_have_committed
            or status >= 500
            # Only a 4xx or a known rejection code refuses the request. A 2xx with a code we do
            # not know, a 1xx, or a 3xx (a 303 means "done, see there") may have created it.
            or (not 400 <= status <= 499 and code not in CODES)
        )
        raise ProviderError(
            info,
            sent=True,
            ambiguous=ambiguous,
            retry_after=retry_after,
            request_id=answer.request_id,
            not_found=absent,
            over_capacity=rule.over_capacity,
            exists=exists,
            details={"operation": op.value},
        )

    def malformed(self, op: Op, answer: Answer, message: str) -> ProviderError:
        """A 2xx answer whose body is not the documented shape (``message`` may quote it)."""
        info = ErrorInfo(
            category=Category.SERVER,
            message=self.clean(f"unexpected answer from Kling: {message}"),
            retryable=True,
            hint=MALFORMED_HINT,
            http_status=answer.http_status,
        )
        # A 2xx to a create most likely means the task exists: look it up, do not resubmit.
        return ProviderError(info, sent=True, ambiguous=op is Op.CREATE,
                             request_id=answer.request_id, details={"operation": op.value})

    def absent(self, answer: Answer, message: str) -> ProviderError:
        """A read by task id whose answer leaves the task out: it does not exist (API 2.0
        reads by task id do not lag behind creates)."""
        info = not_found(answer.http_status, None, self.clean(message))
        return ProviderError(info, sent=True, request_id=answer.request_id, not_found=True,
                             details={"operation": Op.QUERY.value})

    def unproven(
        self, external_task_id: str, answer: Answer | None, reason: str
    ) -> ProviderError:
        """A lookup that could not prove the task absent: the create must not be resent."""
        info = ErrorInfo(
            category=Category.SERVER,
            message=self.clean(
                f"cannot prove that no task has external_task_id {external_task_id}: {reason}"
            ),
            retryable=False,
            hint=UNPROVEN_HINT,
            http_status=answer.http_status if answer is not None else None,
        )
        return ProviderError(
            info,
            sent=True,
            request_id=answer.request_id if answer is not None else None,
            details={"operation": "lookup"},
        )
