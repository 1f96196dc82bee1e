"""One way to seed: ``with seeded(seed): ...`` draws from a seeded generator and then puts the
caller's global random state back, so a helper never changes what the caller's code draws next."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block, torch's global generators (CPU and every CUDA device) start from ``seed``;
    after it, they are back where they were."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
