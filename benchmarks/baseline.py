"""The baseline: a batch run the way the seed documents (shared/seeds/) suggest.

Faithful on purpose, defects included, so the benchmark compares the orchestrator with what a
user would otherwise write:

- a synchronous, single-threaded loop: submit one task, poll it with a fixed sleep until it ends,
  then the next task (no concurrency at all);
- the seeds' ``rate_limit_handler`` decorator: retry any exception whose text contains "429",
  sleeping ``2 ** attempt`` seconds (the text match is the bug shared/seeds/README.md warns of);
- the seeds' ``TokenManager``: an HS256 JWT with ``typ: JWT``, 30 min expiry, re-minted 5 min
  before it expires;
- a requests-like client (``httpx.Client``) and ``raise_for_status`` for errors.

The fixed poll sleep is a parameter; the benchmark uses the orchestrator's ``poll.interval``, so
neither side polls more eagerly than the other.

    python -m benchmarks.baseline --url URL --access-key AK --secret-key SK --n 40 \\
        --poll-sleep 0.5 --json-out baseline.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import jwt

P = ParamSpec("P")
R = TypeVar("R")

#: The seeds' client timeout advice: "10 minutes or more".
POLL_GIVE_UP = 600.0


class TokenManager:
    """Seed 000's token manager: refresh 5 minutes before the 30 minute expiry."""

    def __init__(self, ak: str, sk: str) -> None:
        self.ak, self.sk = ak, sk
        self._token: str | None = None
        self._exp = 0

    @property
    def token(self) -> str:
        if self._token is None or time.time() >= self._exp - 300:  # 5 min buffer
            payload = {
                "iss": self.ak,
                "exp": int(time.time()) + 1800,
                "nbf": int(time.time()) - 5,
            }
            self._token = jwt.encode(
                payload, self.sk, algorithm="HS256", headers={"alg": "HS256", "typ": "JWT"}
            )
            self._exp = int(time.time()) + 1800
        return self._token


class Counters:
    def __init__(self) -> None:
        self.creates = 0
        self.polls = 0
        self.retries = 0


COUNTERS = Counters()


def rate_limit_handler(max_retries: int = 5) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Seed 001's decorator, as written there (prints included)."""

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        @wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(max_retries):
                try:
                    return func(*args, **kwargs)
                except Exception as e:
                    if "429" in str(e):
                        wait_time = 2**attempt
                        print(f"Rate limited. Waiting {wait_time}s...")
                        COUNTERS.retries += 1
                        time.sleep(wait_time)
                    else:
                        raise
            raise Exception("Max retries exceeded")

        return wrapper

    return decorator


class Client:
    def __init__(self, base_url: str, ak: str, sk: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = TokenManager(ak, sk)
        self.http = httpx.Client(timeout=600)

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.tokens.token}",
            "Content-Type": "application/json",
        }

    @rate_limit_handler(max_retries=5)
    def submit(self, prompt: str) -> str:
        COUNTERS.creates += 1
        response = self.http.post(
            f"{self.base_url}/v1/videos/text2video",
            headers=self.headers(),
            json={
                "model_name": "kling-v2-5-turbo",
                "prompt": prompt,
                "mode": "std",
                "duration": "5",
                "aspect_ratio": "16:9",
            },
        )
        response.raise_for_status()
        return str(response.json()["data"]["task_id"])

    @rate_limit_handler(max_retries=5)
    def status(self, task_id: str) -> dict[str, Any]:
        COUNTERS.polls += 1
        response = self.http.get(
            f"{self.base_url}/v1/videos/text2video/{task_id}", headers=self.headers()
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data


def generate(client: Client, prompt: str, poll_sleep: float) -> dict[str, Any]:
    """Submit, then poll with a fixed sleep until the task ends."""
    submitted_at = time.time()
    task_id = client.submit(prompt)
    while True:
        time.sleep(poll_sleep)
        data = client.status(task_id)
        if data["task_status"] in ("succeed", "failed"):
            return {
                "task_id": task_id,
                "status": data["task_status"],
                "submitted_at": submitted_at,
                "noticed_at": time.time(),
            }
        if time.time() - submitted_at > POLL_GIVE_UP:
            return {"task_id": task_id, "status": "timeout", "submitted_at": submitted_at,
                    "noticed_at": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline")
    parser.add_argument("--url", required=True)
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--poll-sleep", type=float, default=5.0)
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args(argv)

    client = Client(args.url, args.access_key, args.secret_key)
    started = time.time()
    tasks = []
    for i in range(args.n):
        tasks.append(generate(client, f"baseline item {i}: a slow pan over a quiet lake",
                              args.poll_sleep))
    finished = time.time()
    client.http.close()
    args.json_out.write_text(
        json.dumps(
            {
                "n": args.n,
                "started_at": started,
                "finished_at": finished,
                "creates": COUNTERS.creates,
                "polls": COUNTERS.polls,
                "retries": COUNTERS.retries,
                "tasks": tasks,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
