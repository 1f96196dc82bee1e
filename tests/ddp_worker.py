"""One rank of tests/test_distributed.py's checks, run by torchrun (or alone, as the one-process reference):
pretrain a small autoencoder and a small SimCLR model for a few steps, and save what they ended with."""

from __future__ import annotations

import argparse

import torch

from ptft_helpers import data
from ptft_helpers.contrastive import build_simclr, pretrain_contrastive
from ptft_helpers.distributed import World
from ptft_helpers.models import build_autoencoder
from ptft_helpers.training import pretrain

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--dtype", default="float64")
parser.add_argument("--batch", type=int, default=24)  # 2 and 3 both divide it
args = parser.parse_args()
world = World.start()
dtype = getattr(torch, args.dtype)
train_images = data.load("fashion-mnist", "train").images
saved = {}
# 106 images: 4 batches of 24, then one of 10, which 3 ranks split unevenly (4, 3, 3). 98 images: the last batch has
# 2, so that with 3 ranks one of them gets no image of it (1, 1, 0).
for kind, images in (
    ("autoencoder", 106),
    ("simclr", 106),
    ("autoencoder, empty shard", 98),
    ("simclr, empty shard", 98),
):
    torch.manual_seed(0)
    autoencoder = kind.startswith("autoencoder")
    model = (build_autoencoder() if autoencoder else build_simclr(channels=8, projection_dim=16)).to(dtype)
    train = pretrain if autoencoder else pretrain_contrastive
    history = train(model, train_images[:images], epochs=1, batch_size=args.batch, seed=0, progress=False, world=world)
    saved[kind] = {
        "state": {k: v.cpu() for k, v in model.state_dict().items()},
        "loss": history["step_loss"],
        "modules": sorted({type(m).__name__ for m in model.modules()}),
    }
if world is None or world.rank == 0:
    torch.save(saved, args.out)
if world is not None:
    world.stop()
