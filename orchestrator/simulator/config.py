"""The simulator's settings: one frozen dataclass, every field defaulted to the demo setup."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.providers.kling.catalogue import catalogue
from orchestrator.simulator.faults import FaultRule

NOT_FOUND_STYLES = ("400/1201", "404/1203")


@dataclass(frozen=True)
class SimConfig:
    access_key: str = "sim-access-key"
    secret_key: str = "sim-secret-key"
    #: Accepted verbatim as a Bearer token; None accepts JWTs only.
    api_key: str | None = "sim-api-key"
    host: str = "127.0.0.1"
    port: int = 0
    #: Seeds the one random.Random behind task ids, durations and request ids.
    seed: int = 0
    #: Seconds from creation to the final status, drawn uniformly per task.
    task_duration: tuple[float, float] = (0.3, 0.8)
    #: Account slot limit of each resource-pack type, counted apart as Kling counts them
    #: (video tasks hold 1 slot of the video pack, image tasks n of the image pack); None
    #: means unlimited.
    concurrency_slots: int | None = None
    #: The image pack's own limit, when it differs (None: ``concurrency_slots``).
    image_concurrency_slots: int | None = None
    #: Create requests admitted per sliding second; None means unlimited.
    requests_per_second: float | None = None
    #: What a query for an unknown id answers: what live probes saw, or what the docs say.
    not_found_style: str = "400/1201"
    #: Whether ``GET /v1/<family>/<id>`` also finds a task by its external_task_id (Kling's
    #: docs say so; some public clients say it does not). False: task ids only, so a client
    #: must find its task through the list.
    query_by_external_id: bool = True
    #: Seconds added to the server's wall clock when checking a JWT's exp/nbf.
    clock_skew: float = 0.0
    faults: tuple[FaultRule, ...] = ()
    #: After this many committed creates every further create answers 429/1102 (and the
    #: resource pack ``GET /account/costs`` reports reads runOut).
    billing_after: int | None = None
    #: Models the catalogue does not know that creates may name all the same ("Kling shipped a
    #: model our catalogue does not know yet"): accepted with the checks any model gets, none
    #: of a particular model's. A name the catalogue knows (retired ones too) is refused here:
    #: its catalogue rules apply.
    extra_models: tuple[str, ...] = ()
    #: Whether a create naming an external_task_id that exists in the account is refused with
    #: 400/1201 "External_task_id <id> already exists", as Kling does. False accepts it and
    #: creates a second task (what this simulator did before Kling was seen refusing), so a
    #: test can prove a client never relies on the server to deduplicate.
    reject_duplicate_external_ids: bool = True
    #: Seconds a new task stays invisible to every read by external id (the legacy query path
    #: by external id, legacy list pages, API 2.0 ``?external_task_ids=`` and ``POST /tasks``)
    #: after its creation, on ``clock``. Reads by task id see it at once, and a create reusing
    #: its external id is refused at once.
    read_lag: float = 0.0
    #: Whether ``GET /account/costs`` reports the account's video resource pack; False answers
    #: as a live account without packs does.
    resource_packs: bool = True
    #: Drives task lifecycles, slots and the rate window; inject a fake one in tests.
    clock: Callable[[], float] = field(default=time.monotonic)
    #: Seconds an asset URL stays valid. When set, every task answer carries freshly signed
    #: asset URLs (``?exp=<clock time>&sig=<hmac>``; ``exp`` is on ``clock``) and an asset
    #: request after ``exp``, or with a missing or wrong signature, answers 403, like Kling's
    #: hotlink-protected CDN. None: plain URLs that never expire.
    asset_url_ttl: float | None = None
    #: Keep the account in this JSON-lines file (see ``journal``): each committed task is
    #: written before its create is answered, and a simulator started on the file takes its
    #: tasks back (they go on by wall-clock time) and listens on its last port if free. None:
    #: the account lives as long as the Simulator object.
    state_file: Path | None = None

    def __post_init__(self) -> None:
        if self.not_found_style not in NOT_FOUND_STYLES:
            raise ValueError(f"not_found_style must be one of {NOT_FOUND_STYLES}")
        low, high = self.task_duration
        if not 0 <= low <= high:
            raise ValueError("task_duration must be (low, high) with 0 <= low <= high")
        if self.concurrency_slots is not None and self.concurrency_slots < 0:
            raise ValueError("concurrency_slots must be >= 0 or None")
        if self.image_concurrency_slots is not None and self.image_concurrency_slots < 0:
            raise ValueError("image_concurrency_slots must be >= 0 or None")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0 or None")
        ttl = self.asset_url_ttl
        if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
            raise ValueError("asset_url_ttl must be a number of seconds > 0, or None")
        if not (math.isfinite(self.read_lag) and self.read_lag >= 0):
            raise ValueError("read_lag must be a number of seconds >= 0")
        known = [name for name in self.extra_models if catalogue().model(name) is not None]
        if known:
            # Listing a catalogue model would silently do nothing (its rules win): say so.
            raise ValueError(
                f"extra_models: {', '.join(known)} is in the catalogue; its rules apply"
            )
