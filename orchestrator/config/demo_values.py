"""Values that suit the bundled simulator and not a real provider: a manifest copied from the
demo and pointed at a real host keeps polling five times a second and retrying at once. Said
as warnings (validate and run print them); nothing is refused."""

from __future__ import annotations

from urllib.parse import urlsplit

from orchestrator.config.sections import SIMULATOR_BASE_URL, PollSettings, RetrySettings
from orchestrator.validators import is_loopback


def demo_like(base_url: str, poll: PollSettings, retry: RetrySettings) -> list[str]:
    """Warnings for the demo-like values of a manifest that sends to a real provider: below
    its floor a value is the demo's; the defaults suit the real providers."""
    if base_url == SIMULATOR_BASE_URL or is_loopback(urlsplit(base_url).hostname or ""):
        return []
    checks = (  # (setting, its value, its floor, the default, what the value costs)
        ("poll.interval", poll.interval, 1.0, PollSettings.interval,
         "each running task is polled this often; providers advise every few seconds"),
        ("poll.max_interval", poll.max_interval, 5.0, PollSettings.max_interval,
         "a long task is polled this often to its end"),
        ("retry.base_delay", retry.base_delay, 0.5, RetrySettings.base_delay,
         "a failing provider is retried this soon"),
    )
    return [
        f"{name}: {value:g} s is a demo value, and {base_url} is a real provider "
        f"({why}): the default, {default:g} s, suits it"
        for name, value, floor, default, why in checks
        if value < floor
    ]
