"""What lets several workers share one batch and one account in PostgreSQL: item leases with
fencing tokens, and the account's limits kept in the database (slots, the create rate).

Every time is the database's clock (``clock_timestamp()``), never a worker's: hosts disagree
about the time, the server is one.

- **Leases.** A worker claims items (``FOR UPDATE SKIP LOCKED``: two workers claiming at once
  get different items) and gets a fresh token per item; it renews its leases while it works and
  releases them when it is done. A lease not renewed for ``ttl`` seconds (the worker died, or was
  paused) is free: another worker claims the item, with a new token. Every write of an item
  names the token it holds (:data:`FENCED`), so a worker that lost a lease writes nothing for
  that item: the write finds another token and changes no row.
- **Slots.** The account's concurrency is a set of rows, one per task holding slots (its weight:
  an image task's ``n``), each with an expiry its holder renews; acquiring checks the sum of the
  live rows against the cap and inserts in one transaction, serialised per account by an
  advisory lock, so the workers together never exceed the cap. A dead worker's rows expire.
- **Rate.** One row per account holds the next free turn; taking a turn moves it one interval
  on in a single statement and says how long to wait for it: creates from every worker are
  spaced as the limit asks, without a burst.

These are statements and small functions over a connection (``psycopg``); the ledger and the
engine decide when to call them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

__all__ = [
    "LEASE_SCHEMA",
    "acquire_slots",
    "claim",
    "fenced_update",
    "release",
    "release_slots",
    "renew",
    "renew_slots",
    "slots_in_use",
    "take_turn",
]

_NOW = "extract(epoch from clock_timestamp())"

#: Added to the ledger's schema (version 2).
LEASE_SCHEMA = (
    "CREATE SEQUENCE IF NOT EXISTS lease_tokens",
    "ALTER TABLE items ADD COLUMN IF NOT EXISTS lease_owner text",
    "ALTER TABLE items ADD COLUMN IF NOT EXISTS lease_token bigint",
    "ALTER TABLE items ADD COLUMN IF NOT EXISTS lease_until double precision",
    """CREATE TABLE IF NOT EXISTS account_slots (
        account text NOT NULL,
        holder text NOT NULL,
        item text NOT NULL,
        weight integer NOT NULL,
        until double precision NOT NULL,
        PRIMARY KEY (account, holder, item)
    )""",
    """CREATE TABLE IF NOT EXISTS account_rate (
        account text PRIMARY KEY,
        next_at double precision NOT NULL
    )""",
)

#: Items a claim never takes: finished, with their files on disk.
_DONE = "(state IN ('succeeded', 'partial', 'failed') AND download_error IS NULL)"

_CLAIM = f"""
WITH free AS (
    SELECT id FROM items
    WHERE batch = %(batch)s AND NOT {_DONE}
      AND (lease_until IS NULL OR lease_until < {_NOW})
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE items SET lease_owner = %(worker)s, lease_token = nextval('lease_tokens'),
                 lease_until = {_NOW} + %(ttl)s
FROM free WHERE items.batch = %(batch)s AND items.id = free.id
RETURNING items.id, items.lease_token
"""

_RENEW = f"""
UPDATE items SET lease_until = {_NOW} + %(ttl)s
FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS held(id, token)
WHERE items.batch = %(batch)s AND items.id = held.id AND items.lease_token = held.token
  AND items.lease_until >= {_NOW}
RETURNING items.id
"""

_RELEASE = """
UPDATE items SET lease_owner = NULL, lease_token = NULL, lease_until = NULL
FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS held(id, token)
WHERE items.batch = %(batch)s AND items.id = held.id AND items.lease_token = held.token
"""

#: The fence every write of a leased item carries: the row changes only while the token the
#: writer holds is still the item's.
FENCED = "items.lease_token = %(token)s"


def claim(
    conn: psycopg.Connection[Any], batch: str, worker: str, *, limit: int, ttl: float
) -> dict[str, int]:
    """Up to ``limit`` items of ``batch`` nobody holds (or whose lease expired), now leased to
    ``worker`` for ``ttl`` seconds: item id -> its new token."""
    rows = conn.execute(
        _CLAIM, {"batch": batch, "worker": worker, "limit": limit, "ttl": ttl}
    ).fetchall()
    return {str(item): int(token) for item, token in rows}


def renew(
    conn: psycopg.Connection[Any], batch: str, held: Mapping[str, int], *, ttl: float
) -> set[str]:
    """Extend the leases in ``held`` (item id -> token) by ``ttl`` seconds; the items whose
    lease was lost (expired, or another worker's token now), which must not be acted on."""
    if not held:
        return set()
    ids = list(held)
    kept = conn.execute(
        _RENEW, {"batch": batch, "ids": ids, "tokens": [held[i] for i in ids], "ttl": ttl}
    ).fetchall()
    return set(ids) - {str(row[0]) for row in kept}


def release(conn: psycopg.Connection[Any], batch: str, held: Mapping[str, int]) -> None:
    """Give the leases in ``held`` back (those still held with these tokens)."""
    if held:
        ids = list(held)
        conn.execute(_RELEASE, {"batch": batch, "ids": ids, "tokens": [held[i] for i in ids]})


def fenced_update(
    conn: psycopg.Connection[Any], batch: str, item_id: str, token: int,
    values: Mapping[str, Any],
) -> bool:
    """Set ``values`` (column -> value) on an item while ``token`` is still its lease's: False
    (nothing written) when another worker holds it now."""
    sets = ", ".join(f"{column} = %({column})s" for column in values)
    cursor = conn.execute(
        f"UPDATE items SET {sets} WHERE batch = %(batch)s AND id = %(item)s AND {FENCED}",
        {**values, "batch": batch, "item": item_id, "token": token},
    )
    return cursor.rowcount == 1


def acquire_slots(
    conn: psycopg.Connection[Any], account: str, holder: str, item: str, weight: int, *,
    cap: int, ttl: float,
) -> bool:
    """Take ``weight`` of the account's ``cap`` slots for ``item`` if they are free now (the
    live rows of every worker counted); False when they are not (wait and ask again)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     ("orchestrator-slots:" + account,))
        conn.execute(f"DELETE FROM account_slots WHERE account = %s AND until < {_NOW}",
                     (account,))
        cursor = conn.execute(
            f"""INSERT INTO account_slots (account, holder, item, weight, until)
            SELECT %(account)s, %(holder)s, %(item)s, %(weight)s, {_NOW} + %(ttl)s
            WHERE (SELECT COALESCE(SUM(weight), 0) FROM account_slots
                   WHERE account = %(account)s) + %(weight)s <= %(cap)s
            ON CONFLICT (account, holder, item) DO NOTHING""",
            {"account": account, "holder": holder, "item": item, "weight": weight,
             "ttl": ttl, "cap": cap},
        )
        return cursor.rowcount == 1


def release_slots(conn: psycopg.Connection[Any], account: str, holder: str, item: str) -> None:
    conn.execute("DELETE FROM account_slots WHERE account = %s AND holder = %s AND item = %s",
                 (account, holder, item))


def renew_slots(conn: psycopg.Connection[Any], account: str, holder: str, *, ttl: float) -> int:
    """Extend every slot row ``holder`` has; how many it has."""
    return conn.execute(
        f"UPDATE account_slots SET until = {_NOW} + %s WHERE account = %s AND holder = %s",
        (ttl, account, holder),
    ).rowcount


def slots_in_use(conn: psycopg.Connection[Any], account: str) -> int:
    row = conn.execute(
        f"SELECT COALESCE(SUM(weight), 0) FROM account_slots WHERE account = %s "
        f"AND until >= {_NOW}", (account,)
    ).fetchone()
    return int(row[0]) if row else 0


_TURN = f"""
WITH now AS (SELECT {_NOW} AS t)
INSERT INTO account_rate (account, next_at)
SELECT %(account)s, now.t + %(interval)s FROM now
ON CONFLICT (account) DO UPDATE
    SET next_at = GREATEST(account_rate.next_at, (SELECT t FROM now)) + %(interval)s
RETURNING next_at - %(interval)s - (SELECT t FROM now)
"""


def take_turn(conn: psycopg.Connection[Any], account: str, *, interval: float) -> float:
    """The account's next create turn (creates spaced ``interval`` seconds apart across every
    worker): how many seconds from now it comes (0: at once)."""
    row = conn.execute(_TURN, {"account": account, "interval": interval}).fetchone()
    return max(0.0, float(row[0])) if row else 0.0
