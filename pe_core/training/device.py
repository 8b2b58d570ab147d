"""The device a run trains on, checked before any model is built: ``--device tpu9`` or
``cuda:7`` on a machine without that GPU is a :class:`ConfigError` that names the devices
there are, not a crash minutes later.

Example::

    check_device("cpu")               # "cpu"
    training_device(None, 0)          # torch.device("cuda:0") if CUDA is there, else cpu
"""

from __future__ import annotations

import re
from typing import Any

from pe_core.errors import ArgumentTypeError, ConfigError

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_device(device: Any) -> str | None:
    """``device`` (a string or ``torch.device``) as a string naming a device this machine
    has: ``cpu``, ``cuda``, ``cuda:N`` with N below the number of GPUs, or ``mps``; None
    stays None (CUDA if available, else CPU)."""
    if device is None:
        return None
    if type(device).__name__ == "device" and type(device).__module__ == "torch":
        device = str(device)
    if not isinstance(device, str):
        raise ArgumentTypeError(
            f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__} "
            f"{device!r:.60}"
        )
    if not _DEVICE.match(device):
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps")
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r}: this machine has no CUDA GPU; use cpu")
        if index and int(index) >= count:
            raise ConfigError(
                f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' is not available on this machine; use cpu")
    return device


def training_device(device: str | None, local_rank: int) -> Any:
    """The ``torch.device`` of this process: ``cuda`` (or nothing, where CUDA is there)
    means this process's own GPU under torchrun."""
    import torch

    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    return torch.device(device)
