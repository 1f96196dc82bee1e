"""The label-efficiency experiment of notebook 05: what did pretraining buy?

For each number of labels n and each seed, train a classifier three ways and score it
on the full test set:

- ``scratch``: a randomly initialised encoder and head, all trained on the n labels;
- ``<name> probe``: a pretrained encoder, frozen, with a trained linear head;
- ``<name> fine-tune``: a pretrained encoder trained together with the head.

Every run gets the same budget of optimiser steps, so larger label sets are not given
more updates, only more varied ones.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .data import ImageData, balanced_subset
from .models import Classifier, autoencoder_from_config
from .training import evaluate, finetune


def train_classifier(
    encoder: nn.Module,
    method: str,
    train: ImageData,
    test: ImageData,
    *,
    seed: int = 0,
    steps: int = 1000,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    batch_size: int = 128,
) -> float:
    """Train one classifier on ``train`` for about ``steps`` optimiser steps; return test accuracy.

    ``method`` is "probe" (freeze ``encoder``) or "finetune"/"scratch" (train it).
    ``encoder`` is copied, so the caller's model is never changed.
    """
    if method not in ("probe", "finetune", "scratch"):
        raise ValueError(f"Unknown method {method!r}. Choose 'probe', 'finetune' or 'scratch'.")
    torch.manual_seed(seed)
    classifier = Classifier(copy.deepcopy(encoder))
    if method == "probe":
        classifier.freeze_encoder()
    batch_size = min(batch_size, len(train))
    epochs = max(1, math.ceil(steps / math.ceil(len(train) / batch_size)))
    finetune(classifier, train.images, train.labels, epochs=epochs, lr=lr, encoder_lr=encoder_lr,
             batch_size=batch_size, seed=seed, progress=False)
    return evaluate(classifier, test.images, test.labels)["accuracy"]


def label_efficiency(
    pretrained: Mapping[str, nn.Module],
    train: ImageData,
    test: ImageData,
    *,
    label_counts: Iterable[int],
    seeds: Iterable[int],
    steps: int = 1000,
    lr: float = 1e-3,
    probe_lr: float = 1e-2,
    encoder_lr: float | None = None,
) -> list[dict]:
    """Run the sweep; return one row per run: method, labels, seed, accuracy.

    ``pretrained`` maps a name (e.g. "plain") to a pretrained encoder; the scratch baseline
    uses a fresh encoder of the same architecture, initialised with each seed.
    """
    if not pretrained:
        raise ValueError("Give at least one pretrained encoder, e.g. {'plain': model.encoder}.")
    config = next(iter(pretrained.values())).config
    rows = []
    for n in label_counts:
        for seed in seeds:
            subset = train.subset(balanced_subset(train.labels, n, seed=seed))
            torch.manual_seed(seed)
            fresh = autoencoder_from_config(config).encoder
            runs = [("scratch", "scratch", fresh, lr)]
            for name, encoder in pretrained.items():
                runs += [(f"{name} probe", "probe", encoder, probe_lr), (f"{name} fine-tune", "finetune", encoder, lr)]
            for label, method, encoder, head_lr in runs:
                acc = train_classifier(encoder, method, subset, test, seed=seed, steps=steps, lr=head_lr,
                                       encoder_lr=encoder_lr if method == "finetune" else None)
                rows.append({"method": label, "labels": n, "seed": seed, "accuracy": acc})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean, standard deviation (over seeds), min and max accuracy per method and label count."""
    groups: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["labels"]), []).append(row["accuracy"])
    return [
        {"method": method, "labels": n, "mean": statistics.fmean(accs),
         "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "min": min(accs), "max": max(accs), "runs": len(accs)}
        for (method, n), accs in groups.items()
    ]


def gain_table(summary: list[dict], baseline: str = "scratch") -> list[dict]:
    """Each method's mean accuracy minus the baseline's, per label count, in percentage points."""
    base = {row["labels"]: row for row in summary if row["method"] == baseline}
    out = []
    for row in summary:
        if row["method"] != baseline and row["labels"] in base:
            b = base[row["labels"]]
            # standard error of a difference of two independent means
            se = math.sqrt(row["std"] ** 2 / row["runs"] + b["std"] ** 2 / b["runs"])
            out.append({"method": row["method"], "labels": row["labels"],
                        "gain_pp": 100 * (row["mean"] - b["mean"]), "se_pp": 100 * se})
    return out
