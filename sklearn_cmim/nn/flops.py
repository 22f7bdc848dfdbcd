"""Hardware peak, measured: the FLOP/s of a large matmul, the yardstick for model FLOP utilisation."""

from __future__ import annotations

import time

import torch

__all__ = ["matmul_peak_flops"]


def matmul_peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                      size: int = 2048, min_seconds: float = 1.0) -> float:
    """FLOP/s of repeated ``size x size`` matmuls in ``dtype`` on ``device`` (best of the runs).

    Examples
    --------
    >>> matmul_peak_flops("cpu", torch.float32, size=256, min_seconds=0.05) > 1e8
    True
    """
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up: kernel selection, allocation
    sync()
    best, spent = 0.0, 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        a @ b
        sync()
        elapsed = time.perf_counter() - start
        spent += elapsed
        best = max(best, 2 * size**3 / elapsed)
    return best
