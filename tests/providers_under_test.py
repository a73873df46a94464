"""Every provider's simulator behind one face, for the provider contract tests.

A :class:`Harness` starts its provider's simulator with provider-neutral faults (a lost create, a
policy refusal, a rate limit with Retry-After, ...), writes a manifest for it, gives the CLI its
credentials, and reads the simulator's own accounting: jobs paid per prompt, submits, billing
refusals. A new provider joins the contract by adding its harness to :data:`HARNESSES`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from orchestrator.providers.ltx.simulator import LtxFaultRule, LtxSimConfig, LtxSimulator
from orchestrator.simulator import FaultRule, SimConfig, Simulator
from tests.conftest import REPO, write_doc


@dataclass(frozen=True)
class Fault:
    """What goes wrong, in any provider's terms.

    kind: ``lost_create`` (the job is made, the answer never arrives), ``server_error`` (a 5xx
    before anything is made), ``rate_limited`` (429 with Retry-After), ``policy`` (the prompt is
    refused by the safety filters), ``job_failed`` (the job ends failed, worth a new attempt),
    ``asset_truncated`` (the file's body is cut short).
    """

    kind: str
    match: str
    times: int | None = 1
    retry_after: int = 1


class Running(Protocol):
    @property
    def url(self) -> str: ...

    def env(self) -> dict[str, str]: ...
    def paid(self, prompt: str) -> int: ...
    def created(self) -> int: ...
    def billing_refusals(self) -> int: ...


@dataclass
class _Kling:
    sim: Simulator

    @property
    def url(self) -> str:
        return self.sim.url

    def env(self) -> dict[str, str]:
        env = _clean_env("KLING_")
        env["KLING_ACCESS_KEY"] = self.sim.config.access_key
        env["KLING_SECRET_KEY"] = self.sim.config.secret_key
        return env

    def paid(self, prompt: str) -> int:
        return self.sim.stats().by_prompt.get(prompt, 0)

    def created(self) -> int:
        return self.sim.stats().tasks_created

    def billing_refusals(self) -> int:
        return self.sim.stats().create_answers.get("1102", 0)


@dataclass
class _Ltx:
    sim: LtxSimulator

    @property
    def url(self) -> str:
        return self.sim.url

    def env(self) -> dict[str, str]:
        env = _clean_env("LTX_")
        env["LTX_API_KEY"] = self.sim.config.api_key
        return env

    def paid(self, prompt: str) -> int:
        return self.sim.stats().by_prompt.get(prompt, 0)

    def created(self) -> int:
        return self.sim.stats().jobs_created

    def billing_refusals(self) -> int:
        return self.sim.stats().answers.get("402 insufficient_funds_error", 0)


def _clean_env(prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    env["PYTHONPATH"] = str(REPO)
    return env


class Harness:
    name: str
    #: whether a lost create can be settled by looking the task up
    can_look_up: bool
    provider: ClassVar[dict[str, Any]]
    defaults: ClassVar[dict[str, Any]]

    def start(
        self, faults: tuple[Fault, ...] = (), *, billing_after: int | None = None,
        task_duration: tuple[float, float] = (0.05, 0.15),
    ) -> contextlib.AbstractContextManager[Running]:
        raise NotImplementedError

    def manifest(self, directory: Path, running: Running, items: list[dict[str, Any]],
                 **sections: Any) -> Path:
        return write_doc(
            directory,
            {**self.provider, "base_url": running.url, "timeout": 5},
            self.defaults,
            items,
            name="contract",
            **sections,
        )

    def __repr__(self) -> str:
        return self.name


class KlingHarness(Harness):
    name = "kling"
    can_look_up = True
    provider: ClassVar[dict[str, Any]] = {"name": "kling"}
    defaults: ClassVar[dict[str, Any]] = {
        "kind": "text2video", "model": "kling-v2-5-turbo", "duration": 5,
    }

    @contextlib.contextmanager
    def start(
        self, faults: tuple[Fault, ...] = (), *, billing_after: int | None = None,
        task_duration: tuple[float, float] = (0.05, 0.15),
    ) -> Iterator[Running]:
        config = SimConfig(task_duration=task_duration, billing_after=billing_after,
                           faults=tuple(self._rule(f) for f in faults))
        with Simulator(config) as sim:
            yield _Kling(sim)

    @staticmethod
    def _rule(fault: Fault) -> FaultRule:
        common: dict[str, Any] = {"match": fault.match, "times": fault.times}
        if fault.kind == "lost_create":
            return FaultRule(op="create", effect="drop_after_commit", **common)
        if fault.kind == "server_error":
            return FaultRule(op="create", effect="error", http_status=503, code=5001,
                             message="service unavailable", **common)
        if fault.kind == "rate_limited":
            return FaultRule(op="create", effect="error", http_status=429, code=1302,
                             message="request rate too high",
                             retry_after=str(fault.retry_after), **common)
        if fault.kind == "policy":
            return FaultRule(op="create", effect="error", http_status=400, code=1301,
                             message="content safety policy triggered", **common)
        if fault.kind == "job_failed":
            return FaultRule(op="create", effect="task_failed",
                             message="Internal error, please try again later", **common)
        if fault.kind == "asset_truncated":
            return FaultRule(op="asset", effect="truncate", **common)
        raise ValueError(fault.kind)


class LtxHarness(Harness):
    name = "ltx"
    can_look_up = False
    provider: ClassVar[dict[str, Any]] = {"name": "ltx"}
    defaults: ClassVar[dict[str, Any]] = {
        "kind": "text2video", "model": "ltx-2-3-fast", "duration": 6,
        "resolution": "1920x1080", "fps": 25, "generate_audio": False,
    }

    @contextlib.contextmanager
    def start(
        self, faults: tuple[Fault, ...] = (), *, billing_after: int | None = None,
        task_duration: tuple[float, float] = (0.05, 0.15),
    ) -> Iterator[Running]:
        config = LtxSimConfig(task_duration=task_duration, billing_after=billing_after,
                              concurrency_slots=None,
                              faults=tuple(self._rule(f) for f in faults))
        with LtxSimulator(config) as sim:
            yield _Ltx(sim)

    @staticmethod
    def _rule(fault: Fault) -> LtxFaultRule:
        common: dict[str, Any] = {"match": fault.match, "times": fault.times}
        if fault.kind == "lost_create":
            return LtxFaultRule(op="submit", effect="drop_after_commit", **common)
        if fault.kind == "server_error":
            return LtxFaultRule(op="submit", effect="error", http_status=503,
                                error_type="service_unavailable", **common)
        if fault.kind == "rate_limited":
            return LtxFaultRule(op="submit", effect="error", http_status=429,
                                error_type="rate_limit_error", message="Too many requests",
                                retry_after=str(fault.retry_after), **common)
        if fault.kind == "policy":
            return LtxFaultRule(op="submit", effect="error", http_status=422,
                                error_type="content_filtered_error",
                                message="Content was filtered", **common)
        if fault.kind == "job_failed":
            return LtxFaultRule(op="submit", effect="job_failed", error_type="api_error",
                                message="Generation failed", **common)
        if fault.kind == "asset_truncated":
            return LtxFaultRule(op="asset", effect="truncate", **common)
        raise ValueError(fault.kind)


HARNESSES: tuple[Harness, ...] = (KlingHarness(), LtxHarness())
