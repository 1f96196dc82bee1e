"""Data-parallel pretraining with ``torch.distributed``, launched by ``torchrun`` (notebook 10).

``torchrun --nproc_per_node=N -m ptft_helpers pretrain ...`` starts N processes (*ranks*). Each one builds the same
model from the same seed and draws the same order of images, so every rank knows every *global* batch; each rank
then trains on its own shard of it (``World.shard``), and ``DistributedDataParallel`` averages the gradients.
The rules that make N processes train exactly what one process trains on the whole batch:

- Each rank's loss is scaled so that the ranks' losses add up to N times the whole batch's mean loss
  (``World.loss_weight``): DDP's average of their gradients is then the whole batch's gradient, also when the
  last batch of an epoch does not split evenly.
- Random numbers (masks, noise, augmentations) are drawn for the whole global batch, on every rank alike, before it
  is sharded.
- SimCLR's negatives are the whole global batch: each rank's codes are gathered from all ranks
  (``gather_rows``, through autograd), so every rank computes the one-process loss.
- Batch norm normalises with the whole global batch's statistics (``GlobalBatchNorm2d``, what
  ``torch.nn.SyncBatchNorm`` does on GPUs, for CPUs too), so the codes are those of one process, and no rank's
  batch statistics give away which views belong together.

Every collective used in a forward pass sums, and its gradient sums too, so each rank's gradient is N times its
share; DDP's average divides by N again. On CPUs the backend is gloo, on GPUs NCCL (chosen by ``World.start`` from
the device ``devices.pick_device`` picks: ``PTFT_DEVICE=cpu`` keeps a GPU machine's processes on the CPU).
"""

from __future__ import annotations

import datetime
import gc
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from .devices import pick_device

RANKS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # torchrun sets these for each process it starts
RENDEZVOUS = (*RANKS, "MASTER_ADDR", "MASTER_PORT")
# How long a rank waits in a collective: rank 0 may wait for another process's checkpoint (a file lock) while the
# others wait for its word, for as long as that pretraining takes (NCCL's default would stop them after 10 minutes).
TIMEOUT = datetime.timedelta(hours=2)


class RankError(ValueError):
    """An error that one rank meets and the others may not (rank 0 says the errors every rank meets): every rank
    that meets it says it."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks that torchrun started: its ``rank`` of ``size``, on ``device``."""

    rank: int
    size: int
    device: torch.device
    backend: str

    @staticmethod
    def start(device: torch.device | str | None = None) -> World | None:
        """Join the process group that torchrun set up (its environment variables say where), or return None when
        this process was not started by torchrun. The device is ``devices.pick_device(device)``'s choice: on CUDA,
        one GPU per local rank and the NCCL backend; otherwise the CPU and gloo (an Apple GPU cannot take part)."""
        if not any(os.environ.get(name) for name in RANKS):
            return None
        if missing := [name for name in RENDEZVOUS if not os.environ.get(name)]:
            raise ValueError(
                f"Started for several processes, but {', '.join(missing)} is not set: launch with "
                "`torchrun --nproc_per_node=N -m ptft_helpers pretrain ...`, which sets all of "
                f"{', '.join(RENDEZVOUS)}."
            )
        rank, size, local_rank = (int(os.environ[k]) for k in RANKS)
        if pick_device(device).type == "cuda":
            if local_rank >= torch.cuda.device_count():
                local = os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1))
                raise ValueError(
                    f"{local} processes on this machine but {torch.cuda.device_count()} GPU(s): start one process per "
                    f"GPU (torchrun --nproc_per_node={torch.cuda.device_count()}), or set PTFT_DEVICE=cpu to train "
                    "on the CPU."
                )
            chosen, backend = torch.device(f"cuda:{local_rank}"), "nccl"
            torch.cuda.set_device(chosen)
        else:
            chosen, backend = torch.device("cpu"), "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=size, timeout=TIMEOUT)
        return World(rank, size, chosen, backend)

    def stop(self, wait: bool = True) -> None:
        """Leave the process group (what torchrun expects of a process before it exits). With ``wait`` (after
        success: every rank gets here), once every rank is done and the DDP wrappers that use it are gone: a rank
        tearing down early sometimes made a gloo rank abort at exit ("terminate called without an active exception",
        1 launch in 20 of notebook 10's program here)."""
        if dist.is_initialized():
            if wait:
                gc.collect()  # DDP wrappers left in reference cycles
                dist.barrier()
            dist.destroy_process_group()

    def check_batch(self, batch_size: int) -> None:
        """Refuse a global batch that the ranks cannot share evenly, in one line."""
        if batch_size < self.size:
            raise ValueError(
                f"{self.size} processes but a global batch of {batch_size}: each process needs at least one image; "
                f"use at most {batch_size} processes, or a larger batch."
            )
        if batch_size % self.size:
            raise ValueError(
                f"A global batch of {batch_size} does not split evenly over {self.size} processes: choose a batch "
                f"size that {self.size} divides (e.g. {batch_size - batch_size % self.size}), or another number of "
                "processes."
            )

    def shard(self, n: int) -> slice:
        """This rank's part of a global batch of ``n`` rows (``torch.tensor_split``'s split: sizes differ by one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sizes(self, n: int) -> list[int]:
        """Every rank's shard size of a global batch of ``n``."""
        base, extra = divmod(n, self.size)
        return [base + (r < extra) for r in range(self.size)]

    def loss_weight(self, n: int) -> float:
        """The factor on this rank's mean loss so that the ranks' losses add up to ``size`` times the global mean."""
        part = self.shard(n)
        return (part.stop - part.start) * self.size / n

    def barrier(self) -> None:
        """Wait until every rank has come here."""
        dist.barrier()

    def from_leader(self, value: int) -> int:
        """Rank 0's ``value``, on every rank (so that all ranks take the same branch)."""
        number = torch.tensor([value], device=self.device)  # NCCL sends GPU tensors only
        dist.broadcast(number, src=0)
        return int(number)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Add ``tensor`` up over the ranks, in place, outside autograd (e.g. loss values for the history)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def gather_rows(x: torch.Tensor, world: World, sizes: list[int]) -> torch.Tensor:
    """The rows of every rank's ``x``, in rank order (rank r holds ``sizes[r]`` rows), through autograd: gradients
    flow back to each rank's own rows. Shards of unequal size are padded for the transfer."""
    longest = max(sizes)
    padded = torch.cat([x, x.new_zeros(longest - len(x), *x.shape[1:])]) if len(x) < longest else x
    with warnings.catch_warnings():  # PyTorch 2.10+ calls it deprecated in favour of a private API; it still works
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_nn.all_gather(padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` with the statistics of the whole global batch: every rank's per-channel count, sum and sum of
    squares are added up over the ranks (an all-reduce, through autograd), so N processes normalise as one process
    would on the whole batch. Outside training (or in one process) it is plain batch norm. The statistics are
    computed in float32 at least, also under autocast (a float16 count overflows past 65,504 values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        channels = x.shape[1]
        count = torch.full((1,), xf.numel() / channels, dtype=xf.dtype, device=x.device)
        local = torch.cat([count, xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3))])
        total = dist_nn.all_reduce(local)
        n, mean = total[0], total[1 : 1 + channels] / total[0]
        var = (total[1 + channels :] / n - mean * mean).clamp_min(0)  # biased, as batch norm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                # nn.BatchNorm2d's factor: the momentum, or (momentum None) a cumulative average
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach().to(self.running_mean.dtype))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.detach().to(self.running_var.dtype))
        shape = (1, channels, 1, 1)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def global_batch_norm(module: nn.Module, on: bool = True) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a ``GlobalBatchNorm2d`` holding the same weights and
    running statistics (``on=False``: back again, so that a trained model is plain PyTorch), in place; returns
    ``module``."""
    old, new = (nn.BatchNorm2d, GlobalBatchNorm2d) if on else (GlobalBatchNorm2d, nn.BatchNorm2d)
    for name, child in module.named_children():
        if type(child) is old:
            replacement = new(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if (like := child.weight if child.affine else child.running_mean) is not None:
                replacement.to(device=like.device, dtype=like.dtype)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            global_batch_norm(child, on)
    return module
