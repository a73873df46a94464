"""Fault profiles of the simulator: seeded and reproducible, every fault of the issue observable,
and the ``simulate`` command that serves them.

Task lifecycles run on an injected clock; the only real waits are the slow replies (shortened
with ``slow_reply``) against a short client timeout, and the command's start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import io
import math
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from orchestrator.cli.simulate import add_simulate_parser, cmd_simulate
from orchestrator.providers.kling.auth import JwtAuth
from orchestrator.simulator import (
    PROFILES,
    TASK_FAILURE_MESSAGES,
    FaultRule,
    Profile,
    SimConfig,
    Simulator,
    make_config,
)
from orchestrator.simulator.faults import FaultBook
from orchestrator.simulator.profiles import CLOCK_SKEW_TRIPPING_NBF

API_KEY = {"Authorization": "Bearer sim-api-key"}
T2V = "/v1/videos/text2video"
IMG = "/v1/images/generations"
PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("kling-simulator")]
    assert leftover == []


def http_client(base_url: str = "", **options: Any) -> httpx.Client:
    options.setdefault("timeout", 5.0)
    return httpx.Client(base_url=base_url, verify=PLAIN_HTTP, **options)


def body(path: str, index: int) -> dict[str, Any]:
    if path == IMG:
        return {
            "model_name": "kling-v2-1",
            "prompt": f"mug {index}",
            "n": 3,
            "external_task_id": f"ext-{index}",
        }
    return {
        "model_name": "kling-v2-5-turbo",
        "prompt": f"cat {index}",
        "duration": "5",
        "external_task_id": f"ext-{index}",
    }


def code_of(response: httpx.Response) -> int:
    return int(response.json()["code"])


def retry_after_form(response: httpx.Response) -> str:
    value = response.headers.get("Retry-After")
    if value is None:
        return "none"
    return "seconds" if value.isdigit() else "date"


def jwt_token(**claims: Any) -> str:
    now = time.time()
    payload = {"iss": "sim-access-key", "exp": now + 1800, "nbf": now - 5, **claims}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, "sim-secret-key", algorithm="HS256", headers={"typ": "JWT"})


def jwt_auth(tokens: list[str] | None = None) -> JwtAuth:
    return JwtAuth(
        "sim-access-key", "sim-secret-key", on_token=(tokens if tokens is not None else []).append
    )


# --- profiles as data ----------------------------------------------------------------------


def test_every_profile_builds_a_config() -> None:
    required = {"clean", "flaky", "rate-limited", "task-failures", "billing", "auth", "chaos"}
    assert required <= set(PROFILES)
    for name, profile in PROFILES.items():
        assert isinstance(profile, Profile)
        assert profile.name == name
        assert profile.description
        config = make_config(name, seed=3)
        assert isinstance(config, SimConfig)
        assert (config.seed, config.port, config.faults) == (3, 0, profile.faults)
    assert PROFILES["clean"].faults == ()
    assert make_config("billing", seed=0).billing_after == 20
    assert make_config("clock-skew", seed=0).clock_skew == CLOCK_SKEW_TRIPPING_NBF


def test_chaos_has_no_billing_stop_and_short_tasks() -> None:
    config = make_config("chaos", seed=0)
    assert config.billing_after is None
    assert config.concurrency_slots is None
    assert config.task_duration[1] <= 0.5
    assert all(rule.probability <= 0.01 for rule in config.faults)
    delays = {rule.delay for rule in config.faults if rule.effect == "delay"}
    assert delays == {2.0}
    assert "2 s" in PROFILES["chaos"].description


def test_make_config_overrides_and_unknown_names() -> None:
    config = make_config(
        "flaky",
        seed=1,
        port=8123,
        task_duration=(0.1, 0.2),
        slow_reply=0.5,
        concurrency_slots=7,
    )
    assert (config.port, config.task_duration, config.concurrency_slots) == (8123, (0.1, 0.2), 7)
    assert {r.delay for r in config.faults if r.effect == "delay"} == {0.5}
    assert make_config("clean", seed=0).task_duration == SimConfig().task_duration
    packs = make_config("clean", seed=0, concurrency_slots=1, image_concurrency_slots=4)
    assert (packs.concurrency_slots, packs.image_concurrency_slots) == (1, 4)
    with pytest.raises(ValueError, match=r"unknown simulator profile 'nope'.*clean.*chaos"):
        make_config("nope", seed=0)
    with pytest.raises(ValueError, match="slow_reply"):
        Profile(
            name="x",
            description="x",
            faults=(FaultRule(op="query", effect="delay"),),
            slow_reply=1.0,
        )


def test_failure_catalogue_covers_the_kinds() -> None:
    assert {"risk_control", "generation_timeout", "internal_error", "image_invalid"} <= set(
        TASK_FAILURE_MESSAGES
    )
    assert TASK_FAILURE_MESSAGES["image_invalid"] == "Image pixel is invalid"


# --- probability, times, Retry-After ------------------------------------------------------


def draws(book: FaultBook, count: int) -> list[bool]:
    return [book.take("create", "x", frozenset({"error"})) is not None for _ in range(count)]


def test_probability_zero_never_fires_and_one_always() -> None:
    never = FaultBook([FaultRule(op="create", effect="error", probability=0.0)])
    always = FaultBook([FaultRule(op="create", effect="error", probability=1.0)])
    assert not any(draws(never, 2000))
    assert all(draws(always, 2000))
    assert never.fired() == (0,)


def test_probability_is_seeded() -> None:
    rule = FaultRule(op="create", effect="error", probability=0.3)
    first = draws(FaultBook([rule], seed=11), 1000)
    assert first == draws(FaultBook([rule], seed=11), 1000)
    assert first != draws(FaultBook([rule], seed=12), 1000)
    assert 200 < sum(first) < 400


def test_times_caps_a_probabilistic_rule() -> None:
    book = FaultBook([FaultRule(op="create", effect="error", probability=0.5, times=3)])
    assert sum(draws(book, 200)) == 3


def test_rule_validation() -> None:
    for probability in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="probability"):
            FaultRule(op="create", effect="error", probability=probability)
    for seconds in (-1.0, math.inf):
        with pytest.raises(ValueError, match="retry_after_date"):
            FaultRule(op="create", effect="error", retry_after_date=seconds)
    with pytest.raises(ValueError, match="exclusive"):
        FaultRule(op="create", effect="error", retry_after="1", retry_after_date=1.0)


def test_retry_after_date_is_an_http_date_in_the_future() -> None:
    rule = FaultRule(
        op="create", effect="error", http_status=429, code=1302, retry_after_date=3.0, times=1
    )
    assert rule.retry_after_header(1000.2) == email.utils.formatdate(1004, usegmt=True)
    with Simulator(SimConfig(faults=(rule,))) as sim, http_client(sim.url, headers=API_KEY) as c:
        before = time.time()
        response = c.post(T2V, json=body(T2V, 0))
        assert (response.status_code, code_of(response)) == (429, 1302)
        header = response.headers["Retry-After"]
        assert header.endswith(" GMT")
        when = email.utils.parsedate_to_datetime(header).timestamp()
        assert before + 3 <= when <= time.time() + 4
        assert c.post(T2V, json=body(T2V, 1)).status_code == 200  # times=1: spent
        assert sim.stats().faults_fired == {"create error 429/1302 retry_after_date": 1}


# --- reproducibility -------------------------------------------------------------------------


def answer(response: httpx.Response) -> tuple[Any, ...]:
    payload = response.json()
    data = payload.get("data") or {}
    return (
        response.status_code,
        payload["code"],
        payload["request_id"],
        retry_after_form(response),
        data.get("task_id"),
    )


def run_sequence(seed: int) -> list[tuple[Any, ...]]:
    """One fixed sequence of creates, then queries, against chaos on a fake clock."""
    clock = FakeClock()
    config = replace(make_config("chaos", seed=seed, slow_reply=0.0), clock=clock)
    answers: list[tuple[Any, ...]] = []
    with Simulator(config) as sim, http_client(sim.url, headers=API_KEY) as client:
        for i in range(100):
            path = IMG if i % 3 == 0 else T2V
            try:
                answers.append(answer(client.post(path, json=body(path, i))))
            except httpx.TransportError as exc:
                answers.append(("transport", type(exc).__name__))
        clock.advance(1.0)
        for row in sim.stats().tasks:
            path = f"/v1/{row['family']}/{row['task_id']}"
            try:
                response = client.get(path)
            except httpx.TransportError as exc:
                answers.append(("transport", type(exc).__name__))
                continue
            data = response.json().get("data") or {}
            answers.append(
                (
                    *answer(response),
                    data.get("task_status"),
                    data.get("task_status_msg"),
                    str(data.get("task_result")).replace(sim.url, "URL"),
                )
            )
    return answers


def test_same_seed_and_requests_give_the_same_answers() -> None:
    first = run_sequence(5)
    assert first == run_sequence(5)
    assert first != run_sequence(6)
    assert {a[0] for a in first} > {200}  # faults did fire


# --- every fault of the issue, observed --------------------------------------------------


def scaled(config: SimConfig, factor: float, delay_factor: float) -> SimConfig:
    faults = tuple(
        replace(
            r,
            probability=min(1.0, r.probability * (delay_factor if r.effect == "delay" else factor)),
        )
        for r in config.faults
    )
    return replace(config, faults=faults)


def test_chaos_shows_every_per_request_fault() -> None:
    # The chaos rules at 4x their rates (slow replies 2x, they cost time): every kind shows
    # within a few hundred requests for any seed, where the real rates would need thousands.
    clock = FakeClock()
    chaos = make_config("chaos", seed=1, slow_reply=0.15)
    config = replace(scaled(chaos, 4, 2), clock=clock)
    creates: dict[str, tuple[Any, ...]] = {}
    with Simulator(config) as sim, http_client(sim.url, headers=API_KEY, timeout=0.05) as c:
        for i in range(400):
            path = IMG if i % 2 else T2V
            try:
                response = c.post(path, json=body(path, i))
            except httpx.TimeoutException:
                creates[f"ext-{i}"] = ("slow",)
            except httpx.TransportError:
                creates[f"ext-{i}"] = ("dropped",)
            else:
                creates[f"ext-{i}"] = (
                    response.status_code,
                    code_of(response),
                    retry_after_form(response),
                )
        # Slow creates commit after their delay: wait until every create was answered.
        deadline = time.monotonic() + 5
        while True:
            stats = sim.stats()
            if sum(stats.create_answers.values()) == stats.create_requests:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        clock.advance(1.0)
        committed = {row["external_task_id"] for row in stats.tasks}
        queries: Counter[object] = Counter()
        outcomes: Counter[tuple[Any, ...]] = Counter()
        for row in stats.tasks:
            try:
                response = c.get(f"/v1/{row['family']}/{row['task_id']}")
            except httpx.TimeoutException:
                queries["slow"] += 1
                continue
            except httpx.TransportError:
                queries["dropped"] += 1
                continue
            queries[(response.status_code, code_of(response))] += 1
            data = response.json().get("data")
            if data is not None and data["task_status"] == "failed":
                outcomes[("failed",)] += 1
            elif data is not None:
                result = data["task_result"]
                assets = result["images"] if "images" in result else result["videos"]
                outcomes[("succeed", row["family"], len(assets))] += 1
        lists = Counter(c.get(T2V).status_code for _ in range(150))

    seen: Counter[tuple[Any, ...]] = Counter()
    for ext, result in creates.items():
        where = "after" if ext in committed else "before"
        if result[0] in ("slow", "dropped"):
            seen[(result[0], where)] += 1
        elif result[0] >= 500:
            seen[(result[0], result[1], where)] += 1
        else:
            seen[result] += 1
    expected_creates = [
        (500, 5000, "before"),
        (503, 5001, "before"),
        (504, 5002, "before"),
        (500, 5000, "after"),
        (504, 5002, "after"),
        ("dropped", "before"),
        ("dropped", "after"),
        ("slow", "after"),
        (429, 1302, "seconds"),
        (429, 1302, "date"),
        (429, 1302, "none"),
        (429, 1303, "none"),
        (401, 1004, "none"),
    ]
    for kind in expected_creates:
        assert seen[kind] > 0, (kind, seen)
    assert seen[(200, 0, "none")] > 200
    expected_queries: list[object] = [
        (500, 5000),
        (503, 5001),
        (504, 5002),
        (401, 1004),
        "dropped",
        "slow",
    ]
    for query_kind in expected_queries:
        assert queries[query_kind] > 0, (query_kind, queries)
    assert outcomes[("failed",)] > 0
    assert outcomes[("succeed", "images/generations", 1)] > 0
    assert (
        outcomes[("succeed", "images/generations", 0)]
        + outcomes[("succeed", "videos/text2video", 0)]
        > 0
    )
    assert lists[500] > 0 and lists[200] > 100
    assert stats.duplicate_external_ids == ()


def test_task_failures_profile_shows_each_message_and_short_results() -> None:
    clock = FakeClock()
    config = replace(make_config("task-failures", seed=2), clock=clock)
    messages: Counter[str] = Counter()
    asset_counts: Counter[int] = Counter()
    with Simulator(config) as sim, http_client(sim.url, headers=API_KEY) as client:
        ids = [client.post(IMG, json=body(IMG, i)).json()["data"]["task_id"] for i in range(300)]
        clock.advance(1.0)
        for task_id in ids:
            data = client.get(f"{IMG}/{task_id}").json()["data"]
            if data["task_status"] == "failed":
                assert "task_result" not in data
                messages[data["task_status_msg"]] += 1
            else:
                asset_counts[len(data["task_result"]["images"])] += 1
        assert sim.stats().tasks_created == 300
    assert set(messages) == set(TASK_FAILURE_MESSAGES.values())
    assert {0, 1, 3} <= set(asset_counts)
    assert asset_counts[3] > 200


def test_rate_limited_profile_gives_1302_in_both_retry_after_forms_and_1303() -> None:
    clock = FakeClock()
    config = replace(make_config("rate-limited", seed=0, task_duration=(100.0, 100.0)), clock=clock)
    seen: Counter[tuple[int, int, str]] = Counter()
    with Simulator(config) as sim, http_client(sim.url, headers=API_KEY) as client:
        for i in range(150):
            response = client.post(T2V, json=body(T2V, i))
            seen[(response.status_code, code_of(response), retry_after_form(response))] += 1
            clock.advance(0.25)
        stats = sim.stats()
    for kind in [
        (429, 1302, "seconds"),
        (429, 1302, "date"),
        (429, 1302, "none"),
        (429, 1303, "none"),
    ]:
        assert seen[kind] > 0, (kind, seen)
    assert seen[(200, 0, "none")] == stats.tasks_created == stats.peak_slots == 5


def test_billing_profile_stops_creates_after_20_tasks() -> None:
    with (
        Simulator(make_config("billing", seed=0)) as sim,
        http_client(sim.url, headers=API_KEY) as client,
    ):
        answers = [client.post(T2V, json=body(T2V, i)) for i in range(25)]
        codes = [code_of(r) for r in answers]
        assert codes == [0] * 20 + [1102] * 5
        assert {r.status_code for r in answers[20:]} == {429}
        task_id = answers[0].json()["data"]["task_id"]
        assert client.get(f"{T2V}/{task_id}").status_code == 200
        assert sim.stats().tasks_created == 20


def test_auth_profile_expired_tokens_are_renewed_by_jwt_auth() -> None:
    tokens: list[str] = []
    with (
        Simulator(make_config("auth", seed=4)) as sim,
        http_client(sim.url, auth=jwt_auth(tokens)) as client,
    ):
        finals: Counter[int] = Counter()
        for i in range(150):
            created = client.post(T2V, json=body(T2V, i))
            finals[code_of(created)] += 1
            if created.status_code == 200:
                finals[code_of(client.get(f"{T2V}/{created.json()['data']['task_id']}"))] += 1
            finals[code_of(client.get(T2V))] += 1
        fired = sim.stats().faults_fired
    for op in ("create", "query", "list"):
        assert fired[f"{op} error 401/1004"] > 0
    # Each rejection minted a new token for one resend, and no resend was refused again (a
    # freshly minted token cannot have expired; a client would take that for clock skew).
    assert len(tokens) == 1 + sum(fired.values())
    assert finals[1004] == 0
    assert finals[0] > 0.98 * sum(finals.values())


def test_injected_token_error_spares_the_resend_with_a_fresh_token_only() -> None:
    # Was: the resend after a renewal drew the fault again, so under the "auth" and "chaos"
    # profiles a client that stops on a second refusal (as it must: that is clock skew) would
    # stop batches at random.
    expired = FaultRule(op="create", effect="error", http_status=401, code=1004,
                        message="token has expired")
    tokens: list[str] = []
    with (
        Simulator(SimConfig(faults=(expired,))) as sim,
        http_client(sim.url, auth=jwt_auth(tokens)) as by_jwt,
        http_client(sim.url, headers=API_KEY) as by_key,
    ):
        assert [code_of(by_jwt.post(T2V, json=body(T2V, i))) for i in range(3)] == [0, 0, 0]
        assert len(tokens) == 4  # each create refused once, then resent with a new token
        # The same request sent again with the same credentials (an API key) is not spared.
        assert [code_of(by_key.post(T2V, json=body(T2V, 9))) for _ in range(2)] == [1004, 1004]
        stats = sim.stats()
    assert stats.faults_fired == {"create error 401/1004": 5}
    assert stats.tasks_created == 3


@pytest.mark.parametrize(("skew", "accepted"), [(-5.0, True), (-7.0, False)])
def test_documented_skew_boundary_for_jwt_auth(skew: float, accepted: bool) -> None:
    tokens: list[str] = []
    with (
        Simulator(SimConfig(clock_skew=skew)) as sim,
        http_client(sim.url, auth=jwt_auth(tokens)) as client,
    ):
        response = client.get(T2V)
    if accepted:
        assert response.status_code == 200
        assert len(tokens) == 1
    else:
        assert (response.status_code, code_of(response)) == (401, 1003)
        assert len(tokens) == 2  # one renewal and one resend, then the error surfaces


def test_clock_skew_profile_trips_nbf_for_jwt_but_not_the_api_key() -> None:
    with Simulator(make_config("clock-skew", seed=0)) as sim, http_client(sim.url) as client:
        by_jwt_auth = client.post(T2V, json=body(T2V, 0), auth=jwt_auth())
        by_hand = client.post(
            T2V, json=body(T2V, 1), headers={"Authorization": f"Bearer {jwt_token()}"}
        )
        for response in (by_jwt_auth, by_hand):
            assert (response.status_code, code_of(response)) == (401, 1003)
        assert client.get(T2V, headers=API_KEY).status_code == 200
        assert sim.stats().tasks_created == 0


def test_flaky_profile_mixes_errors_before_and_after_commit() -> None:
    config = make_config("flaky", seed=3, slow_reply=0.0)
    with Simulator(config) as sim, http_client(sim.url, headers=API_KEY) as client:
        for i in range(300):
            with contextlib.suppress(httpx.TransportError):
                client.post(T2V, json=body(T2V, i))
            with contextlib.suppress(httpx.TransportError):
                client.get(f"{T2V}/ext-{i}")
        fired = sim.stats().faults_fired
    for label in (
        "create error 503/5001",
        "create error_after_commit 504/5002",
        "create error_after_commit 503/5001",
        "create drop_after_commit",
        "query error 500/5000",
        "create delay 0s",
        "create delay_after_commit 0s",
    ):
        assert fired.get(label, 0) > 0, (label, fired)


# --- the simulate command --------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator")
    sub = parser.add_subparsers(dest="command", required=True)
    add_simulate_parser(sub)
    return parser.parse_args(argv)


def test_simulate_parser_defaults_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("simulate")
    assert (args.command, args.profile, args.port, args.seed, args.list) == (
        "simulate",
        "clean",
        0,
        0,
        False,
    )
    args = parse("simulate", "--profile", "chaos", "--port", "8001", "--seed", "9")
    assert (args.profile, args.port, args.seed) == ("chaos", 8001, 9)
    with pytest.raises(SystemExit):
        parse("simulate", "--profile", "nope")
    assert "nope" in capsys.readouterr().err


def test_simulate_list_prints_every_profile() -> None:
    out = io.StringIO()
    assert cmd_simulate(parse("simulate", "--list"), out) == 0
    text = out.getvalue()
    for name in PROFILES:
        assert f"\n{name}\n" in f"\n{text}"


def test_cmd_simulate_in_a_thread_serves_until_stopped() -> None:
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    args = parse("simulate", "--profile", "rate-limited", "--concurrency-slots", "1")
    thread = threading.Thread(target=lambda: result.append(cmd_simulate(args, out, stop=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "Ctrl-C" not in out.getvalue():
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        lines = out.getvalue().splitlines()
        url = lines[0].split()[-1]
        assert url.startswith("http://127.0.0.1:")
        assert "rate-limited" in lines[1]
        assert any("provider.base_url" in line and url in line for line in lines)
        assert "export KLING_ACCESS_KEY=sim-access-key" in lines
        assert "export KLING_SECRET_KEY=sim-secret-key" in lines
        with http_client(url, headers={"Authorization": f"Bearer {jwt_token()}"}) as client:
            assert client.post(T2V, json=body(T2V, 0)).status_code == 200
            assert code_of(client.post(T2V, json=body(T2V, 1))) in (1302, 1303)
    finally:
        stop.set()
        thread.join(5)
    assert result == [0]
    assert "tasks created: 1;" in out.getvalue()
    assert "peak slots: 1" in out.getvalue()


def test_simulate_gives_the_image_pack_a_limit_of_its_own() -> None:
    from orchestrator.simulator.cli import _config

    args = parse("simulate", "--concurrency-slots", "1", "--image-concurrency-slots", "4")
    config = _config(args)
    assert (config.concurrency_slots, config.image_concurrency_slots) == (1, 4)
    assert _config(parse("simulate")).image_concurrency_slots is None


def test_simulate_on_a_busy_port_reports_and_returns_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = io.StringIO()
        assert (
            cmd_simulate(parse("simulate", "--port", str(port)), out, stop=threading.Event()) == 2
        )
    assert f"cannot listen on 127.0.0.1:{port}" in out.getvalue()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_simulate_subprocess_prints_a_url_that_answers_and_exits_0(signum: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "orchestrator.simulator", "--profile", "chaos", "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(7)]
            url = lines[0].split()[-1]
            assert url.startswith("http://127.0.0.1:")
            assert "profile: chaos" in lines[1]
            response = httpx.get(f"{url}/_sim/stats", verify=PLAIN_HTTP, timeout=5)
            assert response.status_code == 200
        finally:
            process.send_signal(signum)
            assert process.wait(timeout=5) == 0
        assert "Stopped." in process.stdout.read()


def test_python_m_orchestrator_simulate_serves_billing_after_k_then_stops() -> None:
    """The real command line: `python -m orchestrator simulate --profile NAME --port 0`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "orchestrator", "simulate", "--profile", "billing",
            "--port", "0", "--billing-after", "2"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(7)]
            url = lines[0].split()[-1]
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
            assert "profile: billing" in lines[1] and "after 2 tasks" in lines[1]
            with http_client(url, headers=API_KEY) as client:
                codes = [code_of(client.post(T2V, json=body(T2V, i))) for i in range(3)]
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
        assert codes == [0, 0, 1102]
        assert "tasks created: 2;" in process.stdout.read()


def test_billing_after_overrides_any_profile() -> None:
    assert make_config("billing", seed=0).billing_after == 20
    assert make_config("billing", seed=0, billing_after=3).billing_after == 3
    assert make_config("chaos", seed=0, billing_after=0).billing_after == 0
    assert parse("simulate", "--billing-after", "7").billing_after == 7
    assert parse("simulate").billing_after is None


def test_503_after_commit_is_in_flaky_and_chaos() -> None:
    for name in ("flaky", "chaos"):
        labels = {rule.label for rule in make_config(name, seed=0).faults}
        assert any(label.startswith("create error_after_commit 503/5001") for label in labels), (
            name, labels)
