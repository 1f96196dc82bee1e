"""The budget of the label-efficiency experiment (notebooks 05, 06, 07 and 11): label counts, seeds, pretraining
runs, steps. ``experiments`` runs it; ``pretrained.series_encoders`` pretrains each pretext's runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


EDGE_LIMIT = 0.25  # a method whose choices fall on one end of a grid in more than this share of its trials piles up


def edge_shares(choices: Mapping[str, Sequence[float]], grid: Sequence[float]) -> dict[str, tuple[float, float]]:
    """For each method, the share of its trials (one chosen value each) that chose the grid's smallest and its
    largest value. A share far above 1 / len(grid) at an end says the best value may lie outside the grid."""
    low, high = min(grid), max(grid)
    shares = {}
    for method, chosen in choices.items():
        if not chosen:
            raise ValueError(f"{method!r} has no trials: give at least one chosen value per method.")
        outside = [v for v in chosen if not low <= v <= high]
        if outside:
            raise ValueError(f"{method!r} chose {outside[0]!r}, outside the grid {tuple(grid)}: give the grid it used.")
        shares[method] = (sum(v == low for v in chosen) / len(chosen), sum(v == high for v in chosen) / len(chosen))
    return shares


def grid_edge_report(choices: Mapping[str, Sequence[float]], grid: Sequence[float], what: str) -> list[str]:
    """Print, per method, how often its choice of ``what`` sat at each end of ``grid``; return the methods whose
    choices pile up at an end (more than ``EDGE_LIMIT`` of their trials), the ones whose grid should be widened."""
    shares = edge_shares(choices, grid)
    print(f"{what}: share of trials at the grid's ends {min(grid):g} and {max(grid):g} (limit {EDGE_LIMIT:.0%})")
    for method, (low, high) in shares.items():
        flag = "  <- piles up at an edge" if max(low, high) > EDGE_LIMIT else ""
        print(f"  {method:34s} {low:6.0%} {high:6.0%}{flag}")
    return [method for method, (low, high) in shares.items() if max(low, high) > EDGE_LIMIT]
