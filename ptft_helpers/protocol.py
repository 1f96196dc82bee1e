"""The budget of the label-efficiency experiment (notebooks 05, 06, 07 and 09): label counts, seeds, pretraining
runs, steps. ``experiments`` runs it; ``pretrained.series_encoders`` pretrains each pretext's runs."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import pick


@dataclass(frozen=True)
class Protocol:
    """Everything that fixes the sweep's budget (see ``protocol()`` for the values used)."""

    label_counts: tuple[int, ...]
    seeds_small: int  # label-subset seeds at n <= 100
    seeds_large: int  # ... and above
    pretrain_runs: int  # independent pretraining runs per pretext
    steps: int  # Adam steps per run (every method, every n)
    batch_size: int  # min(batch_size, training examples)
    check_every: int  # validation check interval, in steps
    val_fraction: float  # share of the n labels used for validation (at least one per class)

    def seeds(self, n: int) -> list[int]:
        return list(range(self.seeds_small if n <= 100 else self.seeds_large))

    def val_size(self, n: int) -> int:
        return max(10, round(n * self.val_fraction / 10) * 10)


def protocol() -> Protocol:
    """The full-run protocol (a smaller one in fast mode, same code path)."""
    return Protocol(
        label_counts=pick((20, 50, 100, 500, 1000), (20, 100)),
        seeds_small=pick(12, 2),
        seeds_large=pick(6, 2),
        pretrain_runs=pick(3, 2),
        steps=pick(150, 20),
        batch_size=128,
        check_every=10,
        val_fraction=0.2,
    )
