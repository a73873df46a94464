"""Property-based tests for the Kling adapter: whatever Kling (or a proxy in front of it) answers,
and however the connection fails, every call either returns a well-formed value or raises a
classified ``ProviderError``: never a traceback, never a lost item, never a leaked credential.

The server is ``httpx.MockTransport`` replaying generated answers: any status, any headers
(Retry-After / retry-after-ms / Content-Encoding / Location included) and bodies ranging from
empty and binary through HTML and truncated JSON to envelopes and task objects whose every field
may be missing, mistyped, huge, unicode or null. Strings may carry markers that the server
replaces, per request, with the credentials it received, as a server echoing them back would.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator.errors import Category, ErrorInfo, ProviderError, Scope
from orchestrator.providers.base import (
    MAX_ASSET_INDEX,
    Asset,
    Kind,
    Task,
    TaskRequest,
    TaskStatus,
)
from orchestrator.providers.kling import KlingProvider
from orchestrator.providers.kling import client as kling
from orchestrator.providers.kling.auth import ApiKeyAuth, JwtAuth
from orchestrator.providers.kling.codes import CODES
from tests.conftest import request_of

AK = "ak-prop-0123456789abcdef"
SK = "sk-prop-secret-0123456789abcdefghijkl"
API_KEY = "apikey-prop-0123456789abcdefghijkl"
NOW = 1_700_000_000.0
EXT = "batch1-item7-a1"
TASK_ID = "t-123"

#: Deterministic (CI reruns the same examples), no example database, no deadline (a slow CI box
#: is not a defect); the whole file runs in about 10 s.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: For the properties whose examples make several requests or draw several answers.
HEAVY = settings(PROPERTY, max_examples=150)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Op(enum.Enum):
    CREATE = "create"
    QUERY = "query"
    LOOKUP = "lookup"
    LIST = "list"


# -- generated answers -------------------------------------------------------------------------

#: Markers the server replaces with what it received: the whole Authorization header, the
#: bearer token (the minted JWT or the API key) and the raw keys.
MARKERS = ("@AUTH@", "@TOKEN@", "@SK@", "@AK@", "@KEY@")

_surrogates = st.characters(categories=["Cs"])
texts = st.one_of(
    st.text(max_size=16),
    st.sampled_from(
        ["", " ", "\n\t", "SUCCEED", "Task not found", "parallel task over resource pack limit",
         "<html><body>502 Bad Gateway</body></html>", "\u202e\u0000\ufeff", "漢字 ✓ 🎬"]
    ),
    st.lists(st.one_of(st.text(max_size=8), st.sampled_from(MARKERS), _surrogates),
             min_size=1, max_size=4).map("".join),
)
huge_ints = st.sampled_from([2**63, -(2**63) - 1, 10**100, -(10**300), 2**1000])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, st.floats(), texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)
    ),
    max_leaves=5,
)

codes = st.one_of(
    st.sampled_from([0, *sorted(CODES)]),
    st.integers(),
    st.sampled_from(
        ["0", "1303", " 1303 ", "-1", "²", "١٢٠٣", "--5", "+7", "9" * 5000, "", "1303.0",
         1303.0, 0.0, float("nan"), True, False, None, [1303], {"code": 1303}]
    ),
    json_values,
)

_asset_entry = st.one_of(
    st.fixed_dictionaries(
        {"url": st.one_of(st.just("https://cdn.test/a.mp4"), texts)},
        optional={"index": st.one_of(st.integers(), texts, json_values), "id": json_values,
                  "duration": json_values},
    ),
    st.fixed_dictionaries({}, optional={"url": json_values, "index": json_values}),
    json_values,
)
_asset_list = st.one_of(st.lists(_asset_entry, max_size=3), json_values)
task_results = st.one_of(
    st.fixed_dictionaries({}, optional={"videos": _asset_list, "images": _asset_list}),
    json_values,
)
_external = st.one_of(st.just(EXT), texts, json_values)
task_infos = st.one_of(
    st.fixed_dictionaries({}, optional={"external_task_id": _external}), json_values
)
_task_ids = st.one_of(
    st.just(TASK_ID), st.text(min_size=1, max_size=12), st.integers(), huge_ints,
    st.sampled_from(["", " ", "@SK@", "@TOKEN@", "@AUTH@"]), texts, json_values,
)
_statuses = st.one_of(
    st.sampled_from(["submitted", "processing", "succeed", "succeeded", "failed"]),
    st.sampled_from(["SUCCEED", "exploded", "", " failed"]),
    json_values,
)
_task_extras: dict[str, st.SearchStrategy[Any]] = {
    "task_status_msg": st.one_of(texts, json_values),
    "task_info": task_infos,
    "task_result": task_results,
    "created_at": st.one_of(st.integers(), huge_ints, json_values),
    "updated_at": json_values,
}
_good_entry = st.fixed_dictionaries(
    {"url": st.sampled_from(["https://cdn.test/a.mp4", "https://cdn.test/0.png?sig=x%20y"])},
    optional={"index": st.one_of(st.integers(-2, 9), st.sampled_from(["0", "1"])),
              "id": st.text(max_size=8), "duration": st.sampled_from(["5.1", 5.1, None])},
)
#: Documented shapes with free values: the success path, including assets, must be reached.
good_tasks = st.fixed_dictionaries(
    {
        "task_id": st.one_of(st.just(TASK_ID), st.text(min_size=1, max_size=12),
                             st.integers(0, 2**63)),
        "task_status": st.sampled_from(["submitted", "processing", "succeed", "failed"]),
    },
    optional={
        "task_status_msg": texts,
        "task_info": st.fixed_dictionaries({"external_task_id": st.one_of(st.just(EXT), texts)}),
        "task_result": st.fixed_dictionaries(
            {}, optional={"videos": st.lists(_good_entry, max_size=3),
                          "images": st.lists(_good_entry, max_size=3)},
        ),
        "created_at": st.integers(0, 2**53),
    },
)
task_objects = st.one_of(
    good_tasks,
    # mostly well-formed, with junk where the documents promise a shape
    st.fixed_dictionaries(
        {"task_id": st.one_of(st.just(TASK_ID), _task_ids), "task_status": _statuses},
        optional=_task_extras,
    ),
    st.fixed_dictionaries(
        {}, optional={"task_id": _task_ids, "task_status": _statuses, **_task_extras}
    ),
    json_values,
)
data_values = st.one_of(task_objects, st.lists(task_objects, max_size=4), json_values)

_good_head: dict[str, Any] = {"code": 0, "message": "SUCCEED", "request_id": "req-1"}
envelopes = st.builds(
    lambda head, rest: {**head, **rest},
    st.sampled_from([{}, _good_head, _good_head, {"code": 1303, "message": "over limit"}]),
    st.fixed_dictionaries(
        {},
        optional={
            "code": codes,
            "message": st.one_of(texts, json_values),
            "request_id": st.one_of(texts, json_values),
            "data": data_values,
        },
    ),
)


def _dump(document: object, ensure_ascii: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    return _dump(draw(st.one_of(envelopes, envelopes, json_values)), draw(st.booleans()))


def good_envelopes(page: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Kling's success envelope around a plausible ``data``: a page of tasks or one task."""
    tasks = st.one_of(good_tasks, task_objects)
    pages = st.lists(tasks, max_size=4)
    return st.builds(
        lambda head, rest, data: {**head, **rest, "data": data},
        st.sampled_from([_good_head, {"code": 0}, {"code": "0", "request_id": "r"}, {}]),
        st.fixed_dictionaries({}, optional={"message": texts, "request_id": texts}),
        st.one_of(pages, tasks) if page else st.one_of(tasks, pages),
    )


@st.composite
def truncated_json(draw: st.DrawFn) -> bytes:
    body = draw(json_bodies())
    return body[: draw(st.integers(0, max(len(body) - 1, 0)))]


html_pages = st.builds(
    lambda title, text: (
        f"<!DOCTYPE html><html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p><hr>nginx</body></html>"
    ).encode("utf-8", "surrogatepass"),
    st.sampled_from(["502 Bad Gateway", "404 Not Found", "Just a moment...", "@TOKEN@"]),
    texts,
)
_CLOSERS = bytes.maketrans(b"[{", b"]}")
nested_bodies = st.builds(
    lambda depth, opener, closed: opener * depth + (opener.translate(_CLOSERS) * depth
                                                     if closed else b""),
    st.integers(1, 5000),
    st.sampled_from([b"[", b'{"code":[', b'{"data":{"x":[']),
    st.booleans(),
)

bodies = st.one_of(
    json_bodies(),
    json_bodies(),
    truncated_json(),
    st.just(b""),
    st.binary(max_size=64),
    texts.map(lambda s: s.encode("utf-8", "surrogatepass")),
    html_pages,
    nested_bodies,
    st.sampled_from(
        [b'{"code": ' + b"9" * 5000 + b"}", b'{"code": 1303, "message": "x"', b"null", b"NaN",
         b'"SUCCEED"', b"[]", b"{}", b'{"code": Infinity}', b"\xef\xbb\xbf{}", b"\x00" * 8]
    ),
)

_COMMON_STATUSES = [200, 201, 400, 401, 403, 404, 429, 500, 502, 503, 504]
statuses = st.one_of(st.sampled_from(_COMMON_STATUSES), st.integers(100, 599))

_header_bytes = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=30,
).map(lambda s: s.encode("latin-1"))
_http_dates = st.integers(0, 253_402_300_799).map(
    lambda t: email.utils.formatdate(t, usegmt=True).encode()
)
_retry_values = st.one_of(
    st.integers(-(10**6), 10**12).map(lambda n: str(n).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
    _http_dates,
    st.sampled_from(
        [b"", b" ", b"nan", b"inf", b"-inf", b"1e999", b"soon", b"0", b"-5", b"1_000",
         b"Mon, 01 Jan 0001 00:00:00 -0000", b"Fri, 31 Dec 9999 23:59:59 -2359",
         b"Tue, 30 Feb 2021 00:00:00 GMT", b"Mon, 01 Jan 99999 00:00:00 GMT"]
    ),
    _header_bytes,
)
_header_pairs = st.one_of(
    st.tuples(st.sampled_from(["Retry-After", "retry-after-ms"]), _retry_values),
    st.tuples(
        st.just("Content-Type"),
        st.sampled_from([b"application/json", b"text/html; charset=utf-8", b"text/plain",
                         b"application/json; charset=utf-16", b";;;"]) | _header_bytes,
    ),
    st.tuples(
        st.just("Content-Encoding"),
        st.sampled_from([b"gzip", b"deflate", b"br", b"zstd", b"identity", b"gzip, br",
                         b"x-junk"]),
    ),
    st.tuples(
        st.just("Location"),
        st.sampled_from([b"https://kling.test/elsewhere", b"/v1/other", b"http://[bad",
                         b"ftp://x", b"https://@TOKEN@@evil.test/", b"//"]) | _header_bytes,
    ),
    st.tuples(
        st.one_of(st.sampled_from(["X-Request-Id", "Set-Cookie", "Server", "Www-Authenticate"]),
                  st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)),
        _header_bytes,
    ),
)
header_lists = st.lists(_header_pairs, max_size=4)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, bytes], ...]
    body: bytes


_retry_headers = st.lists(
    st.tuples(st.sampled_from(["Retry-After", "retry-after-ms"]), _retry_values), max_size=2
)


def replies(page: bool = False) -> st.SearchStrategy[Reply]:
    return st.one_of(
        # what Kling plausibly says: a success envelope, or an error envelope on a usual status
        st.builds(
            Reply,
            st.sampled_from([200, 200, 201]),
            _retry_headers.map(tuple),
            st.builds(_dump, good_envelopes(page), st.booleans()),
        ),
        st.builds(
            Reply,
            st.sampled_from(_COMMON_STATUSES),
            _retry_headers.map(tuple),
            st.builds(_dump, envelopes, st.booleans()),
        ),
        # what anything between us and Kling may say
        st.builds(Reply, statuses, header_lists.map(tuple), bodies),
    )


#: Kling saying "no such task" to a query, in the ways it does (and a 404 with no code).
not_found_replies = st.builds(
    Reply,
    st.sampled_from([400, 404, 200]),
    _retry_headers.map(tuple),
    st.builds(
        lambda code, message: _dump({"code": code, "message": message, "request_id": "r"}, True),
        st.sampled_from([1201, 1203, "1203", 0, None]),
        texts,
    ),
)
#: A lookup's answers: its query by path (often "not found"), then the list pages it scans.
lookup_answers = st.builds(
    lambda first, pages: [first, *pages],
    st.one_of(not_found_replies, replies()),
    st.lists(replies(page=True), min_size=1, max_size=3),
)


def _fill(template: bytes, request: httpx.Request) -> bytes:
    header = request.headers.get("Authorization", "")
    token = header.partition(" ")[2]
    for marker, value in zip(MARKERS, (header, token, SK, AK, API_KEY), strict=True):
        template = template.replace(marker.encode(), value.encode())
    return template


@dataclass
class Served:
    path: str
    status: int
    body: bytes
    method: str = "GET"


@dataclass(frozen=True)
class Raise:
    """A transport failure; ``message`` may carry markers, filled in like a body."""

    exc_type: type[Exception]
    message: str


Step = Reply | Raise


@dataclass
class Server:
    """Plays ``steps`` in order (the last one repeats); records what each request got."""

    steps: list[Step]
    served: list[Served] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Raise):
            text = _fill(step.message.encode("utf-8", "surrogatepass"), request)
            raise step.exc_type(text.decode("utf-8", "surrogatepass"))
        body = _fill(step.body, request)
        headers = [(name.encode(), _fill(value, request)) for name, value in step.headers]
        self.served.append(Served(request.url.path, step.status, body, request.method))
        return httpx.Response(step.status, headers=headers, content=body)

    @property
    def last(self) -> Served:
        return self.served[-1]


@dataclass
class Harness:
    provider: KlingProvider
    server: Server
    use_jwt: bool
    tokens: list[str]

    def secrets(self) -> tuple[str, ...]:
        """The credentials this provider holds: it can only be asked to hide what it knows."""
        return (SK, AK, *self.tokens) if self.use_jwt else (API_KEY,)


def harness(server: Server, use_jwt: bool, api: str = "auto") -> Harness:
    tokens: list[str] = []
    auth: httpx.Auth = (
        JwtAuth(AK, SK, clock=lambda: NOW, on_token=tokens.append) if use_jwt
        else ApiKeyAuth(API_KEY)
    )
    provider = KlingProvider(
        "https://kling.test", auth, transport=httpx.MockTransport(server), clock=lambda: NOW,
        lookup_pages=3, api=api,
    )
    return Harness(provider, server, use_jwt, tokens)


def request_for(kind: Kind) -> TaskRequest:
    fields: dict[str, Any] = {"model": "kling-v2-5-turbo", "prompt": "a red fox in snow"}
    if kind is Kind.IMAGE:
        fields["n"] = 1
    else:
        fields["duration"] = 5
    return TaskRequest(kind, fields, expected_assets=1)


async def call(h: Harness, op: Op, kind: Kind) -> object:
    provider = h.provider
    if op is Op.CREATE:
        return await provider.create(request_for(kind), EXT)
    if op is Op.QUERY:
        return await provider.query(request_of(kind), TASK_ID)
    if op is Op.LOOKUP:
        # Small pages, so that scanning several of them is exercised too.
        with mock.patch.object(kling, "MAX_PAGE_SIZE", 2):
            return await provider.lookup(request_of(kind), EXT, sent_after=NOW)
    return await provider.list_tasks(kind, 1, 30)


# -- the oracle --------------------------------------------------------------------------------

def envelope_of(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def code_of(envelope: dict[str, Any] | None) -> int | None:
    """What Kling's code is, read the obvious way: an int, or a string of ASCII digits."""
    value = None if envelope is None else envelope.get("code")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
        return int(value)
    return None


def says_not_found(served: Served) -> bool:
    """Kling's ways of saying "no such task" to a query (kling-api.md: 404/1203 and 400/1201)."""
    envelope = envelope_of(served.body)
    if envelope is None:
        return False  # a bare 404 page is a wrong URL or a proxy, not an answer about the task
    code = code_of(envelope)
    return code in (1201, 1203) or (served.status == 404 and (code not in CODES or code == 1202))


def is_success(served: Served) -> bool:
    envelope = envelope_of(served.body)
    return 200 <= served.status <= 299 and envelope is not None and code_of(envelope) in (0, None)


def created_before_send(entry: object) -> bool:
    """A list entry created (Kling's clock, ms) before any task of a create sent at NOW."""
    if not isinstance(entry, dict):
        return False
    created = entry.get("created_at")
    return (isinstance(created, int | float) and not isinstance(created, bool)
            and 0 < created < (NOW - kling.LOOKUP_CLOCK_MARGIN) * 1000)


def assert_text(text: str, secrets: tuple[str, ...]) -> None:
    text.encode("utf-8")  # printable to a UTF-8 console or report without a crash
    for secret in secrets:
        assert secret not in text


def check_info(info: ErrorInfo, secrets: tuple[str, ...]) -> None:
    assert isinstance(info, ErrorInfo)
    assert isinstance(info.category, Category) and info.category in set(Category)
    assert isinstance(info.scope, Scope)
    assert isinstance(info.message, str) and info.message.strip()
    assert isinstance(info.hint, str) and info.hint.strip()
    assert type(info.retryable) is bool
    for text in (info.message, info.hint):
        assert_text(text, secrets)


def check_task(task: object, kind: Kind, secrets: tuple[str, ...]) -> Task:
    assert isinstance(task, Task)
    assert isinstance(task.task_id, str) and task.task_id
    task.task_id.encode("utf-8")  # the next query puts it in a URL path
    assert isinstance(task.status, TaskStatus)
    assert (task.failure is not None) == (task.status is TaskStatus.FAILED)
    if task.failure is not None:
        check_info(task.failure, secrets)  # it reaches the report: Kling's text, cleaned
    for text in (task.message, task.request_id):  # Kling's free text: cleaned
        if text is not None:
            assert_text(text, secrets)
    if task.external_task_id is not None:  # an id: kept as sent, but always printable
        assert_text(task.external_task_id, ())
    assert isinstance(task.assets, tuple)
    # Indexes name the files (<item>/<index>.<ext>): never negative, never shared.
    indexes = [asset.index for asset in task.assets]
    assert len(set(indexes)) == len(indexes), indexes
    for asset in task.assets:
        assert isinstance(asset, Asset)
        assert type(asset.index) is int and 0 <= asset.index <= MAX_ASSET_INDEX
        assert isinstance(asset.url, str) and asset.url and asset.url.encode("utf-8")
        assert asset.media == kind.media
    return task


def check_error(exc: BaseException, op: Op, h: Harness) -> ProviderError:
    assert type(exc) is ProviderError, repr(exc)
    secrets = h.secrets()
    check_info(exc.info, secrets)
    for text in (str(exc), repr(exc)):
        assert_text(text, secrets)
    assert exc.retry_after is None or (math.isfinite(exc.retry_after) and exc.retry_after >= 0)
    assert exc.request_id is None or isinstance(exc.request_id, str)
    assert type(exc.sent) is bool and type(exc.ambiguous) is bool
    if op is not Op.CREATE:
        assert not exc.ambiguous
    if op is not Op.QUERY:
        assert not exc.not_found  # lookup and list never turn absence into an error
    return exc


def check_answer_error(exc: ProviderError, op: Op, h: Harness) -> None:
    """An error built from an HTTP answer agrees with what the answer said."""
    served = h.server.last
    info = exc.info
    assert exc.sent
    assert info.http_status == served.status
    code = code_of(envelope_of(served.body))
    assert exc.over_capacity is (code == 1303)
    if exc.not_found:
        assert says_not_found(served)
    elif code is not None and code in CODES:
        assert (info.category, info.code) == (CODES[code].category, code)
    if op is Op.CREATE:
        if served.status >= 500:
            assert exc.ambiguous
        if not exc.ambiguous:
            # Only a definite refusal may let the engine resubmit: anything else may have
            # created a (paid) task.
            assert 400 <= served.status <= 499 or (
                code is not None and code in CODES and not CODES[code].may_have_committed
            ), (served.status, code)


async def run_answers(op: Op, kind: Kind, answers: list[Reply], use_jwt: bool) -> None:
    h = harness(Server(list[Step](answers)), use_jwt)
    try:
        result = await call(h, op, kind)
    except ProviderError as exc:
        check_error(exc, op, h)
        answered = exc.info.http_status is not None
        if answered:
            check_answer_error(exc, op, h)
        # --hypothesis-show-statistics: which outcomes the answers reached
        event(f"error: {exc.info.category}{'' if answered else ' (no answer)'}"
              f"{' not_found' if exc.not_found else ''}{' 1303' if exc.over_capacity else ''}")
        return
    except BaseException as exc:  # pragma: no cover - the property failing
        raise AssertionError(f"{type(exc).__name__} escaped the provider: {exc!r}") from exc
    finally:
        await h.provider.aclose()
    event("returned None" if result is None else f"returned {type(result).__name__}")
    secrets = h.secrets()
    if op is Op.LIST:
        assert isinstance(result, list)
        for task in result:
            check_task(task, kind, secrets)
        assert is_success(h.server.last)
    elif op is Op.LOOKUP:
        queries = [s for s in h.server.served if s.path.endswith("/" + EXT)]
        if result is None:
            assert says_not_found(queries[-1]), queries[-1]
            # Absence proven by the last page read: the end of the list, or tasks created
            # before the send (minus the clock margin). Never just "not on the pages read".
            last = h.server.last
            assert not last.path.endswith("/" + EXT) and is_success(last), last
            envelope = envelope_of(last.body)
            assert envelope is not None
            page = envelope.get("data")
            assert isinstance(page, list)
            assert len(page) < 2 or any(created_before_send(entry) for entry in page), page
        else:
            task = check_task(result, kind, secrets)
            assert task.external_task_id in (None, EXT)
            assert is_success(h.server.last)
    else:
        check_task(result, kind, secrets)
        assert is_success(h.server.last)


# -- properties: answers -----------------------------------------------------------------------

kinds = st.sampled_from(list(Kind))


@pytest.mark.anyio
@PROPERTY
@given(kind=kinds, answer=replies(), use_jwt=st.booleans())
async def test_create_survives_any_answer(kind: Kind, answer: Reply, use_jwt: bool) -> None:
    await run_answers(Op.CREATE, kind, [answer], use_jwt)


@pytest.mark.anyio
@PROPERTY
@given(kind=kinds, answer=replies(), use_jwt=st.booleans())
async def test_query_survives_any_answer(kind: Kind, answer: Reply, use_jwt: bool) -> None:
    await run_answers(Op.QUERY, kind, [answer], use_jwt)


@pytest.mark.anyio
@HEAVY
@given(kind=kinds, answers=lookup_answers, use_jwt=st.booleans())
async def test_lookup_survives_any_answers(kind: Kind, answers: list[Reply], use_jwt: bool) -> None:
    await run_answers(Op.LOOKUP, kind, answers, use_jwt)


@pytest.mark.anyio
@PROPERTY
@given(kind=kinds, answer=replies(page=True), use_jwt=st.booleans())
async def test_list_survives_any_answer(kind: Kind, answer: Reply, use_jwt: bool) -> None:
    await run_answers(Op.LIST, kind, [answer], use_jwt)


@pytest.mark.anyio
@PROPERTY
@given(
    indexes=st.lists(st.one_of(st.integers(-3, 3), huge_ints, st.booleans(), st.none(), texts),
                     min_size=1, max_size=9),
    status=st.sampled_from(["succeed", "processing", "failed"]),
    use_jwt=st.booleans(),
)
async def test_image_indexes_always_name_distinct_files(
    indexes: list[object], status: str, use_jwt: bool
) -> None:
    """Whatever indexes Kling numbers its images with (negative, repeated, huge, missing),
    the task's assets have distinct indexes >= 0: each names its own file."""
    images = [{"url": f"https://cdn.test/{n}.png", **({} if i is None else {"index": i})}
              for n, i in enumerate(indexes)]
    data = {"task_id": TASK_ID, "task_status": status, "task_result": {"images": images}}
    body = _dump({**_good_head, "data": data}, True)
    h = harness(Server([Reply(200, (), body)]), use_jwt)
    async with h.provider:
        task = check_task(await call(h, Op.QUERY, Kind.IMAGE), Kind.IMAGE, h.secrets())
    assert [a.url for a in task.assets] == [image["url"] for image in images]  # Kling's order
    valid = [i for i in indexes if type(i) is int and 0 <= i <= MAX_ASSET_INDEX]
    if len(valid) == len(indexes) and len(set(valid)) == len(valid):
        assert [a.index for a in task.assets] == indexes  # usable indexes are kept as sent


_NOT_FOUND = Reply(404, (), b'{"code": 1203, "message": "Task not found", "request_id": "r"}')
_1303_CODES = st.sampled_from([1303, "1303", " 1303 "])


@pytest.mark.anyio
@HEAVY
@given(
    op=st.sampled_from(list(Op)),
    kind=kinds,
    status=statuses,
    headers=header_lists.filter(lambda hs: all(n != "Content-Encoding" for n, _ in hs)),
    code=_1303_CODES,
    message=st.one_of(texts, json_values),
    data=st.one_of(st.none(), task_objects, json_values),
    use_jwt=st.booleans(),
    path_absent=st.booleans(),
)
async def test_1303_always_signals_over_capacity(
    op: Op, kind: Kind, status: int, headers: list[tuple[str, bytes]], code: object,
    message: object, data: object, use_jwt: bool, path_absent: bool,
) -> None:
    body = json.dumps({"code": code, "message": message, "data": data}).encode()
    steps: list[Step] = [Reply(status, tuple(headers), body)]
    if op is Op.LOOKUP and path_absent:
        steps.insert(0, _NOT_FOUND)  # the 1303 comes from the list scan
    h = harness(Server(steps), use_jwt)
    async with h.provider:
        with pytest.raises(ProviderError) as caught:
            await call(h, op, kind)
    error = check_error(caught.value, op, h)
    if error.info.http_status is None:
        # A redirect with an unusable Location fails inside httpx, before any answer is read.
        assert status in (301, 302, 303, 307, 308)
        return
    assert error.over_capacity and not error.not_found
    assert error.info.category is Category.RATE_LIMIT and error.info.retryable
    assert error.info.code == 1303


# -- properties: transport failures ------------------------------------------------------------

def _subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


TRANSPORT_ERRORS = sorted(
    {*_subclasses(httpx.TransportError)}, key=lambda cls: cls.__name__
)
#: What httpx does not wrap when it comes from a transport's read/write path (httpcore maps
#: OSError only while connecting), and what a custom transport may raise as is.
OS_ERRORS: list[type[OSError]] = [
    OSError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
    ConnectionRefusedError, ssl.SSLError, socket.gaierror, TimeoutError,
]
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError,
              httpx.UnsupportedProtocol)
TIMEOUTS = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.TimeoutException, TimeoutError)


@pytest.mark.anyio
@PROPERTY
@given(
    op=st.sampled_from(list(Op)),
    kind=kinds,
    exc_type=st.sampled_from([*TRANSPORT_ERRORS, *OS_ERRORS]),
    message=texts,
    use_jwt=st.booleans(),
    path_absent=st.booleans(),
)
async def test_transport_failures_are_classified(
    op: Op, kind: Kind, exc_type: type[Exception], message: str, use_jwt: bool,
    path_absent: bool,
) -> None:
    steps: list[Step] = [_NOT_FOUND] if op is Op.LOOKUP and path_absent else []
    h = harness(Server([*steps, Raise(exc_type, message)]), use_jwt)
    async with h.provider:
        with pytest.raises(ProviderError) as caught:
            await call(h, op, kind)
    error = check_error(caught.value, op, h)
    assert error.info.http_status is None and not error.over_capacity and not error.not_found
    assert exc_type.__name__ in error.info.message
    if issubclass(exc_type, NEVER_SENT):
        assert (error.sent, error.ambiguous) == (False, False)
        assert error.info.category is Category.NETWORK
    else:
        assert error.sent and error.ambiguous is (op is Op.CREATE)
        expected = Category.TIMEOUT if issubclass(exc_type, TIMEOUTS) else Category.NETWORK
        assert error.info.category is expected


# -- API 2.0 -----------------------------------------------------------------------------------

V2_KINDS = (Kind.TEXT2VIDEO, Kind.IMAGE2VIDEO, Kind.OMNI_VIDEO)
#: Models served on API 2.0, by kind (the provider runs with api="v2").
V2_MODELS = {Kind.TEXT2VIDEO: "kling-3.0-turbo", Kind.IMAGE2VIDEO: "kling-3.0-turbo",
             Kind.OMNI_VIDEO: "kling-video-o1"}

_v2_ids = st.one_of(st.just(TASK_ID), st.text(min_size=1, max_size=12), st.integers(0, 2**63),
                    st.sampled_from(["", "a,b", "@TOKEN@"]), json_values)
_v2_statuses = st.one_of(
    st.sampled_from(["submitted", "processing", "succeeded", "failed", "succeed"]),
    st.sampled_from(["SUCCEEDED", "queued", ""]), json_values,
)
_output = st.one_of(
    st.fixed_dictionaries(
        {"url": st.one_of(st.just("https://cdn.test/a.mp4"), texts)},
        optional={"type": st.one_of(st.sampled_from(["video", "image", "audio"]), json_values),
                  "id": json_values, "duration": json_values, "watermark_url": json_values},
    ),
    json_values,
)
_billing = st.one_of(
    st.lists(st.one_of(
        st.fixed_dictionaries({}, optional={
            "charge_type": st.one_of(st.just("unit"), texts),
            "amount": st.one_of(st.sampled_from(["2.5", "string", "-1", "nan", "1e999"]),
                                st.floats(), st.integers(), huge_ints, json_values),
            "package_type": texts}),
        json_values), max_size=3),
    json_values,
)
_v2_extras: dict[str, st.SearchStrategy[Any]] = {
    "message": st.one_of(texts, json_values),
    "external_id": st.one_of(st.just(EXT), texts, json_values),
    "create_time": st.one_of(st.integers(), huge_ints, json_values),
    "update_time": st.one_of(st.integers(), json_values),
    "outputs": st.one_of(st.lists(_output, max_size=3), json_values),
    "billing": _billing,
}
v2_tasks = st.one_of(
    st.fixed_dictionaries(
        {"id": st.one_of(st.just(TASK_ID), st.integers(0, 2**63)),
         "status": st.sampled_from(["submitted", "processing", "succeeded", "failed"])},
        optional={"message": texts, "external_id": st.just(EXT),
                  "create_time": st.integers(0, 2 * 10**12),
                  "outputs": st.lists(st.fixed_dictionaries(
                      {"type": st.just("video"), "url": st.just("https://cdn.test/a.mp4")}),
                      max_size=2),
                  "billing": st.just([{"charge_type": "unit", "amount": "2.5"}])},
    ),
    st.fixed_dictionaries({"id": _v2_ids, "status": _v2_statuses}, optional=_v2_extras),
    st.fixed_dictionaries({}, optional={"id": _v2_ids, "status": _v2_statuses, **_v2_extras}),
    json_values,
)
window_pages = st.fixed_dictionaries(
    {},
    optional={
        "result": st.one_of(st.lists(v2_tasks, max_size=3), json_values),
        "has_more": st.one_of(st.booleans(), json_values),
        "next_cursor": st.one_of(st.sampled_from(["c1", "c2", ""]), st.none(), json_values),
        "count": json_values,
    },
)
v2_data = st.one_of(v2_tasks, st.lists(v2_tasks, max_size=4), window_pages, json_values)


def success(data: st.SearchStrategy[Any]) -> st.SearchStrategy[Reply]:
    """Kling's success envelope around ``data``."""
    envelope = st.builds(lambda head, value: {**head, "data": value},
                         st.sampled_from([_good_head, {"code": 0}, {}]), data)
    return st.builds(Reply, st.sampled_from([200, 200, 201]), _retry_headers.map(tuple),
                     st.builds(_dump, envelope, st.booleans()))


#: Documented shapes with free values, so that the success paths are reached too.
good_v2_tasks = st.fixed_dictionaries(
    {"id": st.just(TASK_ID),
     "status": st.sampled_from(["submitted", "processing", "succeeded", "failed"])},
    optional={"message": texts, "external_id": st.sampled_from([EXT, "other"]),
              "create_time": st.integers(0, 2 * 10**12), "update_time": st.integers(0, 10**13),
              "outputs": st.lists(st.fixed_dictionaries(
                  {"url": st.just("https://cdn.test/a.mp4")},
                  optional={"type": st.sampled_from(["video", "image"])}), max_size=2),
              "billing": _billing},
)
good_reads = st.one_of(
    st.lists(good_v2_tasks, min_size=1, max_size=2),
    st.lists(st.one_of(good_v2_tasks, v2_tasks), max_size=3),
)
good_windows = st.builds(
    lambda result, more, cursor: {"result": result, "count": len(result), "has_more": more,
                                  "next_cursor": cursor},
    good_reads, st.booleans(), st.sampled_from(["c1", "c2", None]),
)


def v2_replies() -> st.SearchStrategy[Reply]:
    return st.one_of(
        success(st.one_of(good_reads, good_windows, good_v2_tasks)),
        success(st.one_of(good_reads, good_windows)),
        success(v2_data),
        replies(),
    )


#: A v2 lookup's answers: its batch read by external id, then the window pages it reads.
v2_lookup_answers = st.builds(
    lambda first, pages: [first, *pages],
    st.one_of(success(good_reads), v2_replies()),
    st.lists(st.one_of(success(good_windows), v2_replies()), min_size=1, max_size=3),
)


def v2_request(kind: Kind) -> TaskRequest:
    fields: dict[str, Any] = {"model": V2_MODELS[kind], "prompt": "a red fox", "duration": 5,
                              "mode": "pro"}
    return TaskRequest(kind, fields, expected_assets=1)


def entry_ids(served: Served, field_name: str) -> list[object]:
    envelope = envelope_of(served.body)
    data = envelope.get("data") if envelope is not None else None
    if isinstance(data, dict):
        data = data.get("result")
    if not isinstance(data, list):
        return []
    return [entry.get(field_name) for entry in data if isinstance(entry, dict)]


class V2Op(enum.Enum):
    CREATE = "create"
    QUERY = "query"
    LOOKUP = "lookup"
    QUERY_MANY = "query_many"


async def run_v2(op: V2Op, kind: Kind, answers: list[Reply], use_jwt: bool) -> None:
    h = harness(Server(list[Step](answers)), use_jwt, api="v2")
    request = v2_request(kind)
    provider = h.provider
    try:
        if op is V2Op.CREATE:
            result: object = await provider.create(request, EXT)
        elif op is V2Op.QUERY:
            result = await provider.query(request, TASK_ID)
        elif op is V2Op.LOOKUP:
            result = await provider.lookup(request, EXT, sent_after=NOW - 60)
        else:
            key = provider.batch_key(request)
            assert key is not None
            result = await provider.query_many(key, [TASK_ID, "t-2"])
    except ProviderError as exc:
        # Only a create may be ambiguous, only a query by task id "not found".
        as_op = {V2Op.CREATE: Op.CREATE, V2Op.QUERY: Op.QUERY}.get(op, Op.LIST)
        check_error(exc, as_op, h)
        if exc.not_found:
            # API 2.0 absence is a read by task id that answered without the task, never an
            # error answer.
            assert is_success(h.server.last), h.server.last
            assert TASK_ID not in entry_ids(h.server.last, "id")
        elif exc.info.http_status is not None:
            check_answer_error(exc, as_op, h)
        event(f"v2 {op.value} error: {exc.info.category}{' not_found' if exc.not_found else ''}")
        return
    except BaseException as exc:  # pragma: no cover - the property failing
        raise AssertionError(f"{type(exc).__name__} escaped the provider: {exc!r}") from exc
    finally:
        await h.provider.aclose()
    event(f"v2 {op.value} returned {type(result).__name__}")
    secrets = h.secrets()
    assert all(not s.path.startswith("/v1/") for s in h.server.served)
    if op is V2Op.QUERY_MANY:
        assert isinstance(result, dict) and set(result) <= {TASK_ID, "t-2"}
        for ident, task in result.items():
            assert check_task(task, kind, secrets).task_id == ident
    elif op is V2Op.LOOKUP and result is None:
        # Absence proven only by a window list read to its end.
        last = h.server.last
        assert (last.method, last.path) == ("POST", "/tasks") and is_success(last), last
        envelope = envelope_of(last.body)
        assert envelope is not None and envelope["data"]["has_more"] is False
        assert EXT not in entry_ids(last, "external_id")
    else:
        task = check_task(result, kind, secrets)
        if op is V2Op.LOOKUP:
            assert task.external_task_id == EXT
        if op is V2Op.QUERY:
            assert task.task_id == TASK_ID
        assert is_success(h.server.last)


v2_kinds = st.sampled_from(V2_KINDS)


@pytest.mark.anyio
@PROPERTY
@given(op=st.sampled_from([V2Op.CREATE, V2Op.QUERY, V2Op.QUERY_MANY]), kind=v2_kinds,
       answer=v2_replies(), use_jwt=st.booleans())
async def test_v2_calls_survive_any_answer(
    op: V2Op, kind: Kind, answer: Reply, use_jwt: bool
) -> None:
    await run_v2(op, kind, [answer], use_jwt)


@pytest.mark.anyio
@HEAVY
@given(kind=v2_kinds, answers=v2_lookup_answers, use_jwt=st.booleans())
async def test_v2_lookup_survives_any_answers(
    kind: Kind, answers: list[Reply], use_jwt: bool
) -> None:
    await run_v2(V2Op.LOOKUP, kind, answers, use_jwt)


@pytest.mark.anyio
@PROPERTY
@given(answer=st.one_of(v2_replies(), replies()), use_jwt=st.booleans(),
       exc_type=st.one_of(st.none(), st.sampled_from([*TRANSPORT_ERRORS, *OS_ERRORS])))
async def test_account_warning_never_raises(
    answer: Reply, use_jwt: bool, exc_type: type[Exception] | None
) -> None:
    steps: list[Step] = [answer if exc_type is None else Raise(exc_type, "boom")]
    h = harness(Server(steps), use_jwt)
    async with h.provider:
        warning = await h.provider.account_warning()
    assert warning is None or isinstance(warning, str)
    if warning is not None:
        assert is_success(h.server.last)
