"""The CPU heap setting that keeps a long CPU pretraining run from growing until it is killed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sklearn_cmim.nn import device

# Frees a block of 16 MB in the middle of the heap and prints the share of it still resident.
FREED_AND_KEPT = """
import os, sys
import numpy as np
import torch
from sklearn_cmim.nn.device import keep_cpu_heap_small
if sys.argv[1] == "set":
    assert keep_cpu_heap_small(torch.device("cpu"))
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 16 << 20
block = np.ones(size, np.uint8); del block  # glibc's own threshold rises past this size
before = resident()
block = np.ones(size, np.uint8); above = np.ones(4096, np.uint8); del block
print((resident() - before) / size)
"""


def kept_share(mode: str) -> float:
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_MMAP_THRESHOLD_"}
    done = subprocess.run([sys.executable, "-c", FREED_AND_KEPT, mode], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return float(done.stdout)


@pytest.mark.skipif(not (sys.platform.startswith("linux") and hasattr(os, "confstr")
                         and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")),
                    reason="the setting is glibc's")
def test_freed_tensor_memory_goes_back_to_the_system():
    assert kept_share("default") > 0.9  # what a long run piles up, batch after batch
    assert kept_share("set") < 0.1


def test_a_threshold_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert device.keep_cpu_heap_small(torch.device("cpu")) is False


def test_a_gpu_run_leaves_the_heap_as_it_is():
    assert device.keep_cpu_heap_small(torch.device("cuda")) is False
