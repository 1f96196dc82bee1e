#!/usr/bin/env python
"""The search behind notebook 08's MAE recipe, recorded: which recipes were tried, and how each was scored.

Each recipe is a short MAE pretraining (``mae.pretrain_mae``, the series' learning rate, batch and schedule) on the
first ``--images`` (20,000) unlabelled training images for ``--epochs`` (2) epochs, except where the recipe says
otherwise. The recipes change one thing each from the default the search began with (``vit.ViTConfig`` with
depth 4: width 128, mask ratio 0.75, raw pixel targets): the mask ratio (0.5), normalised pixel targets
(``norm_pix_loss``), the width (64), the depth (2), and twice the epochs; an untrained encoder (depth 4) gives the
floor. Depth 2 probed best on validation and became ``vit.ViTConfig``'s default; an untrained depth-2 encoder was
not scored.

Each encoder is scored by the series' linear probe (``probes.select_and_score``, its weight decay chosen on
validation) on two codes, the CLS token and the mean of the patch tokens (``mae_trials.pooled_features``),
standardised over the first 5,000 training images. Labels: ``--draws`` (100, 101, 102), each 1,000 labelled
training images of those 5,000, 800 to fit and 200 to validate: 600 validation images per recipe decide. The test
set is never used. Rows go to ``results/mae_recipe_search.csv`` (machine and protocol in the ``.json`` beside it).

Run it on a quiet machine with one thread (``OMP_NUM_THREADS=1``): about 6 minutes on our 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers import data  # noqa: E402
from ptft_helpers import experiments as ex  # noqa: E402
from ptft_helpers.devices import cpu_name  # noqa: E402
from ptft_helpers.mae import mae_settings, pretrain_mae  # noqa: E402
from ptft_helpers.mae_trials import pooled_features  # noqa: E402
from ptft_helpers.probes import select_and_score, standardizer  # noqa: E402
from ptft_helpers.results import save_results  # noqa: E402
from ptft_helpers.seeding import seeded  # noqa: E402
from ptft_helpers.settings import code_version, display_path  # noqa: E402
from ptft_helpers.vit import MaskedAutoencoder, ViTConfig  # noqa: E402

RECIPES = {  # name -> (changes to the default ViTConfig, epochs as a multiple of --epochs; 0: untrained)
    "untrained": ({}, 0),
    "default": ({}, 1),
    "mask 0.5": ({"mask_ratio": 0.5}, 1),
    "norm_pix_loss": ({"norm_pix_loss": True}, 1),
    "width 64": ({"width": 64}, 1),
    "depth 2": ({"depth": 2}, 1),
    "default, 2x epochs": ({}, 2),
}
SEARCHED_FROM = {"depth": 4}  # the search's default, before it chose depth 2 (vit.ViTConfig's default since)
POOL = 5000  # the probe's images: features standardised over them, labels drawn among them


def probe_scores(model: MaskedAutoencoder, pool: data.ImageData, draws: list[int]) -> list[dict]:
    """Validation accuracy of the linear probe on each code (CLS, mean of the patch tokens), per label draw."""
    tokens = pooled_features(model.encoder, data.to_inputs(pool.images), "tokens")  # (N, 1 + L, width)
    out = []
    for pooling, features in (("cls", tokens[:, 0]), ("mean", tokens[:, 1:].mean(dim=1))):
        mean, std = standardizer(features)
        features = (features - mean) / std
        for draw in draws:
            lab, val = ex.split_labelled(pool.labels, 1000, 200, draw)
            # The "test" pair is the validation pair again: the search never looks at the test set.
            fit, check = (features[lab], pool.labels[lab]), (features[val], pool.labels[val])
            start = time.perf_counter()
            r = select_and_score(fit, check, check)
            out.append(
                {
                    "pooling": pooling,
                    "draw": draw,
                    "labels": len(lab) + len(val),
                    "n_val": len(val),
                    "weight_decay": r["weight_decay"],
                    "val_acc": r["val_acc"],
                    "probe_seconds": round(time.perf_counter() - start, 2),
                }
            )
    return out


def run_recipe(name: str, train: data.ImageData, args: argparse.Namespace) -> list[dict]:
    """Pretrain one recipe (seed 0) and score it; one row per code and draw."""
    changes, factor = RECIPES[name]
    config = ViTConfig(**{**SEARCHED_FROM, **changes})
    with seeded(0):
        model = MaskedAutoencoder(config)
    recipe = mae_settings()
    epochs, seconds, final_loss = args.epochs * factor, 0.0, float("nan")
    if epochs:
        history = pretrain_mae(
            model,
            train.images[: args.images],
            epochs=epochs,
            lr=recipe["lr"],
            batch_size=recipe["batch_size"],
            weight_decay=recipe["weight_decay"],
            seed=0,
            progress=False,
        )
        seconds, final_loss = sum(history["seconds"]), history["train_loss"][-1]
    pool = data.ImageData(train.images[:POOL], train.labels[:POOL], train.classes)
    info = {
        "recipe": name,
        "width": config.width,
        "depth": config.depth,
        "mask_ratio": config.mask_ratio,
        "norm_pix_loss": config.norm_pix_loss,
        "epochs": epochs,
        "train_size": args.images,
        "lr": recipe["lr"],
        "batch_size": recipe["batch_size"],
        "pretrain_seconds": round(seconds, 1),
        "final_train_loss": final_loss,
    }
    return [{**info, **score} for score in probe_scores(model, pool, args.draws)]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--draws", type=int, nargs="+", default=[100, 101, 102])
    args = parser.parse_args(argv)
    train = data.load("fashion-mnist", "train")
    rows, started = [], time.perf_counter()
    for name in args.recipes:
        start = time.perf_counter()
        rows += run_recipe(name, train, args)
        scores = {
            p: statistics.fmean(r["val_acc"] for r in rows if r["recipe"] == name and r["pooling"] == p)
            for p in ("cls", "mean")
        }
        print(
            f"{name:20s} probe validation accuracy: CLS {scores['cls']:.1%}, mean of patches {scores['mean']:.1%} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    machine = {
        "code_version": code_version(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "draws": args.draws,
        "labels_used": 1000 * len(args.draws),
        "validation_images": 200 * len(args.draws),
        "probe_pool": POOL,
        "test_set_used": False,
        "search_seconds": round(time.perf_counter() - started),
    }
    path = save_results(rows, "mae_recipe_search", machine)
    print(f"saved {len(rows)} rows to {display_path(path)} in {(time.perf_counter() - started) / 60:.1f} min")
    return path


if __name__ == "__main__":
    main()
