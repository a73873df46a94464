"""Logs: secrets are scrubbed from every event; files get JSON, terminals get readable lines."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from pathlib import Path

import structlog

from orchestrator import logs
from orchestrator.providers.kling import JwtAuth

SECRET = "sk-super-secret-value-123"


def capture(tty: bool) -> tuple[io.StringIO, io.StringIO, logs.Redactor]:
    file, console = io.StringIO(), io.StringIO()
    redactor = logs.Redactor()
    logs.configure(redactor, file=file, console=console, tty=tty)
    return file, console, redactor


def test_registered_secrets_jwts_and_bearer_tokens_are_redacted() -> None:
    file, console, redactor = capture(tty=False)
    redactor.add(SECRET)
    token = JwtAuth("ak-access-key", SECRET).token()
    log = structlog.get_logger("t")
    log.error(
        "oops",
        message=f"failed with {SECRET} inside",
        nested={"deep": [f"x{SECRET}x", token]},
        header=f"Authorization: Bearer {token}",
        api="Bearer some-opaque-api-key",
    )
    for text in (file.getvalue(), console.getvalue()):
        assert SECRET not in text
        assert token not in text
        assert "some-opaque-api-key" not in text
        assert logs.REDACTED in text
    event = json.loads(file.getvalue())
    assert event["event"] == "oops"
    assert event["nested"]["deep"][0] == f"x{logs.REDACTED}x"


def test_short_values_are_not_registered_as_secrets() -> None:
    redactor = logs.Redactor()
    redactor.add("ab")  # would redact ordinary words
    assert redactor.scrub("about abc") == "about abc"


def test_console_without_terminal_gets_what_needs_a_person_as_one_line() -> None:
    # Was: under cron every warning reached stderr as a raw JSON line, retries that would
    # succeed included.
    file, console, _ = capture(tty=False)
    log = structlog.get_logger("t")
    log.info("item.submitted", item="a")
    log.warning("item.create_failed", item="b", category="rate_limit", code=1302,
                reason="too many requests", hint="lower limits.requests_per_minute")
    log.warning("item.failed", item="c", category="content", code=1301, http_status=400,
                reason="the prompt was refused\nby the moderation", hint="rephrase the prompt")
    assert [json.loads(line)["event"] for line in file.getvalue().splitlines()] == [
        "item.submitted",
        "item.create_failed",
        "item.failed",
    ]
    assert console.getvalue().splitlines() == [
        "c: failed: content (code 1301): the prompt was refused by the moderation. "
        "Hint: rephrase the prompt"
    ]
    assert "\x1b" not in file.getvalue() + console.getvalue()  # no terminal control codes


def test_verbose_console_shows_retries_too() -> None:
    console = io.StringIO()
    logs.configure(logs.Redactor(), file=None, console=console, tty=False, verbosity=1)
    log = structlog.get_logger("t")
    log.info("item.submitted", item="a", task_id="t1")
    log.warning("item.create_failed", item="b", category="rate_limit", code=1302,
                reason="too many requests")
    assert console.getvalue().splitlines() == [
        "a: item.submitted: task_id=t1",
        "b: create refused, to be retried: rate_limit (code 1302): too many requests.",
    ]


def test_quiet_console_shows_errors_only() -> None:
    console = io.StringIO()
    logs.configure(logs.Redactor(), file=None, console=console, tty=True, verbosity=-1)
    log = structlog.get_logger("t")
    log.warning("item.failed", item="c", category="content", reason="refused")
    log.error("batch.stopping", category="billing", code=1102, reason="no balance",
              hint="top up the account")
    assert console.getvalue().splitlines() == [
        "Stopping new submissions: billing (code 1102): no balance. Hint: top up the account"
    ]


def test_terminal_gets_readable_lines_and_file_stays_json() -> None:
    file, console, _ = capture(tty=True)
    structlog.get_logger("t").info("item.submitted", item="a")
    assert "item.submitted" in console.getvalue()
    assert not console.getvalue().lstrip().startswith("{")
    assert json.loads(file.getvalue())["item"] == "a"


def test_log_file_is_owner_only(tmp_path: Path) -> None:
    path, handle = logs.open_log_file(tmp_path)
    handle.close()
    assert path.parent == tmp_path / "logs"
    assert path.stat().st_mode & 0o077 == 0


class _Holder:
    def __str__(self) -> str:
        return f"holder of {SECRET}"


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_secrets_in_keys_and_non_string_values_are_redacted() -> None:
    # Was: only string values were scrubbed; an exception, bytes, a set or an object holding a
    # secret, or a dict key naming one, reached the file as is (json.dumps default=str).
    file, console, redactor = capture(tty=False)
    redactor.add(SECRET)
    numeric = "918273645501"
    redactor.add(numeric)
    token = JwtAuth("ak-access-key", SECRET).token()
    cyclic: list[object] = [SECRET]
    cyclic.append(cyclic)
    structlog.get_logger("t").error(
        "oops",
        error=ValueError(f"bad key {SECRET}"),
        body=f'{{"token": "{token}"}}'.encode(),
        tags={f"tag-{SECRET}"},
        frozen=frozenset({token}),
        headers={f"x-{SECRET}": "v", "nested": {token: [(SECRET, 1)], 7: bytearray(b"ok")}},
        holder=_Holder(),
        broken=_Unprintable(),
        cyclic=cyclic,
        number=int(numeric),
        count=3,
        ratio=0.5,
        flag=True,
        missing=None,
        **{f"key-{SECRET}": "value"},
    )
    for text in (file.getvalue(), console.getvalue()):
        assert SECRET not in text and token not in text and numeric not in text
    event = json.loads(file.getvalue())
    assert event["error"] == f"ValueError: bad key {logs.REDACTED}"
    assert event["headers"]["nested"]["7"] == "ok"
    assert event["broken"] == "<unprintable _Unprintable>"
    assert (event["count"], event["ratio"], event["flag"], event["missing"]) == (3, 0.5, True, None)
    assert f"key-{logs.REDACTED}" in event


def test_an_existing_log_file_is_tightened_on_open(tmp_path: Path) -> None:
    path, handle = logs.open_log_file(tmp_path, now=1_700_000_000)
    handle.close()
    os.chmod(path, 0o644)
    again, handle = logs.open_log_file(tmp_path, now=1_700_000_000)  # same second, same pid
    handle.close()
    assert again == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_secret_registered_later_is_scrubbed_from_keys_seen_before() -> None:
    redactor = logs.Redactor()
    key = f"x-{SECRET}"
    assert redactor(None, "info", {key: 1}) == {key: 1}
    redactor.add(SECRET)  # e.g. a JWT minted mid-run
    assert redactor(None, "info", {key: 1}) == {f"x-{logs.REDACTED}": 1}


def test_a_secret_registered_later_is_scrubbed_from_values_seen_before() -> None:
    # Short values are remembered scrubbed; a secret registered later must reach them too.
    redactor = logs.Redactor()
    value = f"id-{SECRET}"
    assert redactor(None, "info", {"k": value}) == {"k": value}
    redactor.add(SECRET)
    assert redactor(None, "info", {"k": value}) == {"k": f"id-{logs.REDACTED}"}
    long = "x" * 500 + SECRET  # past what is remembered: scrubbed each time
    assert redactor(None, "info", {"k": long}) == {"k": "x" * 500 + logs.REDACTED}


def test_a_full_disk_is_logged_in_one_line_and_a_bug_with_its_traceback() -> None:
    file, console, _ = capture(tty=False)
    log = structlog.get_logger("t")
    try:
        raise OSError(errno.ENOSPC, "No space left on device", "out/state.sqlite3")
    except OSError:
        log.exception("item.crashed", item="a")
    try:
        raise ValueError("a bug")
    except ValueError:
        log.exception("item.crashed", item="b")
    full, bug = (json.loads(line) for line in file.getvalue().splitlines())
    assert "exception" not in full
    assert full["error"] == "OSError: [Errno 28] No space left on device: 'out/state.sqlite3'"
    assert "Traceback" in bug["exception"]  # a bug keeps its traceback, for the report
    # The console says each in one line for a person; the traceback stays in the file.
    assert console.getvalue().splitlines() == [
        "a: stopped: OSError: [Errno 28] No space left on device: 'out/state.sqlite3'",
        "b: internal error, a bug: see 'item.crashed' in the log; a rerun resumes the item "
        "safely.",
    ]


def test_a_log_file_that_cannot_be_written_names_itself(tmp_path: Path) -> None:
    path, handle = logs.open_log_file(tmp_path)
    assert handle.name == str(path)

    class Full(io.StringIO):
        name = str(path)

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    logs.configure(logs.Redactor(), file=Full(), console=io.StringIO(), tty=False)
    try:
        structlog.get_logger("t").info("item.submitted")
    except OSError as exc:
        assert (exc.errno, exc.filename) == (errno.ENOSPC, str(path))
    else:
        raise AssertionError("a log write that failed was not raised")
    finally:
        handle.close()
        capture(tty=False)  # later tests must not log into the full disk


def test_old_run_logs_are_pruned_to_the_newest(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    old = []
    for n in range(logs.KEEP_LOGS + 5):
        path = folder / f"run-20260101T0000{n:02d}Z-{100 + n}.jsonl"
        path.write_text("{}\n")
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))
        old.append(path)
    mine = folder / "notes.txt"  # not a run log: never touched
    mine.write_text("mine")
    path, handle = logs.open_log_file(tmp_path)
    handle.close()
    kept = sorted(p for p in folder.iterdir() if p.name.startswith("run-"))
    assert path in kept and len(kept) == logs.KEEP_LOGS
    # The newest earlier logs stay (the identity's "last activity" reads the newest).
    assert set(old[-(logs.KEEP_LOGS - 1):]) <= set(kept)
    assert not any(p.exists() for p in old[: len(old) - (logs.KEEP_LOGS - 1)])
    assert mine.read_text() == "mine"
