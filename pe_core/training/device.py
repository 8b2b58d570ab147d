"""The device a run trains on. The name is checked before any model is built by
:func:`pe_core.validate.device` (``--device tpu9`` or ``cuda:7`` on a machine without that
GPU is a :class:`ConfigError` naming the devices there are); this module maps it to this
process's ``torch.device``.

Example::

    training_device(None, 0)          # torch.device("cuda:0") if CUDA is there, else cpu
"""

from __future__ import annotations

from typing import Any


def training_device(device: str | None, local_rank: int) -> Any:
    """The ``torch.device`` of this process: ``cuda`` (or nothing, where CUDA is there)
    means this process's own GPU under torchrun."""
    import torch

    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    return torch.device(device)
