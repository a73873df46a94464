"""Log events as one short line for a person: the item, what happened, what to do.

The log file keeps every event as JSON; the console shows the events that need a person
(failures, stops, account warnings) as these lines, at a terminal and under cron alike. Events
of something that is retried and may still succeed are in :data:`VERBOSE_ONLY`: shown with
``-v`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Events of what is retried or handled, and may still end well: on the console with -v only.
VERBOSE_ONLY = frozenset({
    "item.create_failed",
    "item.task_failed",
    "item.lookup_failed",
    "item.poll_failed",
    "item.poll_abandoned",  # the batch's stop says why
    "item.exists",
    "limits.concurrency_lowered",
    "batch.interrupted",  # the command says so itself
})

#: Fields every event carries, or that are said by the line itself.
_CONTEXT = frozenset({
    "event", "level", "timestamp", "batch", "item", "logger", "exception",
    "category", "code", "http_status", "reason", "hint",
})
#: Longest provider message shown on the console (the log file keeps it whole).
MAX_REASON = 160


def _clip(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(event: Mapping[str, Any]) -> str:
    """``category code N: reason``, from an event's error fields."""
    category = event.get("category")
    code = event.get("code")
    head = str(category) if category else ""
    if code is not None:
        head = f"{head} (code {code})".lstrip()
    reason = _clip(str(event.get("reason") or ""))
    return f"{head}: {reason}" if head and reason else head or reason


def _hint(event: Mapping[str, Any]) -> str:
    hint = event.get("hint")
    return f" Hint: {_clip(str(hint), 240)}" if hint else ""


def _rest(event: Mapping[str, Any]) -> str:
    """The event's own fields, ``key=value``."""
    return " ".join(
        f"{key}={_clip(str(value), 80)}"
        for key, value in event.items()
        if key not in _CONTEXT and value is not None
    )


def _failed(e: Mapping[str, Any]) -> str:
    return f"failed: {_error(e)}.{_hint(e)}"


def _unresolved(e: Mapping[str, Any]) -> str:
    return f"unresolved: {_error(e)}.{_hint(e)}"


def _partial(e: Mapping[str, Any]) -> str:
    return f"partial: the task returned {e.get('got')} of {e.get('expected')} assets."


def _download_failed(e: Mapping[str, Any]) -> str:
    return f"file {e.get('index')} not downloaded: {_error(e)}.{_hint(e)}"


def _crashed(e: Mapping[str, Any]) -> str:
    if e.get("error"):  # this machine's files failed (a full disk): not a bug
        return f"stopped: {_clip(str(e['error']))}"
    kind = f" ({e['error_type']})" if e.get("error_type") else ""
    return (f"internal error{kind}, a bug: see 'item.crashed' in the log; a rerun resumes the "
            "item safely.")


def _create_failed(e: Mapping[str, Any]) -> str:
    return f"create refused, to be retried: {_error(e)}."


def _task_failed(e: Mapping[str, Any]) -> str:
    return f"task failed, a new attempt in {e.get('retry_in')} s: {_error(e)}."


def _stopping(e: Mapping[str, Any]) -> str:
    return f"Stopping new submissions: {_error(e)}.{_hint(e)}"


def _max_units(e: Mapping[str, Any]) -> str:
    return (f"limits.max_units reached ({e.get('units_spent'):g} of {e.get('max_units'):g} "
            "units reserved): nothing more is sent; what was sent is still collected.")


def _items_changed(e: Mapping[str, Any]) -> str:
    first = ", ".join(str(i) for i in e.get("first") or [])
    more = ", ..." if (e.get("items") or 0) > len(e.get("first") or []) else ""
    return f"{e.get('items')} item(s) changed in the manifest since their result was made " \
           f"({first}{more})."


_ITEM_LINES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "item.failed": _failed,
    "item.unresolved": _unresolved,
    "item.partial": _partial,
    "item.download_failed": _download_failed,
    "item.crashed": _crashed,
    "item.create_failed": _create_failed,
    "item.task_failed": _task_failed,
}
_BATCH_LINES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "batch.stopping": _stopping,
    "limits.max_units_reached": _max_units,
    "account.warning": lambda e: f"Account: {_clip(str(e.get('reason')), 240)}",
    "batch.deadline_reached": lambda e: "limits.deadline reached: nothing more is sent.",
    "batch.lock_lost": lambda e: f"Lock lost: {e.get('reason')}.",
    "batch.items_changed": _items_changed,
}


def human_line(event: Mapping[str, Any]) -> str:
    """One line for a person. Known events in their words; any other as its name and fields,
    with the item first."""
    name = str(event.get("event", ""))
    item = event.get("item")
    try:
        if item is not None and name in _ITEM_LINES:
            return f"{item}: {_ITEM_LINES[name](event)}"
        if name in _BATCH_LINES:
            return _BATCH_LINES[name](event)
    except (TypeError, ValueError):  # a field of an unexpected type: the generic line
        pass
    rest = _rest(event)
    error = f" {_error(event)}" if event.get("category") or event.get("reason") else ""
    line = f"{name}:{error}{_hint(event)}" + (f" {rest}" if rest else "")
    return f"{item}: {line}" if item is not None else line
