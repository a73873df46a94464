"""Manifest loading and offline validation (contract types; loader to be implemented)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.providers.base import TaskRequest

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
#: ``provider.base_url: simulator`` starts the bundled simulator in-process.
SIMULATOR_BASE_URL = "simulator"


@dataclass(frozen=True)
class ProviderSettings:
    name: str = "kling"
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 60.0  # seconds per HTTP request


@dataclass(frozen=True)
class Limits:
    concurrency: int = 5
    requests_per_minute: float = 60.0


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: seconds to wait before looking a task up after an ambiguous create
    lookup_grace: float = 2.0


@dataclass(frozen=True)
class PollSettings:
    interval: float = 5.0
    max_interval: float = 30.0
    timeout: float = 900.0


@dataclass(frozen=True)
class Item:
    id: str
    request: TaskRequest
    line: int | None = None


@dataclass(frozen=True)
class Manifest:
    version: int
    name: str
    path: Path
    provider: ProviderSettings
    limits: Limits
    retry: RetrySettings
    poll: PollSettings
    output_dir: Path
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as the YAML allows."""

    message: str
    field: str | None = None
    item_id: str | None = None
    line: int | None = None

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        parts = []
        if self.item_id is not None:
            parts.append(f"item '{self.item_id}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        prefix = ", ".join(parts)
        return f"{where}: {prefix}: {self.message}" if prefix else f"{where}: {self.message}"


class ManifestError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.format(source) for p in problems))


def load_manifest(path: Path) -> Manifest:
    raise NotImplementedError
