"""Device choice and numeric precision: CUDA, then Apple MPS, then CPU."""
from __future__ import annotations

import contextlib

import torch

_KNOWN = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA if available, then MPS, then CPU; other names are checked.

    Raises:
        ValueError: unknown device name, or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in _KNOWN:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} requested but Apple MPS is not available on this machine")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Reduced precision used on ``device``: None (fp32) on CPU; bf16 (or fp16) on CUDA; fp16 on MPS."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if precision == "fp32" or device.type == "cpu":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16


def inference_context(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """``torch.inference_mode()`` plus autocast where the device uses reduced precision."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    dtype = autocast_dtype(device, precision)
    if dtype is not None:
        stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
    return stack


def release_memory() -> None:
    """Give freed tensor memory back to the operating system.

    glibc keeps freed heap memory for reuse, so after encoding a large image the process stays at
    its peak size. ``malloc_trim`` returns it (Linux/glibc only; elsewhere this does nothing).
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = _find_malloc_trim()
    if _malloc_trim:
        _malloc_trim(0)


def _find_malloc_trim():
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False


_malloc_trim = None
