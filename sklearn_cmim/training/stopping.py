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

import torch
import torch.distributed as dist

from ..exceptions import STOP_SIGNALS, Terminated
from .distributed import Context

__all__ = ["StopRequest", "raise_for"]


class StopRequest:
    """The first stop signal received while :meth:`watching`, as ``signum`` (``None`` until then).

    Under ``torchrun`` the ranks must stop after the same step, and any rank's signal stops them
    all (a scheduler may signal one process first, or only one). Made on every rank at the same
    point, since it opens a process group of its own.
    """

    def __init__(self, context: Context | None = None):
        self.signum: int | None = None
        self.vote = _Vote() if context is not None and context.distributed else None

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
            if self.vote is not None:
                self.vote.close()

    def _note(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: the user will not wait for the checkpoint
            raise_for(signum)
        self.signum = signum

    def agreed(self) -> int | None:
        """The signal that stops every process after this step, or ``None``; asked once a step.

        Under ``torchrun`` the answer comes one step late, the same on every rank: each step
        sends this rank's signal and reads what the ranks sent the step before, by then arrived,
        so that no rank waits for the others."""
        return self.signum if self.vote is None else self.vote(self.signum)


class _Vote:
    """An asynchronous all-reduce of the ranks' signals, one a step, on a CPU group of its own
    (NCCL groups hold GPU tensors, and the training's own collectives need not wait for it)."""

    def __init__(self):
        self.group = dist.new_group(backend="gloo")
        self.pending: tuple[dist.Work, torch.Tensor] | None = None

    def __call__(self, signum: int | None) -> int | None:
        result = self.close()
        sent = torch.tensor([signum or 0], dtype=torch.int32)
        self.pending = dist.all_reduce(sent, op=dist.ReduceOp.MAX, group=self.group, async_op=True), sent
        return result

    def close(self) -> int | None:
        """The signal the last all-reduce agreed on (``None``: none), once it is done."""
        if self.pending is None:
            return None
        work, sent = self.pending
        work.wait()
        self.pending = None
        return int(sent.item()) or None


def raise_for(signum: int):
    """Raise what the signal raises outside training: ``KeyboardInterrupt`` for Ctrl-C,
    :class:`~sklearn_cmim.exceptions.Terminated` for the others."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)
