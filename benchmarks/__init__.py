"""Benchmarks of the orchestrator against the bundled simulator (issue 5, "Performance at scale").

Not part of the test suite: run ``python -m benchmarks.run --help`` (see the Performance
section of README.md).
"""
