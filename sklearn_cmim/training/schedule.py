"""The learning-rate schedule: a linear warm-up, then a cosine decay to a floor.

The decay runs over the steps after the warm-up, or over a wall-time budget read from a
:class:`TrainingClock` (``cmim pretrain --max-minutes``), whichever is further along, so that
it reaches its floor as the run ends by either limit. The bundled models were trained with a
warm-up counted in steps and the decay over minutes (``scripts/bundled_models/``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..config import TrainSettings

__all__ = ["TrainingClock", "lr_factor", "make_scheduler"]


class TrainingClock:
    """Seconds of training so far, against an optional budget in seconds.

    ``spent`` holds the seconds of the runs before this one (a checkpoint stores them, so a
    resumed run goes on counting); :meth:`start` starts this run's count. :attr:`elapsed` is the
    last reading, taken with :meth:`tick`: the schedule and the budget go by it, so that the
    ranks of a ``torchrun`` job can all use rank 0's.

    Examples
    --------
    >>> readings = iter([100.0, 130.0])
    >>> clock = TrainingClock(budget=60.0, spent=15.0, now=lambda: next(readings))
    >>> clock.start()
    >>> clock.tick()
    45.0
    >>> clock.progress(), clock.expired()
    (0.75, False)
    """

    def __init__(self, budget: float | None = None, spent: float = 0.0,
                 now: Callable[[], float] = time.monotonic):
        self.budget, self.spent, self.now = budget, spent, now
        self.started, self.elapsed = None, spent

    def start(self) -> None:
        self.started, self.elapsed = self.now(), self.spent

    def read(self) -> float:
        """The seconds so far, without changing :attr:`elapsed`."""
        return self.spent + self.now() - self.started

    def tick(self) -> float:
        """Take a reading: :attr:`elapsed` becomes :meth:`read`'s seconds, which it returns."""
        self.elapsed = self.read()
        return self.elapsed

    def progress(self) -> float:
        """The share of the budget spent at the last reading; 0 without a budget."""
        return 0.0 if self.budget is None else self.elapsed / self.budget

    def expired(self) -> bool:
        return self.budget is not None and self.elapsed >= self.budget


def lr_factor(step: int, warmup: int, progress: float, floor: float) -> float:
    """The learning rate of ``step`` over the peak: ``(step + 1) / warmup`` during the warm-up,
    then a cosine from 1 down to ``floor`` as ``progress`` goes from 0 to 1.

    Examples
    --------
    >>> lr_factor(4, warmup=10, progress=0.0, floor=0.1)
    0.5
    >>> lr_factor(50, warmup=10, progress=0.5, floor=0.1), lr_factor(50, warmup=10, progress=2.0, floor=0.1)
    (0.55, 0.1)
    """
    if step < warmup:
        return (step + 1) / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return floor + (1 - floor) * cosine


def make_scheduler(optimizer, total_steps: int, settings: TrainSettings, warmup_steps: int | None = None,
                   clock: TrainingClock | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A schedule stepped once per batch: :func:`lr_factor` with a warm-up of ``warmup_steps``
    (default: ``settings.warmup_fraction`` of ``total_steps``), then the decay to
    ``settings.min_lr_ratio`` over the steps up to ``total_steps`` or, with a ``clock`` that has a
    budget, over its seconds, whichever is further along."""
    warmup = warmup_steps
    if warmup is None:
        warmup = max(1, math.ceil(settings.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        progress = (step - warmup) / max(1, total_steps - warmup)
        if clock is not None:
            progress = max(progress, clock.progress())
        return lr_factor(step, warmup, progress, settings.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
