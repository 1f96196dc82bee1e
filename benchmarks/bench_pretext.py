#!/usr/bin/env python
"""How fast is contrastive pretraining? SimCLR throughput in training images per second.

One "image" is one training image per step: two augmented views of it go through the encoder and the
projection head, forward and backward (notebook 06's recipe: ``SmallConvEncoder(32)``, batch 256, NT-Xent).
It times, each ``--repeats`` times on the first ``--images`` training images (medians reported):

- ``augment``: making the two views alone (batched affine warp, jitter, erasing);
- ``SimCLR epoch``: a whole ``pretrain_contrastive`` epoch (augmentations included), as the notebook runs it.

Run it on a quiet machine (under ``flock /tmp/ptft-cpu.lock`` on a shared one): other processes on the same
cores make every number worse. Prints a Markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers import contrastive, data  # noqa: E402
from ptft_helpers.devices import describe_device, pick_device, synchronize  # noqa: E402


def time_augment(images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Images per second for making two views of every image, batch by batch."""
    x = data.to_inputs(images, device)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        contrastive.augment(x[i : i + batch_size], generator)
        contrastive.augment(x[i : i + batch_size], generator)
    synchronize(device)
    return len(x) / (time.perf_counter() - start)


def time_epoch(images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Images per second of one ``pretrain_contrastive`` epoch (two views per image, forward and backward)."""
    torch.manual_seed(0)
    model = contrastive.build_simclr(32)
    history = contrastive.pretrain_contrastive(
        model, images, epochs=1, batch_size=batch_size, device=device, progress=False
    )
    return history["images_per_s"][0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8192, help="train on the first N images (default 8192)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    images = data.load("fashion-mnist", "train").images[: args.images]
    time_epoch(images[: 2 * args.batch_size], args.batch_size, device)  # warm-up
    runs = {"augment (two views)": [], "SimCLR epoch": []}
    for _ in range(args.repeats):
        runs["augment (two views)"].append(time_augment(images, args.batch_size, device))
        runs["SimCLR epoch"].append(time_epoch(images, args.batch_size, device))
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": str(torch.__version__),
            "threads": torch.get_num_threads(),
            "device": describe_device(device),
        },
        "images": args.images,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "images_per_s": {name: statistics.median(v) for name, v in runs.items()},
    }
    print(
        f"{result['machine']['device']}, torch {result['machine']['torch']}, {result['machine']['threads']} threads; "
        f"{args.images} images, batch {args.batch_size}, median of {args.repeats}"
    )
    print("| measurement | images/s |\n|---|---:|")
    for name, value in result["images_per_s"].items():
        print(f"| {name} | {value:,.0f} |")
    epoch = result["images_per_s"]["SimCLR epoch"]
    recipe = contrastive.contrastive_settings()
    print(
        f"A {recipe['train_size']:,}-image epoch at this rate: {recipe['train_size'] / epoch:.0f} s; "
        f"notebook 06's {recipe['epochs']} epochs: {recipe['epochs'] * recipe['train_size'] / epoch / 60:.1f} min"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
