"""A one-line progress display on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """Rewrites one status line on stderr (at most every ``interval`` seconds).

    On a terminal the line is redrawn in place; otherwise a line is printed every few
    seconds so that logs stay readable.
    """

    def __init__(self, enabled: bool = True, interval: float = 0.25) -> None:
        self.enabled = enabled
        self._tty = sys.stderr.isatty()
        self._interval = interval if self._tty else 2.0
        self._last = 0.0
        self._width = 0
        self.label = ""

    def update(self, text: str | Callable[[], str], force: bool = False) -> None:
        """Show ``text`` (a callable is only called when the line is due)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        if callable(text):
            text = text()
        line = f"{self.label} {text}".strip()
        if self._tty:
            pad = max(0, self._width - len(line))
            sys.stderr.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self, text: str = "") -> None:
        if not self.enabled:
            return
        if text:
            self.update(text, force=True)
        if self._tty and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self._width = 0
