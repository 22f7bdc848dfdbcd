"""The heap trimming that keeps a long CPU training run from growing until it is killed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sklearn_cmim.nn.device import HeapTrimmer

# Frees a block of 16 MB in the middle of the heap and prints the share of it still resident.
FREED_AND_KEPT = """
import os, sys
import numpy as np
import torch
from sklearn_cmim.nn.device import HeapTrimmer
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 16 << 20
block = np.ones(size, np.uint8); del block  # glibc's own threshold rises past this size
before = resident()
block = np.ones(size, np.uint8); above = np.ones(4096, np.uint8); del block
if sys.argv[1] == "trim":
    HeapTrimmer(torch.device("cpu"), every=0)()
print((resident() - before) / size)
"""
GLIBC = sys.platform.startswith("linux") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")


def kept_share(mode: str) -> float:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", FREED_AND_KEPT, mode], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return float(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_tensor_memory_goes_back_to_the_system():
    assert kept_share("keep") > 0.9  # what a long run piles up, batch after batch
    assert kept_share("trim") < 0.1


def test_the_trimmer_waits_its_interval_and_leaves_other_devices_alone(monkeypatch):
    calls = []
    trimmer = HeapTrimmer(torch.device("cpu"), every=3600)
    trimmer.trim = calls.append
    trimmer()
    assert calls == []  # not yet due
    trimmer.every = 0
    trimmer()
    assert calls == [0]
    assert HeapTrimmer(torch.device("cuda"), every=0).trim is None
