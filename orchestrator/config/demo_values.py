"""Values that suit the bundled simulator and not a real provider: a manifest copied from the
demo and pointed at a real host keeps polling five times a second and retrying at once. Said
as warnings (validate and run print them); nothing is refused."""

from __future__ import annotations

from urllib.parse import urlsplit

from orchestrator.config.sections import SIMULATOR_BASE_URL, PollSettings, RetrySettings
from orchestrator.validators import is_loopback

#: (setting, below this it is the demo's, the default, what it costs): the defaults suit the
#: real providers.
_FLOORS = (
    ("poll.interval", 1.0, PollSettings.interval,
     "each running task is polled this often; providers advise every few seconds"),
    ("poll.max_interval", 5.0, PollSettings.max_interval,
     "a long task is polled this often to its end"),
    ("retry.base_delay", 0.5, RetrySettings.base_delay,
     "a failing provider is retried this soon"),
)


def demo_like(base_url: str, poll: PollSettings, retry: RetrySettings) -> list[str]:
    """Warnings for the demo-like values of a manifest that sends to a real provider."""
    if base_url == SIMULATOR_BASE_URL or is_loopback(urlsplit(base_url).hostname or ""):
        return []
    values = {
        "poll.interval": poll.interval,
        "poll.max_interval": poll.max_interval,
        "retry.base_delay": retry.base_delay,
    }
    return [
        f"{name}: {values[name]:g} s is a demo value, and {base_url} is a real provider "
        f"({why}): the default, {default:g} s, suits it"
        for name, floor, default, why in _FLOORS
        if values[name] < floor
    ]
