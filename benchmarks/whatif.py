"""``python -m orchestrator`` with experimental patches applied in memory, to size a possible fix
before anyone writes it. Nothing under orchestrator/ is changed; results of such runs are NOT the
orchestrator's figures (benchmarks.run labels them ``whatif``).

    BENCH_WHATIF=pool=250,sync=normal python -m benchmarks.whatif run MANIFEST

Patches (comma-separated in ``BENCH_WHATIF``):

- ``pool=N``: the provider's httpx pool gets N connections instead of 100;
- ``sync=normal``: the ledger uses ``PRAGMA synchronous=NORMAL`` instead of FULL (WAL mode: a
  power loss may lose the last transactions, a process crash loses nothing);
- ``nosniff``: make ``import sniffio`` cheap to fail (httpcore 1.0.9 tries to import it on every
  lock it creates; anyio >= 4.11 no longer installs it), by caching the failed import.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _pool(size: int) -> None:
    import httpx

    original = httpx.Limits

    class Limits(original):  # type: ignore[valid-type,misc]
        def __init__(self, **kwargs: Any) -> None:
            if kwargs.get("max_connections") == 100:
                kwargs["max_connections"] = size
                kwargs["max_keepalive_connections"] = size
            super().__init__(**kwargs)

    httpx.Limits = Limits  # type: ignore[misc]


def _sync_normal() -> None:
    import sqlite3

    from orchestrator import ledger

    original = ledger.Ledger._connect

    def connect(path: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = original(path)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    ledger.Ledger._connect = staticmethod(connect)  # type: ignore[method-assign]


def _no_sniffio() -> None:
    # A None entry in sys.modules makes "import sniffio" raise ImportError at once.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


def apply(spec: str) -> list[str]:
    applied = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name == "pool":
            _pool(int(value))
        elif name == "sync" and value.lower() == "normal":
            _sync_normal()
        elif name == "nosniff":
            _no_sniffio()
        else:
            raise SystemExit(f"unknown BENCH_WHATIF patch {part!r}")
        applied.append(part)
    return applied


def main() -> int:
    apply(os.environ.get("BENCH_WHATIF", ""))
    from orchestrator.__main__ import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
