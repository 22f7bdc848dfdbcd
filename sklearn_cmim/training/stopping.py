"""A pretraining run stopped by a signal keeps its work: the step under way finishes and a
checkpoint is written before the command ends.

Within :meth:`StopRequest.watching`, the first Ctrl-C, SIGTERM (how a batch scheduler stops a
job) or SIGHUP (a terminal that closes) is noted instead of raised. The training loop asks
:meth:`StopRequest.agreed` after each step, writes a checkpoint when the answer is a signal, then
calls :func:`raise_for`, so that the command ends as the signal would have ended it (one line,
status 130, 143 or 129), ready for ``--resume``. A second signal raises at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from ..exceptions import STOP_SIGNALS, Terminated
from .distributed import Context

__all__ = ["StopRequest", "raise_for"]


class StopRequest:
    """The first stop signal received while :meth:`watching`, as ``signum`` (``None`` until then)."""

    def __init__(self):
        self.signum: int | None = None

    @contextmanager
    def watching(self):
        """Note stop signals within the block; Python lets the main thread alone handle them."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self._note) for signum in (signal.SIGINT, *STOP_SIGNALS)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _note(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: the user will not wait for the checkpoint
            raise_for(signum)
        self.signum = signum

    def agreed(self, context: Context, step: int, every: int) -> int | None:
        """The signal that stops every process after ``step``, or ``None``.

        One process asks at every step. Under ``torchrun`` the ranks must stop after the same
        step, so they compare notes every ``every`` steps (the log steps, where they wait for one
        another anyway), and any rank's signal stops them all.
        """
        if not context.distributed:
            return self.signum
        if step % every:
            return None
        return next((signum for signum in context.all_gather(self.signum) if signum is not None), None)


def raise_for(signum: int):
    """Raise what the signal raises outside training: ``KeyboardInterrupt`` for Ctrl-C,
    :class:`~sklearn_cmim.exceptions.Terminated` for the others."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)
