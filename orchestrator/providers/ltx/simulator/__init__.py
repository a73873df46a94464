"""A stand-in for LTX Video's asynchronous v2 API on loopback: real HTTP, LTX's wire format and
model rules, an account with slots, a rate limit and credits, and faults injected as data. Used
by end-to-end tests and by the demo (no account, no network).

    with LtxSimulator(LtxSimConfig(task_duration=(0.1, 0.2))) as sim:
        ...  # point a client at sim.url with Authorization: Bearer sim-ltx-key
"""

from orchestrator.providers.ltx.simulator.config import LtxSimConfig
from orchestrator.providers.ltx.simulator.faults import LtxFaultRule
from orchestrator.providers.ltx.simulator.server import LtxSimulator
from orchestrator.providers.ltx.simulator.stats import LtxSimStats

__all__ = ["LtxFaultRule", "LtxSimConfig", "LtxSimStats", "LtxSimulator"]
