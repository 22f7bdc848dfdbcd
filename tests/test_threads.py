"""CPU threads: the default takes the cores other programs leave idle, and gives torch's setting back."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sklearn_cmim import CMIMTransformer, decoding, embedding, transformer
from sklearn_cmim.nn import device as device_module
from sklearn_cmim.nn.device import cpu_threads, free_cores
from tests.conftest import TINY

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


# ------------------------------------------------------------------ the estimator's n_threads
@pytest.fixture
def two_threads():
    """torch set to two threads, whatever the environment asked for, so one thread is a change."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def record_threads(monkeypatch, module, name, seen):
    """Wrap ``module.name`` so that each call notes the torch threads it ran on."""
    real = getattr(module, name)

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)


def test_fit_transform_and_decoding_run_on_n_threads_and_give_the_setting_back(monkeypatch, smiles,
                                                                               two_threads):
    seen = []
    for module, name in ((embedding, "fit_model"), (transformer, "embed_sequences"),
                         (decoding, "decode_latents")):
        record_threads(monkeypatch, module, name, seen)
    est = CMIMTransformer(**{**TINY, "embedding": "latent", "n_threads": 1}).fit(smiles)
    est.inverse_transform(est.transform(smiles[:4]))
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(("free", "expected"), [(1, 1), (64, 2)])
def test_by_default_the_estimator_runs_on_the_free_cores(monkeypatch, fitted, smiles, two_threads,
                                                         free, expected):
    monkeypatch.setattr(device_module, "free_cores", lambda: free)
    seen = []
    record_threads(monkeypatch, embedding, "fit_model", seen)
    record_threads(monkeypatch, transformer, "embed_sequences", seen)
    clone(fitted).set_params(n_threads=None).fit(smiles).transform(smiles[:4])
    assert seen == [expected, expected]


def test_a_pickle_from_before_n_threads_existed_loads_with_the_default(fitted, smiles):
    state = fitted.__getstate__()
    del state["n_threads"]
    restored = CMIMTransformer.__new__(CMIMTransformer)
    restored.__setstate__(state)
    assert restored.get_params()["n_threads"] is None
    # On the fitted estimator's thread count, the same bits (the count changes the last ones).
    restored.set_params(n_threads=fitted.n_threads)
    np.testing.assert_array_equal(restored.transform(smiles), fitted.transform(smiles))
