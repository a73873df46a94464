"""Where the ledger is: --state, then ORCHESTRATOR_STATE, then the file in output.dir; a URL is
a PostgreSQL database and is never shown with its password."""

from __future__ import annotations

from pathlib import Path

from orchestrator.state_location import ENV, StateLocation, locate

DEFAULT = Path("out/state.sqlite3")


def test_the_flag_wins_then_the_environment_then_the_default() -> None:
    url = "postgresql://orch:pw@db.internal:5432/batches"
    assert locate(None, DEFAULT, {}) == StateLocation(path=DEFAULT)
    assert locate(None, DEFAULT, {ENV: "  "}) == StateLocation(path=DEFAULT)
    assert locate(None, DEFAULT, {ENV: url}) == StateLocation(url=url)
    assert locate("elsewhere.sqlite3", DEFAULT, {ENV: url}) == StateLocation(
        path=Path("elsewhere.sqlite3"))
    assert locate(None, DEFAULT, {ENV: "shared/state.sqlite3"}).path == Path(
        "shared/state.sqlite3")
    assert locate("postgres://h/db", DEFAULT, {}).url == "postgres://h/db"


def test_a_url_is_described_without_its_password() -> None:
    location = locate("postgresql://orch:pw@db.internal:5432/batches", DEFAULT, {})
    assert location.shared and location.describe() == "postgresql://orch@db.internal:5432/batches"
    socket = locate("postgresql://postgres:@/postgres?host=/tmp/pg", DEFAULT, {})
    assert socket.describe() == "postgresql://postgres@(socket /tmp/pg)/postgres"
    assert not StateLocation(path=DEFAULT).shared
    assert StateLocation(path=DEFAULT).describe() == str(DEFAULT)
