"""Shared fixtures: the simulator on loopback and the CLI run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.providers.base import Kind, TaskRequest
from orchestrator.simulator import SimConfig, Simulator

REPO = Path(__file__).resolve().parent.parent

#: Fast timings for end-to-end runs: tasks take 0.1-0.3 s on the simulator.
FAST: dict[str, dict[str, Any]] = {
    "limits": {"concurrency": 4, "requests_per_minute": 6000},
    "retry": {"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05, "lookup_grace": 0.05},
    "poll": {"interval": 0.05, "max_interval": 0.2, "timeout": 30},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(task_duration=(0.1, 0.3))) as simulator:
        yield simulator


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def cli_env(sim: Simulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env["KLING_ACCESS_KEY"] = sim.config.access_key
    env["KLING_SECRET_KEY"] = sim.config.secret_key
    env["PYTHONPATH"] = str(REPO)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def write_manifest(
    directory: Path,
    sim: Simulator,
    items: list[dict[str, Any]],
    *,
    name: str = "e2e",
    **sections: Any,
) -> Path:
    return write_doc(
        directory,
        {"name": "kling", "base_url": sim.url, "timeout": 5},
        {"kind": "text2video", "model": "kling-v2-5-turbo", "duration": 5},
        items,
        name=name,
        **sections,
    )


def write_doc(
    directory: Path,
    provider: dict[str, Any],
    defaults: dict[str, Any],
    items: list[dict[str, Any]],
    /,
    *,
    name: str,
    **sections: Any,
) -> Path:
    """``directory/manifest.yaml`` for ``provider`` with the fast test settings; a section
    given as a mapping (``provider`` and ``defaults`` too) is merged into the default one."""
    doc: dict[str, Any] = {
        "version": 1,
        "name": name,
        "provider": provider,
        **{k: dict(v) for k, v in FAST.items()},
        "output": {"dir": "out"},
        "defaults": dict(defaults),
        "items": items,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    path = directory / "manifest.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def png_bytes(width: int, height: int) -> bytes:
    """A small valid PNG (one grey colour) built with the stdlib."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def request_of(kind: Kind, **fields: Any) -> TaskRequest:
    """A request of ``kind`` for reads (query, lookup): providers route by its fields."""
    return TaskRequest(kind, fields, int(fields.get("n", 1)))


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


# -- a real PostgreSQL server (pgserver ships its binaries), one per test session -------------


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a PostgreSQL server started for this test session (about a second)."""
    pgserver = pytest.importorskip("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty database on the session's server, for one test."""
    import psycopg

    name = f"t{next(_databases)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.replace("/postgres?", f"/{name}?", 1)
