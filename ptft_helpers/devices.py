"""Choosing where tensors live: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

DEVICE_HELP = "Set PTFT_DEVICE to one of: cpu, cuda, cuda:N, mps (or unset it to choose automatically)."


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to train on.

    Order: ``preferred`` if given, else ``$PTFT_DEVICE``, else CUDA, then MPS, then CPU.
    Asking for a device this machine does not have raises ``ValueError``.
    """
    wanted = preferred if preferred is not None else os.environ.get("PTFT_DEVICE", "").strip() or None
    if wanted is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(wanted)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {wanted!r}. {DEVICE_HELP}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {wanted!r} was asked for, but CUDA is not available here. {DEVICE_HELP}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"Device {wanted!r} was asked for, but only {torch.cuda.device_count()} CUDA device(s) exist. "
                + DEVICE_HELP
            )
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"Device {wanted!r} was asked for, but Apple MPS is not available here. {DEVICE_HELP}")
    elif device.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"Device type {device.type!r} is not supported. {DEVICE_HELP}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def cpu_name() -> str:
    """The CPU's model name (e.g. 'AMD EPYC') from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    """A one-line, human-readable name for ``device``."""
    if device.type == "cuda":
        return f"CUDA GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU: {cpu_name()}, {torch.get_num_threads()} threads"


def autocast(device: torch.device, cache_enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA; a no-op elsewhere (CPU and MPS train in fp32).

    ``cache_enabled=False`` is what CUDA graph capture needs (the benchmark uses it)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
