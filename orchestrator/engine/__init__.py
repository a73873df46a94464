"""The engine: one batch's items driven to their ends (see :mod:`.core`)."""

from orchestrator.engine.batch import RunOutcome
from orchestrator.engine.core import Engine
from orchestrator.engine.submission import IN_FLIGHT_TIMEOUTS

__all__ = ["IN_FLIGHT_TIMEOUTS", "Engine", "RunOutcome"]
