"""The learning-rate schedule: a warm-up counted in steps, then a decay over the steps or over the
training clock (``cmim pretrain --max-minutes``), read here from a fake clock instead of waiting."""

import math

import pytest
import torch

from sklearn_cmim.config import TrainSettings
from sklearn_cmim.training.schedule import TrainingClock, lr_factor, make_scheduler

SETTINGS = TrainSettings(learning_rate=1.0, min_lr_ratio=0.1)


def cosine(progress: float) -> float:
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def rates_at(times: list[float], total_steps: int, warmup_steps: int | None, budget: float | None,
             spent: float = 0.0) -> list[float]:
    """The rate of steps 1, 2, ...: the clock reads ``times[i]`` when step i + 1's rate is set."""
    now = [0.0]
    clock = TrainingClock(budget, spent, now=lambda: now[0])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=SETTINGS.learning_rate)
    scheduler = make_scheduler(optimizer, total_steps, SETTINGS, warmup_steps, clock)
    clock.start()
    rates = []
    for seconds in times:
        optimizer.step()
        now[0] = seconds
        clock.tick()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    return rates


def test_the_decay_follows_the_clock_after_a_warm_up_counted_in_steps():
    # A step budget far away, as the bundled models' runs had: the clock alone moves the decay.
    rates = rates_at([1, 2, 3, 4, 50, 50, 100, 200], total_steps=1_000_000, warmup_steps=4, budget=100)
    expected = [0.5, 0.75, 1.0, cosine(0.04), cosine(0.5), cosine(0.5), 0.1, 0.1]
    assert rates == pytest.approx(expected)


def test_the_decay_follows_whichever_limit_is_further_along():
    # 10 steps, 2 of them warm-up; the clock runs slower than the steps, then overtakes them.
    rates = rates_at([0, 0, 0, 0, 90, 90], total_steps=10, warmup_steps=2, budget=100)
    assert rates == pytest.approx([1.0, 1.0, cosine(1 / 8), cosine(2 / 8), cosine(0.9), cosine(0.9)])


def test_without_a_budget_the_schedule_goes_by_steps_alone():
    rates = rates_at([0, 1e9, 2e9, 3e9], total_steps=200, warmup_steps=None, budget=None)
    # The default warm-up is 1% of the steps: 2 here.
    assert rates == [lr_factor(step, 2, (step - 2) / 198, 0.1) for step in (1, 2, 3, 4)]
    assert rates[:2] == [1.0, 1.0] and rates[2] == pytest.approx(cosine(1 / 198))


def test_a_resumed_clock_counts_the_seconds_spent_before():
    rates = rates_at([10, 20], total_steps=1_000_000, warmup_steps=1, budget=100, spent=70)
    assert rates == pytest.approx([cosine(0.8), cosine(0.9)])
    now = [5.0]
    clock = TrainingClock(budget=60, spent=50, now=lambda: now[0])
    assert not clock.expired()  # before the first reading, the seconds spent
    clock.start()
    now[0] = 15.0
    assert clock.read() == 60 and not clock.expired()  # read() leaves the reading as it was
    assert clock.tick() == 60 and clock.expired() and clock.progress() == 1
