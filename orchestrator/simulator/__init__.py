"""A Kling-compatible HTTP server with fault injection, for the demo, end-to-end tests and
benchmarks. See :class:`Simulator`; named fault profiles are in :mod:`.profiles`."""

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.faults import TASK_FAILURE_MESSAGES, FaultRule
from orchestrator.simulator.profiles import PROFILES, Profile, make_config
from orchestrator.simulator.server import Simulator
from orchestrator.simulator.state import SimStats

__all__ = [
    "PROFILES",
    "TASK_FAILURE_MESSAGES",
    "FaultRule",
    "Profile",
    "SimConfig",
    "SimStats",
    "Simulator",
    "make_config",
]
