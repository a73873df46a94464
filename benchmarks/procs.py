"""Child processes measured one by one, and the simulator process the benchmarks talk to.

``os.wait4`` returns the rusage of exactly the child it reaped (CPU seconds and peak RSS), so
the orchestrator's figures never include the simulator's, whatever order things end in.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent

#: The source tree whose ``orchestrator`` package the children import (``--code``); the
#: benchmarks themselves always come from this repository.
CODE: list[Path] = [REPO]


def use_code(path: Path) -> None:
    """Measure the orchestrator in ``path`` (e.g. a ``git archive`` snapshot) instead."""
    if not (path / "orchestrator" / "__init__.py").is_file():
        raise SystemExit(f"{path} has no orchestrator package")
    CODE[0] = path.resolve()


@dataclass(frozen=True)
class Usage:
    """What one child process cost, from ``wait4``."""

    wall: float
    user: float
    system: float
    #: peak resident set size, in bytes
    max_rss: int
    returncode: int
    timed_out: bool = False
    #: resident set size in bytes, sampled every RSS_EVERY seconds while it ran
    rss_samples: tuple[int, ...] = ()

    @property
    def cpu(self) -> float:
        return self.user + self.system


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours without KLING_* (the benchmark sets its own), with the
    repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    roots = [str(CODE[0])] + ([str(REPO)] if CODE[0] != REPO else [])
    if "PYTHONPATH" in env:
        roots.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    env.update(extra or {})
    return env


def _reap(
    proc: subprocess.Popen[bytes], started: float, timeout: float, parent_rss: int
) -> Usage:
    """``parent_rss``: our own peak resident set size (VmHWM) when the child was started.
    Linux's ru_maxrss of a child counts the peak of the memory image it was forked from (before
    its exec), so it is never below ours: trusted only above it; below, the child's own
    high-water mark since its exec (VmHWM, sampled) is its peak."""
    box: dict[str, Any] = {}

    def wait() -> None:
        _, status, usage = os.wait4(proc.pid, 0)
        box["ended"] = time.perf_counter()
        box["status"] = status
        box["usage"] = usage

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    samples: list[int] = []
    high_water = 0
    while waiter.is_alive() and time.perf_counter() - started < timeout:
        rss, hwm = _memory(proc.pid)
        if rss is not None:
            samples.append(rss)
        high_water = max(high_water, hwm or 0)
        waiter.join(RSS_EVERY)
    timed_out = waiter.is_alive()
    if timed_out:
        _kill_group(proc.pid, signal.SIGTERM)
        waiter.join(10)
        if waiter.is_alive():
            _kill_group(proc.pid, signal.SIGKILL)
            waiter.join()
    code = os.waitstatus_to_exitcode(box["status"])
    proc.returncode = code  # reaped here: Popen must not wait for it again
    usage = box["usage"]
    max_rss = usage.ru_maxrss * 1024  # Linux reports KiB
    if max_rss <= parent_rss and high_water:
        max_rss = high_water
    return Usage(
        wall=box["ended"] - started,
        user=usage.ru_utime,
        system=usage.ru_stime,
        max_rss=max_rss,
        returncode=code,
        timed_out=timed_out,
        rss_samples=tuple(samples),
    )


#: Seconds between two samples of a child's resident set size.
RSS_EVERY = 0.25


def _memory(pid: int | str) -> tuple[int | None, int | None]:
    """The process's current resident set size and its high-water mark since its exec (Linux
    /proc VmRSS, VmHWM), in bytes; None once it is gone."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None, None
    return found.get("VmRSS"), found.get("VmHWM")


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    stdout: Path,
    stderr: Path,
) -> Usage:
    """Run ``argv`` to its end (killed after ``timeout`` seconds) and return what it cost."""
    parent_rss = _memory("self")[1] or 0
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        return _reap(proc, started, timeout, parent_rss)


class SimProcess:
    """``python -m benchmarks.simserver`` in a child process; a context manager.

    Leaving the block (or a crash of this process, which closes the pipe) stops it.
    """

    def __init__(
        self,
        *,
        slots: int | None,
        duration: tuple[float, float],
        creates_per_second: float | None = None,
        seed: int = 0,
        log: Path,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.simserver",
            "--seed",
            str(seed),
            "--duration-min",
            repr(duration[0]),
            "--duration-max",
            repr(duration[1]),
        ]
        if slots is not None:
            argv += ["--slots", str(slots)]
        if creates_per_second is not None:
            argv += ["--creates-per-second", repr(creates_per_second)]
        self._argv = argv
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._parent_rss = 0
        self.usage: Usage | None = None
        self.url = ""
        self.access_key = ""
        self.secret_key = ""
        self.api_key = ""

    def __enter__(self) -> SimProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        self._parent_rss = _memory("self")[1] or 0
        with self._log.open("wb") as err:
            self._started = time.perf_counter()
            self._proc = subprocess.Popen(
                self._argv,
                env=child_env(),
                cwd=self._log.parent,  # not REPO: sys.path[0] must not shadow --code
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"the simulator did not start; see {self._log}")
        hello = json.loads(line)
        self.url = str(hello["url"])
        self.access_key = str(hello["access_key"])
        self.secret_key = str(hello["secret_key"])
        self.api_key = str(hello["api_key"])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: the launcher stops serving and exits
        self.usage = _reap(proc, self._started, 15.0, self._parent_rss)
        if proc.stdout is not None:
            proc.stdout.close()

    def stats(self) -> dict[str, Any]:
        """``GET /_sim/stats``: the simulator's own counters."""
        with httpx.Client(timeout=60) as client:
            response = client.get(self.url + "/_sim/stats")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def finish_times(self, family: str = "videos/text2video") -> dict[str, float]:
        """Task id -> the wall-clock time (epoch seconds) the task ended on the server.

        A finished task's ``updated_at`` is its ``created_at`` plus its drawn duration (in
        milliseconds): the moment its status turned final. Read through the list endpoint,
        500 tasks a request; call it after taking :meth:`stats`, as it sends requests too.
        """
        ended: dict[str, float] = {}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(timeout=60, headers=headers) as client:
            for page in range(1, 1001):
                response = client.get(
                    f"{self.url}/v1/{family}", params={"pageNum": page, "pageSize": 500}
                )
                response.raise_for_status()
                tasks = response.json()["data"]
                if not tasks:
                    break
                for task in tasks:
                    if task["task_status"] in ("succeed", "failed"):
                        ended[str(task["task_id"])] = task["updated_at"] / 1000.0
        return ended
