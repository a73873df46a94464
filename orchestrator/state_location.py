"""Where a batch's ledger is: a SQLite file on this host (the default,
``<output.dir>/state.sqlite3``, or ``--state PATH``) or a PostgreSQL database several hosts
share (``--state postgresql://...``, or ``ORCHESTRATOR_STATE`` in the environment when
``--state`` is not given).

PostgreSQL support is an extra (``pip install 'kling-batch-orchestrator[postgres]'``): its
driver is imported only when a URL is used, and its absence is a usage error that says what to
install. A URL's password never reaches a message (see ``ledger_pg.redact_dsn``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.ledger import Ledger
from orchestrator.ledger_api import ItemRecord, RunRecord

if TYPE_CHECKING:
    from typing import TypeAlias

    from orchestrator.ledger_pg import PgLedger

    #: Either ledger, where the CLI holds one (the engine sees the BatchLedger protocol).
    AnyLedger: TypeAlias = Ledger | PgLedger

__all__ = ["ENV", "StateLocation", "locate"]

#: The environment variable that names the ledger when ``--state`` is not given.
ENV = "ORCHESTRATOR_STATE"
_SCHEMES = ("postgresql://", "postgres://")


class NoPostgresDriver(Exception):
    """A PostgreSQL URL, without the driver installed."""


@dataclass(frozen=True)
class StateLocation:
    """A ledger file (``path``) or a PostgreSQL database (``url``): exactly one is set."""

    path: Path | None = None
    url: str | None = None

    @property
    def shared(self) -> bool:
        return self.url is not None

    def describe(self) -> str:
        """How messages name it: the file's path, or the URL without its password."""
        if self.path is not None:
            return str(self.path)
        from orchestrator.ledger_pg import redact_dsn

        assert self.url is not None
        return redact_dsn(self.url)

    def open(self, batch: str, *, scrub: Callable[[Any], Any] | None = None) -> Ledger | PgLedger:
        if self.path is not None:
            return Ledger(self.path, batch, scrub=scrub)
        assert self.url is not None
        ledger: PgLedger = _pg().PgLedger(self.url, batch, scrub=scrub)
        return ledger

    def read_only(self, batch: str) -> tuple[str, list[ItemRecord]]:
        """(batch, every item record) without taking the batch (``status``)."""
        if self.path is not None:
            return Ledger.read_only(self.path)
        assert self.url is not None
        found: tuple[str, list[ItemRecord]] = _pg().PgLedger.read_only(self.url, batch)
        return found


    def read_runs(self, batch: str) -> list[RunRecord]:
        """Every run of the batch, oldest first, without taking the batch."""
        if self.path is not None:
            return Ledger.read_runs(self.path)
        assert self.url is not None
        found: list[RunRecord] = _pg().PgLedger.read_runs(self.url, batch)
        return found


def _pg() -> Any:
    try:
        from orchestrator import ledger_pg
    except ImportError:
        raise NoPostgresDriver(
            "a PostgreSQL ledger needs the PostgreSQL driver: pip install "
            "'kling-batch-orchestrator[postgres]' (psycopg with its pool), then run again. "
            "Nothing was sent."
        ) from None
    return ledger_pg


def locate(
    given: str | Path | None, default: Path, environ: Mapping[str, str] = os.environ
) -> StateLocation:
    """``--state`` as given, else ``ORCHESTRATOR_STATE``, else the default file."""
    value = str(given) if given is not None else environ.get(ENV, "").strip() or None
    if value is None:
        return StateLocation(path=default)
    if value.startswith(_SCHEMES):
        return StateLocation(url=value)
    return StateLocation(path=Path(value))
