"""Where the model runs and in which precision."""

from __future__ import annotations

import contextlib
import warnings

import torch

__all__ = ["autocast", "resolve_device", "resolve_precision"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means the best available: cuda, then mps, then cpu.

    A device that was asked for but is missing here (a model fitted on a GPU, loaded on a laptop)
    falls back to the CPU with a warning rather than failing.
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
        warnings.warn(f"device {str(device)!r} is not available here; using the CPU", stacklevel=3)
        return torch.device("cpu")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively (and so faster than fp32) on this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` becomes ``"bf16"`` where the hardware has native bf16, else ``"fp32"``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast context for ``precision == "bf16"``, a no-op otherwise."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
