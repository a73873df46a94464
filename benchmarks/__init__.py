"""Benchmarks of the orchestrator against the bundled simulator, at scale.

Not part of the test suite: run ``python -m benchmarks.run --help`` (see
docs/performance.md).
"""
