"""``report``: the batch's report written from its ledger on demand, from any host that reaches
it (a ledger in PostgreSQL), while a run is going or after: report.json, results.jsonl, report.md
and report.html, as a run writes them at its end, marked ``"snapshot": true`` (what no run
measured, its concurrency and its stop, is left out). Sends nothing; writes only the report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TextIO

from orchestrator import layout, local_failures, logs, report, runs, status
from orchestrator.cli.common import Exit, LocalStop, Usage, load, recovery_hint, state_of
from orchestrator.cli.run_setup import check_own_files
from orchestrator.ledger import LedgerError, LedgerUnavailable, LedgerUnreadable


def cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    manifest = load(args.manifest, err)
    state = state_of(args, manifest)
    report_path = Path(args.report) if args.report else manifest.output_dir / layout.REPORT_FILE
    check_own_files(manifest, state.path, report_path)
    try:
        records = status.load_records(state, manifest.name)
        history = state.read_runs(manifest.name)
    except FileNotFoundError as exc:
        raise Usage(f"{exc}: no report to write yet") from None
    except LedgerUnreadable as exc:
        raise Usage(f"{exc} {recovery_hint(args.manifest, args.state)}") from None
    except LedgerUnavailable as exc:
        raise LocalStop(str(exc)) from None
    except LedgerError as exc:
        raise Usage(str(exc)) from None
    by_id = {record.id: record for record in records}
    figures = runs.batch_figures(history)
    requests = {item.id: item.request for item in manifest.items}
    redactor = logs.Redactor()
    try:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        written = report.write_report(
            report_path,
            batch=manifest.name,
            manifest=manifest.path,
            records=(by_id[item.id] for item in manifest.items if item.id in by_id),
            started_at=str(figures["first_started_at"]),
            finished_at=str(report.iso_utc(time.time())),
            extra={
                "snapshot": True,
                "first_started_at": figures["first_started_at"],
                "requests": figures["requests"],
                "retries": figures["retries"],
                "run_count": figures["run_count"],
                "runs": figures["runs"],
                "max_units": manifest.limits.max_units,
            },
            output_dir=manifest.output_dir,
            texts=lambda item_id: (
                report.ItemText.of(requests[item_id].fields) if item_id in requests else None
            ),
            scrub=redactor.clean,
        )
    except local_failures.CAUGHT as exc:
        failure = local_failures.find(exc, path=report_path)
        if failure is None:
            raise
        raise LocalStop(failure.line()) from None
    counts = report.counts_text(written.head["counts"])
    out.write(
        f"Report of batch '{manifest.name}' ({counts}) written from {state.describe()}: "
        f"{report_path}; to read: report.md, report.html.\n"
    )
    return Exit.OK
