"""Turns at one model for the threads that share it, queries first: a forward pass of documents waits while a
query pass waits, so a search is never starved by a bulk encode (a plain lock lets the thread that just released
it take it again, pass after pass)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    """One forward pass at a time; among the waiting, urgent passes (queries) go before the others."""

    def __init__(self) -> None:
        self._free = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextmanager
    def turn(self, urgent: bool) -> Iterator[None]:
        """Hold the model for one pass; an urgent turn is given before any waiting non-urgent one."""
        with self._free:
            if urgent:
                self._urgent_waiting += 1
                try:
                    self._free.wait_for(lambda: not self._busy)
                finally:
                    self._urgent_waiting -= 1
            else:
                self._free.wait_for(lambda: not self._busy and not self._urgent_waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._free:
                self._busy = False
                self._free.notify_all()
