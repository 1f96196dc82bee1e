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
parser.add_argument("--images", type=int, default=106)  # 4 batches of 24, then one of 10: it splits unevenly
parser.add_argument("--batch", type=int, default=24)  # 2 and 3 both divide it
args = parser.parse_args()
world = World.start()
dtype = getattr(torch, args.dtype)
images = data.load("fashion-mnist", "train").images[: args.images]
saved = {}
for kind in ("autoencoder", "simclr"):
    torch.manual_seed(0)
    model = (build_autoencoder() if kind == "autoencoder" else build_simclr(channels=8, projection_dim=16)).to(dtype)
    train = pretrain if kind == "autoencoder" else pretrain_contrastive
    history = train(model, images, epochs=1, batch_size=args.batch, seed=0, progress=False, world=world)
    saved[kind] = {"state": {k: v.cpu() for k, v in model.state_dict().items()}, "loss": history["step_loss"]}
if world is None or world.rank == 0:
    torch.save(saved, args.out)
