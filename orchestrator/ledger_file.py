"""What a SQLite file holds, read before anything is written to it: a ledger, a partly created
one, or something that is not a ledger at all.

A run killed, or out of space, while creating its ledger leaves a file whose tables or meta
rows are missing. The meta rows (the batch, and the ledger's id, or in a ledger of an older
version the salt its external ids were made from) are written in one transaction, before any
item, so a ledger without them has never had an intent written: nothing was sent from it, and
it is safe to make it again. Anything else that is not a ledger (not a database, a damaged one,
another program's tables, items without the identity they were sent under) must never be
replaced silently: it is refused, and the user decides.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

__all__ = ["NotALedger", "examine"]

#: SQLite's answers for a file it cannot read as a ledger: not a database, a damaged one, or
#: a statement that does not fit its tables (SQLITE_ERROR: "no such column").
_UNREADABLE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_ERROR)


class NotALedger(Exception):
    """The file is not a ledger, nor a partly created one; the message says why."""


def examine(
    db: sqlite3.Connection,
    *,
    tables: Sequence[str],
    objects: Collection[str],
    identity: Sequence[tuple[str, ...]],
) -> list[str] | None:
    """None when the file is a ledger (its meta rows have, for every entry of ``identity``, one
    of the keys it lists); else the
    ``tables`` present in a partly created one (none for a new, empty file), to drop and make
    again. ``objects``: every name our schema creates; any other (but SQLite's ``sqlite_*``)
    in a file without a ledger's identity means another program's. Raises NotALedger; an
    error of the disk under the file (I/O, full, locked) is the caller's."""
    try:
        present = {str(name) for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if "meta" in present:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if all(any(key in meta for key in keys) for keys in identity):
                return None  # a ledger (tables a later version added are its own business)
        foreign = sorted(n for n in present if n not in objects and not n.startswith("sqlite_"))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise NotALedger(f"it holds tables of another kind: {shown}")
        ours = [table for table in tables if table in present]
        holding = [
            table for table in ours
            if table != "meta"
            and db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
        ]
    except sqlite3.DatabaseError as exc:
        # Not a database, a damaged one, or tables of our names but not our columns; any
        # other error (I/O, a full disk, a lock) is the disk's, not the file's.
        if getattr(exc, "sqlite_errorcode", -1) & 0xFF in _UNREADABLE:
            raise NotALedger(str(exc)) from None
        raise
    if holding:
        raise NotALedger(f"it has {', '.join(holding)} rows but no batch identity")
    return ours
