"""Choosing where tensors live (CUDA, then Apple MPS, then the CPU) and in which precision they train there."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Precision:
    """How a device trains: the ``dtype`` of autocast's mixed precision (None: plain float32), whether gradients
    need a ``scaler`` (float16's small range would round small gradients to zero), and whether float32 matrix
    products may use ``tf32`` (TensorFloat-32: 10-bit mantissas in the tensor cores, float32's range)."""

    dtype: torch.dtype | None
    scaler: bool
    tf32: bool

    def describe(self) -> str:
        """E.g. 'bfloat16 mixed precision, TF32 matmuls', or 'float32'."""
        if self.dtype is None:
            return "float32"
        name = {torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]
        return (
            f"{name} mixed precision"
            + (" with a gradient scaler" if self.scaler else "")
            + (", TF32 matmuls" if self.tf32 else "")
        )


def choose_precision(device_type: str, capability: tuple[int, int] | None = None) -> Precision:
    """The decision, as a table: CPUs and Apple GPUs train in float32; CUDA GPUs of compute capability 8.0 or
    more (Ampere: A100, RTX 30xx, and later: H100, ...) in bfloat16 with TF32 matmuls; older CUDA GPUs (Volta,
    Turing: V100, T4, the GPU Colab gives most students) in float16 with a gradient scaler, because they have
    no bfloat16 tensor cores."""
    if device_type != "cuda":
        return Precision(None, scaler=False, tf32=False)
    if capability is not None and capability >= (8, 0):
        return Precision(torch.bfloat16, scaler=False, tf32=True)
    return Precision(torch.float16, scaler=True, tf32=False)


def precision(device: torch.device) -> Precision:
    """``choose_precision`` for this device (on CUDA, from its compute capability)."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return choose_precision(device.type, capability)


def describe_device(device: torch.device) -> str:
    """A one-line, human-readable name for ``device``, with the precision the series trains in there."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = f"CUDA GPU: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    elif device.type == "mps":
        name = "Apple GPU (MPS)"
    else:
        name = f"CPU: {cpu_name()}, {torch.get_num_threads()} threads"
    return f"{name}; trains in {precision(device).describe()}"


class MixedPrecision:
    """``torch.autocast`` to ``precision.dtype``, and TF32 for float32 matrix products where ``precision.tf32``, only
    while inside: PyTorch's TF32 switches are global, so they are set on entry and restored on exit (a float32
    check after training keeps float32). Reusable: a training loop enters it once per step."""

    def __init__(self, device_type: str, precision: Precision, cache_enabled: bool = True) -> None:
        self.device_type, self.precision, self.cache_enabled = device_type, precision, cache_enabled

    def __enter__(self) -> None:
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        if self.precision.tf32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self._autocast = torch.autocast(self.device_type, self.precision.dtype, cache_enabled=self.cache_enabled)
        self._autocast.__enter__()

    def __exit__(self, *exc_info) -> None:
        try:
            self._autocast.__exit__(*exc_info)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved


def autocast(device: torch.device, cache_enabled: bool = True) -> contextlib.AbstractContextManager:
    """The device's mixed precision (``precision``) for a forward pass, as a ``MixedPrecision``; a no-op where it
    trains in float32.

    ``cache_enabled=False`` is what CUDA graph capture needs (the benchmark uses it)."""
    chosen = precision(device)
    if chosen.dtype is None:
        return contextlib.nullcontext()
    return MixedPrecision(device.type, chosen, cache_enabled)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, active where the precision needs one (float16) and a pass-through elsewhere:
    ``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()`` works on every device."""
    return torch.amp.GradScaler(device.type, enabled=precision(device).scaler)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
