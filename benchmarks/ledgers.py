"""The same scenario with the ledger in SQLite and in PostgreSQL (a server pgserver starts on this
machine): wall time against the bound, the orchestrator's CPU per task, and the database
transactions per task (``pg_stat_database``: every flush is one).

    python -m benchmarks.ledgers                       # target-2000, both ledgers
    python -m benchmarks.ledgers --scenario small-200 --ledgers postgres

The PostgreSQL server's own CPU is not in the orchestrator's figures (it is another process, as
it would be on another host).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.run import run_orchestrator
from benchmarks.scenarios import SCENARIOS

LEDGERS = ("sqlite", "postgres")


def _transactions(url: str, database: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledgers")
    parser.add_argument("--scenario", default="target-2000", choices=sorted(SCENARIOS))
    parser.add_argument("--ledgers", default=",".join(LEDGERS),
                        help="comma-separated: sqlite, postgres")
    args = parser.parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    wanted = [name.strip() for name in args.ledgers.split(",") if name.strip()]

    def log(message: str) -> None:
        print(message, flush=True)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        work = Path(tmp)
        server = None
        try:
            for name in wanted:
                extra: list[str] = []
                url = database = ""
                if name == "postgres":
                    import psycopg
                    from pgserver import get_server  # type: ignore[attr-defined]

                    if server is None:
                        (work / "pg").mkdir()
                        server = get_server(work / "pg", cleanup_mode="stop")
                    base = str(server.get_uri())
                    database = f"bench{len(rows)}"
                    with psycopg.connect(base, autocommit=True) as conn:
                        conn.execute(f"CREATE DATABASE {database}")
                    url = base.replace("/postgres?", f"/{database}?", 1)
                    extra = ["--state", url]
                    before = _transactions(base, database)
                result = run_orchestrator(scenario, work / name, download=False, profile=None,
                                          log=log, extra_args=extra, tag=f"[{name}]")
                if name == "postgres":
                    result["db_transactions_per_task"] = (
                        _transactions(base, database) - before) / scenario.n
                rows.append({"ledger": name, **result})
        finally:
            if server is not None:
                server.cleanup()
    print(f"\nscenario {scenario.name}: N={scenario.n} C={scenario.concurrency} "
          f"bound {scenario.bound():.2f} s")
    print(f"{'ledger':<10} {'exit':>4} {'wall/bound':>10} {'CPU s/1000':>10} "
          f"{'peak RSS MB':>11} {'db tx/task':>10}")
    for row in rows:
        tx = row.get("db_transactions_per_task")
        print(f"{row['ledger']:<10} {row['returncode']:>4} {row['ratio']:>10.3f} "
              f"{row['cpu_s_per_1000']:>10.2f} {row['peak_rss_mb']:>11.1f} "
              f"{'-' if tx is None else f'{tx:.3f}':>10}")
    print(json.dumps([{k: v for k, v in row.items() if k != "workdir"} for row in rows]))
    return 0 if all(row["returncode"] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
