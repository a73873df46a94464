"""What one HTTP request costs the HTTP client alone, on this machine: the floor under the
orchestrator's CPU per task (a task is a create and, with downloads, a file: two requests, plus
its share of list polls).

    python -m benchmarks.floor            # 2000 requests, 8 at a time
    python -m benchmarks.floor --n 5000 --concurrency 32

The simulator runs in its own process (benchmarks.simserver); this process does nothing but send
``GET /_sim/stats`` through ``httpx.AsyncClient`` under anyio, as the orchestrator's clients do,
and reads each answer whole. The CPU figure is this process's user+sys time over the requests.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import anyio
import httpx


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def _measure(url: str, n: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        for _ in range(concurrency):  # connections opened before the clock starts
            (await client.get(url)).raise_for_status()
        gate = anyio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                (await client.get(url)).raise_for_status()

        user, system = _cpu()
        started = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for _ in range(n):
                tasks.start_soon(one)
        wall = time.perf_counter() - started
        user_end, system_end = _cpu()
    return {
        "requests": n,
        "concurrency": concurrency,
        "wall_s": wall,
        "cpu_user_ms_per_request": (user_end - user) / n * 1000,
        "cpu_system_ms_per_request": (system_end - system) / n * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor")
    parser.add_argument("--n", type=int, default=2000, help="requests to send")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.simserver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        hello = json.loads(server.stdout.readline())
        result = anyio.run(_measure, hello["url"] + "/_sim/stats", args.n, args.concurrency)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=10)
    cpu = result["cpu_user_ms_per_request"] + result["cpu_system_ms_per_request"]
    print(
        f"httpx {httpx.__version__}, Python {sys.version.split()[0]}: "
        f"{result['requests']} requests, {result['concurrency']} at a time, "
        f"{result['wall_s']:.2f} s\n"
        f"  CPU per request: {cpu:.3f} ms (user {result['cpu_user_ms_per_request']:.3f}, "
        f"sys {result['cpu_system_ms_per_request']:.3f})\n"
        f"  per 1000 tasks at 1 request a task (no downloads): {cpu:.2f} s; "
        f"at 2 (a create and a file): {2 * cpu:.2f} s"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
