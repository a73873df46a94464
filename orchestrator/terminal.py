"""The console of a run: rich's live progress view on a terminal, and the lines a person must
read, printed above it (or, without a terminal, one after another with nothing redrawn).

Everything the run says on the console goes through :meth:`Terminal.say`, so that a warning
never lands in the middle of the progress view.
"""

from __future__ import annotations

import contextlib
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from orchestrator.progress import Snapshot, View


class Terminal:
    """``live``: show the progress view (only when ``stream`` is a terminal). ``width``: a
    fixed width, for tests; by default the terminal's, read at each redraw."""

    def __init__(self, stream: TextIO, *, live: bool, width: int | None = None) -> None:
        self._stream = stream
        self._console = (
            Console(file=stream, width=width, force_terminal=True, highlight=False,
                    emoji=False, markup=False)
            if live else None
        )
        self._live: Live | None = None

    @property
    def wants_live(self) -> bool:
        """The progress view is to be shown (once the batch starts)."""
        return self._console is not None

    def start(self) -> None:
        if self._console is not None and self._live is None:
            # Redrawn by our own task at our own pace (no thread), and gone at the end: the
            # run's summary follows.
            self._live = Live(
                console=self._console, auto_refresh=False, transient=True,
                redirect_stdout=False, redirect_stderr=False,
            )
            self._live.start()

    def show(self, snap: Snapshot) -> None:
        if self._live is not None:
            self._live.update(View(snap), refresh=True)

    def say(self, line: str) -> None:
        """One line for a person, above the live view when there is one."""
        if self._live is not None and self._console is not None:
            self._console.print(Text(line))
        else:
            self._stream.write(line + "\n")
            self._stream.flush()

    def stop(self) -> None:
        """The view removed and the cursor shown again; safe to call more than once, and on a
        closed terminal."""
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(OSError, ValueError):
                live.stop()
