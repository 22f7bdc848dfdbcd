"""Where the model runs: device, precision, CPU threads and the CPU heap."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import time
import warnings

import torch

from ..exceptions import user_stacklevel

__all__ = ["HeapTrimmer", "autocast", "cpu_threads", "free_cores", "resolve_device", "resolve_precision"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means the best available: cuda, then mps, then cpu.

    A device that was asked for but is missing here (a model fitted on a GPU, loaded on a laptop)
    falls back to the CPU with a warning rather than failing; a GPU index beyond the machine's
    GPUs falls back to the first GPU.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    missing = (device.type == "cuda" and not torch.cuda.is_available()) or (
        device.type == "mps" and not torch.backends.mps.is_available()
    )
    if missing:
        warnings.warn(f"device {str(device)!r} is not available here; using the CPU",
                      stacklevel=user_stacklevel())
        return torch.device("cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        # A model fitted on a machine's second GPU, loaded where there is one.
        warnings.warn(f"device {str(device)!r} is not available here ({torch.cuda.device_count()} GPU(s)); "
                      "using cuda:0", stacklevel=user_stacklevel())
        return torch.device("cuda", 0)
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively (and so faster than fp32) on this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_bf16()
    return False


@functools.cache
def _cpu_has_bf16() -> bool:
    # Asked once: autocast() checks it for every batch.
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` becomes ``"bf16"`` where the hardware has native bf16, else ``"fp32"``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast context for ``precision == "bf16"``, a no-op otherwise.

    bf16 asked for by name on a CPU without native bf16 matmuls (AVX512-BF16 or AMX) warns: PyTorch
    then emulates them, hundreds of times slower than fp32.
    """
    if precision != "bf16":
        return contextlib.nullcontext()
    if device.type == "cpu" and not bf16_supported(device):
        warnings.warn("precision='bf16' on a CPU without native bf16 matmuls (AVX512-BF16 or AMX): "
                      "PyTorch emulates them, hundreds of times slower than fp32; precision='auto' "
                      "runs in fp32 here", UserWarning, stacklevel=user_stacklevel())
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


_FREE_CORES_TTL = 5.0  # seconds a measurement stands, so row-by-row calls do not each pay for one
_free_cores_cache: tuple[float, int | None] = (float("-inf"), None)


def _cpu_ticks(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """Per usable CPU: (ticks busy, all ticks), from /proc/stat."""
    ticks = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            # user nice system idle iowait irq softirq steal. Niced programs count as busy: where
            # the kernel groups processes by session (autogroup, the default of most desktops),
            # a niced program in another session gets as much of the CPU as ours.
            user, nice, system, _, _, irq, softirq, steal = counts = [int(x) for x in fields[:8]]
            ticks[int(name[3:])] = (user + nice + system + irq + softirq + steal, sum(counts))
    return ticks


def free_cores(window: float = 0.05) -> int | None:
    """How many of the cores this process may use other programs leave idle now.

    Watches the kernel's CPU counters for ``window`` seconds while this process waits, so what it
    sees busy is other programs' work; a core counts by the share of it left idle, rounded. The
    answer stands for a few seconds. ``None`` where the counters are not readable (not Linux).
    """
    global _free_cores_cache
    when, cores = _free_cores_cache
    if time.monotonic() - when < _FREE_CORES_TTL:
        return cores
    try:
        cpus = os.sched_getaffinity(0)
        before = _cpu_ticks(cpus)
        time.sleep(window)
        after = _cpu_ticks(cpus)
    except (AttributeError, KeyError, OSError, ValueError):
        cores = None
    else:
        idle = 0.0
        for cpu, (busy, total) in after.items():
            elapsed = total - before[cpu][1]
            idle += 1.0 - (busy - before[cpu][0]) / elapsed if elapsed > 0 else 1.0
        cores = max(1, round(idle))
    _free_cores_cache = (time.monotonic(), cores)
    return cores


@contextlib.contextmanager
def cpu_threads(n_threads: int | None, device: torch.device):
    """Run the block on ``n_threads`` torch threads; ``None``: as many as there are free cores.

    torch's threads busy-wait for one another between operations, so one more thread than there
    are idle cores stalls them all; ``None`` therefore takes the cores other programs leave idle,
    never more than ``torch.get_num_threads()`` (which ``OMP_NUM_THREADS``, joblib's workers and
    ``torch.set_num_threads`` already set). torch's setting is restored after the block.
    """
    before = torch.get_num_threads()
    wanted = before
    if device.type == "cpu":
        wanted = n_threads if n_threads is not None else min(before, free_cores() or before)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != before:
            torch.set_num_threads(before)


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` under another C library or system."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


class HeapTrimmer:
    """Called after each training step: every ``every`` seconds, hands the memory that the steps
    freed back to the system (glibc's ``malloc_trim``); a no-op off the CPU or off glibc.

    Batches of varying length free and allocate tensors of ever other sizes, and glibc keeps the
    freed blocks for reuse that rarely fits: a CPU run at batch 512 with the bundled models' size
    grows by gigabytes an hour until the kernel stops it. Trimming keeps it to what the batches in
    flight need, at a cost in speed that depends on the run (docs/cli.md has the measurements).
    """

    def __init__(self, device: torch.device, every: float = 5.0):
        self.trim = _malloc_trim() if device.type == "cpu" else None
        self.every = every
        self.last = time.monotonic()

    def __call__(self) -> None:
        if self.trim is not None and time.monotonic() - self.last >= self.every:
            self.trim(0)
            self.last = time.monotonic()
