"""A Kling-compatible HTTP server with fault injection, for the demo, end-to-end tests and
benchmarks. See :class:`Simulator`."""

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.faults import FaultRule
from orchestrator.simulator.server import Simulator
from orchestrator.simulator.state import SimStats

__all__ = ["FaultRule", "SimConfig", "SimStats", "Simulator"]
