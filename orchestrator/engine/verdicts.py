"""The verdicts the engine writes on items, worded in one place: each keeps the cause it
stands on (category, code, HTTP status) and says what the user can do."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.errors import MAX_UNITS, Category, ErrorInfo, Scope
from orchestrator.ledger_api import AssetRecord


class Unresolved(Exception):
    """A create's outcome could not be established; the item stays ``submitting``."""

    def __init__(self, info: ErrorInfo) -> None:
        self.info = info


def _citing(
    cause: ErrorInfo | None,
    message: str,
    hint: str,
    *,
    retryable: bool = True,
    otherwise: Category = Category.SERVER,
) -> ErrorInfo:
    """A verdict that stands on ``cause``: its category, code and HTTP status kept (without a
    cause, the category ``otherwise``)."""
    return ErrorInfo(
        category=cause.category if cause is not None else otherwise,
        code=cause.code if cause is not None else None,
        http_status=cause.http_status if cause is not None else None,
        message=message,
        retryable=retryable,
        hint=hint,
    )


def unreadable_asset(asset: AssetRecord, exc: Exception) -> ErrorInfo:
    return ErrorInfo(
        category=Category.SERVER,
        message=f"asset {asset.index!r} could not be downloaded: internal error "
        f"({type(exc).__name__})",
        retryable=False,
        hint="Please report this with the log file; the task is not resubmitted, and a rerun "
        "tries the download again.",
    )


def unreadable_input(exc: OSError) -> ErrorInfo:
    name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    return ErrorInfo(
        category=Category.VALIDATION,
        message=f"cannot read the item's input file{name}: {exc.strerror or type(exc).__name__}",
        retryable=True,
        hint="Check that the image file exists and is readable, then rerun: nothing was sent.",
    )


def attempts_spent(last: ErrorInfo | None, paid: int) -> ErrorInfo:
    """The verdict on an item whose attempts are used up, keeping the last failure's cause."""
    last = last or ErrorInfo(
        category=Category.TASK_FAILED, message="the task failed", retryable=True, hint=""
    )
    # The cause is worth retrying; the rerun does so only once max_attempts is raised.
    return _citing(
        last,
        f"{last.message} (gave up after {paid} paid attempts: retry.max_attempts)",
        f"Each attempt was a generation that failed for a reason worth retrying "
        f"({last.hint.rstrip('.') or 'see the message'}). Raise retry.max_attempts above "
        f"{paid} and rerun to try again.",
    )


def unreadable_task(task_id: str, polls: int, last: ErrorInfo) -> ErrorInfo:
    """The verdict on a task whose every recent poll failed until poll.timeout: the cause, not
    a timeout (a rerun polls it again)."""
    return _citing(
        last,
        f"the provider's answers about task {task_id} could not be used for {polls} "
        f"polls in a row, until poll.timeout: {last.message}",
        "The task exists and is not resubmitted. Rerun later to poll it again; if this "
        "persists, report it with this message (the provider's answer may have changed shape).",
    )


def lookups_denied(ext: str) -> ErrorInfo:
    return ErrorInfo(
        category=Category.SERVER,
        message=f"whether the create with external_task_id {ext} took effect is not known yet: "
        "the retry budget is spent because the provider keeps failing",
        retryable=True,
        hint="Nothing was resubmitted. Rerun later: the task is looked up again by its "
        "external id before anything is sent.",
    )


#: What an unresolved item's hint says when its provider cannot look tasks up.
RESUBMIT_HINT = (
    "Nothing was resent: the provider cannot look a task up, so sending it again may pay "
    "twice. Check the provider's dashboard or billing for this job; to send it again anyway, "
    "rerun with --resubmit-unresolved."
)


def unknowable(cause: ErrorInfo | None) -> ErrorInfo:
    """A create sent whose answer was lost, to a provider that cannot look tasks up (an
    earlier run's verdict is kept as it was)."""
    if cause is not None and cause.hint == RESUBMIT_HINT:
        return cause
    what = cause.message if cause is not None else "the run stopped while it was in flight"
    return _citing(
        cause,
        f"the create was sent but its answer was lost ({what}); this provider cannot look "
        "tasks up, so whether the job was made (and paid for) cannot be known",
        RESUBMIT_HINT,
        retryable=False,
        otherwise=Category.NETWORK,
    )


def budget_spent(info: ErrorInfo) -> ErrorInfo:
    return _citing(
        info,
        f"{info.message} (not retried: the retry budget is spent because the provider "
        "keeps failing)",
        "The provider was failing for many requests in a row; rerun later and the item "
        "is retried.",
    )


def units_cap_reached(cap: float, spent: float, unit: str, item_id: str, units: float) -> ErrorInfo:
    return ErrorInfo(
        category=Category.BILLING,
        code=MAX_UNITS,
        message=f"your limits.max_units ({cap:g} {unit}) is reached: {spent:g} {unit} "
        f"submitted, and item '{item_id}' needs {units:g} more",
        retryable=False,
        hint="Raise limits.max_units in the manifest (or remove it), then rerun: finished "
        "items are not resubmitted.",
        scope=Scope.ACCOUNT,
    )


def internal_error(exc: BaseException) -> ErrorInfo:
    """An item whose coroutine raised (a bug): its row keeps the state it had."""
    return ErrorInfo(
        category=Category.SERVER,
        message=f"internal error in the orchestrator ({type(exc).__name__})",
        retryable=True,
        hint="Please report this with the log file; rerunning resumes the item safely (it is "
        "looked up before anything is resubmitted).",
    )


def adoption_unknown(cause: ErrorInfo) -> ErrorInfo:
    """A batch that ran without this ledger, whose earlier task for the item could be neither
    found nor proven absent."""
    return replace(
        cause,
        message="the batch ran before without this state file, and whether this item's task "
        f"exists could not be established: {cause.message}",
        retryable=True,
        hint="Nothing was sent. Rerun the manifest to look it up again (or restore the state "
        "file the earlier runs used).",
    )


def exists_unseen(ext: str, looks: int, waited: float, last: ErrorInfo | None) -> ErrorInfo:
    """The provider says a task with the create's external id exists; no read showed it."""
    return _citing(
        last,
        f"the provider says a task with external_task_id {ext} exists (so it is paid "
        f"for), but {looks} lookups in {waited:g} s did not show it",
        "Nothing was resubmitted. Rerun the manifest to look it up again (reads can lag "
        "behind creates), or find the task in the provider's console by its external_task_id.",
    )


def create_unconfirmed(cause: ErrorInfo) -> ErrorInfo:
    """Lookups of a create whose answer was lost kept failing."""
    return _citing(
        cause,
        f"could not confirm whether the create took effect: {cause.message}",
        "Rerun the manifest: the task is looked up again by its external id before "
        "anything is resubmitted.",
    )


def task_gone(task_id: str, cause: ErrorInfo) -> ErrorInfo:
    """A known task the provider no longer finds, poll after poll."""
    return ErrorInfo(
        category=Category.SERVER,
        code=cause.code,
        http_status=cause.http_status,
        message=f"task {task_id} is no longer found by the provider",
        retryable=False,
        hint="Contact the provider's support with the task id; it is not resubmitted "
        "automatically so that it is not paid twice.",
    )


def task_failed(message: str | None) -> ErrorInfo:
    """A task that failed and whose provider gave no classified cause."""
    return ErrorInfo(
        category=Category.TASK_FAILED,
        message=message or "task failed without a reason",
        retryable=False,
        hint="Read the provider's message; fix the input before resubmitting.",
    )
