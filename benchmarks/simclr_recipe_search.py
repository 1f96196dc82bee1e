#!/usr/bin/env python
"""The search behind notebook 06's SimCLR recipe, recorded: which settings were tried, on which labels.

The recipe (batch 256, Adam at 1e-3, 30 epochs, temperature 0.2) was first chosen in research runs that the
repository does not record. This script repeats a search over the temperature, the setting that matters most for
NT-Xent, so that the choice can be checked, and writes every run's row to ``results/06_simclr_recipe_search.csv``
(machine and protocol in the ``.json`` beside it):

1. SimCLR for ``--short-epochs`` (10) epochs on all 60,000 unlabelled training images at each temperature of
   ``--temperatures`` (0.1, 0.2, 0.5); batch size and learning rate as in the recipe.
2. The recipe's 30 epochs at its temperature: the checkpoint that ``make checkpoints`` trains (loaded when it
   exists), so that the table also shows what the longer run bought.

Each encoder is scored by a linear probe (``probes.select_and_score``, the weight decay chosen on validation) on
label draws that notebooks 06 and 07 do not use (``--draws``, default 100, 101 and 102): per draw, 80 labelled
training images train the probe and 20 validation images score it. So the search uses 300 labels, and the
validation accuracy decides; the test set is never scored here.

Run it on a quiet machine: it trains three 10-epoch encoders (about 3 minutes each on our 2-core CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers import data  # noqa: E402
from ptft_helpers import experiments as ex  # noqa: E402
from ptft_helpers.contrastive import contrastive_settings, embed  # noqa: E402
from ptft_helpers.devices import cpu_name  # noqa: E402
from ptft_helpers.pretrained import load_or_pretrain  # noqa: E402
from ptft_helpers.probes import WEIGHT_DECAYS, select_and_score, standardizer  # noqa: E402
from ptft_helpers.results import save_results  # noqa: E402
from ptft_helpers.settings import code_version, display_path  # noqa: E402


def probe_scores(encoder: torch.nn.Module, train: data.ImageData, draws: list[int]) -> list[dict]:
    """Validation accuracy of a linear probe on the encoder's code, per label draw (80 train + 20 validation)."""
    codes = embed(encoder, train.images)
    mean, std = standardizer(codes)
    codes = (codes - mean) / std
    out = []
    for draw in draws:
        lab, val = ex.split_labelled(train.labels, 100, 20, draw)
        # The "test" pair is the validation pair again: the search never looks at the test set.
        r = select_and_score(
            (codes[lab], train.labels[lab]),
            (codes[val], train.labels[val]),
            (codes[val], train.labels[val]),
            weight_decays=WEIGHT_DECAYS,
        )
        out.append(
            {"draw": draw, "labels": len(lab) + len(val), "weight_decay": r["weight_decay"], "val_acc": r["val_acc"]}
        )
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.1, 0.2, 0.5])
    parser.add_argument("--short-epochs", type=int, default=10)
    parser.add_argument("--draws", type=int, nargs="+", default=[100, 101, 102])
    args = parser.parse_args(argv)
    train = data.load("fashion-mnist", "train")
    recipe = contrastive_settings()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        runs = [(args.short_epochs, t, Path(scratch) / f"simclr-t{t}.pt") for t in args.temperatures]
        runs.append((recipe["epochs"], recipe["temperature"], None))  # the recipe itself: its usual checkpoint
        for epochs, temperature, path in runs:
            start = time.perf_counter()
            model, meta, where = load_or_pretrain(
                arch="smallconv",
                pretext="simclr",
                hidden_dim=32,
                latent_dim=64,
                epochs=epochs,
                temperature=temperature,
                path=path,
                progress=False,
            )
            seconds = sum(meta["history"]["seconds"])
            for score in probe_scores(model.encoder, train, args.draws):
                rows.append(
                    {
                        "epochs": epochs,
                        "temperature": temperature,
                        "batch_size": recipe["batch_size"],
                        "lr": recipe["lr"],
                        "pretrain_seconds": round(seconds, 1),
                        **score,
                    }
                )
            mean = statistics.fmean(r["val_acc"] for r in rows[-len(args.draws) :])
            print(
                f"{epochs:3d} epochs, temperature {temperature}: probe validation accuracy {mean:.1%} "
                f"({seconds / 60:.1f} min to pretrain; {display_path(where) if path is None else 'not kept'}; "
                f"{time.perf_counter() - start:.0f} s here)",
                flush=True,
            )
    machine = {
        "code_version": code_version(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "draws": args.draws,
        "labels_used": 100 * len(args.draws),
        "test_set_used": False,
    }
    path = save_results(rows, "06_simclr_recipe_search", machine)
    print(f"saved {len(rows)} rows to {display_path(path)}")
    return path


if __name__ == "__main__":
    main()
