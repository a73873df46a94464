"""The command line: ``python -m orchestrator COMMAND`` (see :mod:`orchestrator.__main__`)."""
