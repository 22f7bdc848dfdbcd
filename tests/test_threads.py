"""CPU threads: the default takes the cores other programs leave idle, and gives torch's setting back."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sklearn_cmim.nn import device as device_module
from sklearn_cmim.nn.device import cpu_threads, free_cores

CPU = torch.device("cpu")
LINUX_COUNTERS = pytest.mark.skipif(not Path("/proc/stat").exists() or not hasattr(os, "sched_getaffinity"),
                                    reason="free cores are read from Linux's /proc/stat")


@pytest.fixture
def fresh_measurement(monkeypatch):
    """No measurement cached from an earlier test."""
    monkeypatch.setattr(device_module, "_free_cores_cache", (float("-inf"), None))


def fake_counters(monkeypatch, *readings):
    """``_cpu_ticks`` returns these readings in turn (per CPU: busy ticks, all ticks)."""
    readings = iter(readings)
    monkeypatch.setattr(device_module, "_cpu_ticks", lambda cpus: next(readings))


@pytest.mark.parametrize(("busy_share", "expected"), [((0.0, 0.0), 2), ((1.0, 0.0), 1), ((1.0, 1.0), 1),
                                                      ((0.2, 0.1), 2), ((0.9, 0.7), 1)])
def test_free_cores_counts_the_idle_share_of_each_core(monkeypatch, fresh_measurement, busy_share, expected):
    ticks = 10
    fake_counters(monkeypatch, {0: (0, 0), 1: (0, 0)},
                  {cpu: (round(share * ticks), ticks) for cpu, share in enumerate(busy_share)})
    assert free_cores(window=0) == expected


def test_a_measurement_stands_for_a_few_seconds(monkeypatch, fresh_measurement):
    fake_counters(monkeypatch, {0: (0, 0)}, {0: (0, 10)})
    assert free_cores(window=0) == 1
    fake_counters(monkeypatch)  # reading the counters again would raise StopIteration
    assert free_cores(window=0) == 1


def test_unreadable_counters_leave_the_choice_to_torch(monkeypatch, fresh_measurement):
    def unreadable(cpus):
        raise OSError("no /proc here")

    monkeypatch.setattr(device_module, "_cpu_ticks", unreadable)
    assert free_cores(window=0) is None
    with cpu_threads(None, CPU) as threads:
        assert threads == torch.get_num_threads()


@LINUX_COUNTERS
def test_a_program_spinning_on_a_core_takes_that_core(fresh_measurement):
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("needs two cores: one to keep busy, one to measure from")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = free_cores(window=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert 1 <= busy <= cores - 1


def test_cpu_threads_sets_the_count_and_restores_it(monkeypatch, fresh_measurement):
    before = torch.get_num_threads()
    with cpu_threads(1, CPU) as threads:
        assert threads == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_the_default_never_asks_for_more_threads_than_torch_has(monkeypatch, fresh_measurement):
    monkeypatch.setattr(device_module, "free_cores", lambda: 64)
    before = torch.get_num_threads()
    with cpu_threads(None, CPU) as threads:
        assert threads == before
    monkeypatch.setattr(device_module, "free_cores", lambda: 1)
    with cpu_threads(None, CPU) as threads:
        assert threads == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_other_devices_keep_torchs_cpu_threads(monkeypatch):
    monkeypatch.setattr(device_module, "free_cores", lambda: 1)
    with cpu_threads(None, torch.device("cuda")) as threads:
        assert threads == torch.get_num_threads()
