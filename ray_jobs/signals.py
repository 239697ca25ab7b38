"""SIGTERM as an orderly stop: what lets `radiogen train` and `radiogen sweep` close their MLflow runs KILLED
and keep their checkpoints when a scheduler or a user ends them."""

from __future__ import annotations

import signal
import threading


class Sigterm:
    """Within `with Sigterm() as stop:` the first SIGTERM raises KeyboardInterrupt in the main thread and sets
    `stop.received`; later ones are ignored while the run is being closed. A KeyboardInterrupt, because Ray's
    blocking calls pass only that one on promptly (as a plain KeyboardInterrupt: hence the flag) and no
    `except Exception` retry loop swallows it. This replaces Ray's own handler, which dumps a stack and aborts."""

    def __init__(self) -> None:
        self.received = False
        self.previous = None

    def _handle(self, signum, frame) -> None:
        if not self.received:
            self.received = True
            raise KeyboardInterrupt("SIGTERM")

    def __enter__(self) -> "Sigterm":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def exit_code(self) -> int:
        """The shell's code for the signal that stopped the run (143 for SIGTERM, 130 for Ctrl-C)."""
        return 128 + (signal.SIGTERM if self.received else signal.SIGINT)
