"""SIGTERM as an orderly stop: what lets `radiogen train` and `radiogen sweep` close their MLflow runs KILLED
and keep their checkpoints when a scheduler or a user ends them."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


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


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """SIGTERM and SIGINT held until the block ends, then delivered to the handlers they would have reached: for a
    checkpoint write, which an interrupt landing inside torch.save's zip writer turned into a RuntimeError from its
    cleanup (exit 1 and a traceback instead of an orderly stop, and no checkpoint of that step). A no-op outside the
    main thread (Ray Train workers, Tune trials), where no signal handler runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)
