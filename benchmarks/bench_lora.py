"""LoRA against full fine-tuning of the series' ViT classifier (notebook 09): seconds per training step and, on a
GPU, the peak memory of a step, measured side by side in one run.

    python benchmarks/bench_lora.py                    # this machine's best device
    python benchmarks/bench_lora.py --device cuda --json benchmarks/gpu-lora.json   # what gpu_check.sh runs

The models: ``vit.ViTClassifier`` (the MAE's encoder shape, random weights: speed does not depend on them) as
Hugging Face's ``ViTForImageClassification``, trained in full, and the same with ``peft`` LoRA adapters on W_q and
W_v at each rank (``lora_trials.TARGETS``) plus the head. Every step runs in the precision training uses on the
device (``devices.autocast``: bfloat16 on a GPU that supports it). The models take turns, a round of ``--steps``
steps each, starting one model later each round; each model's fastest round counts. Peak memory: CUDA's
``max_memory_allocated`` over one step after a reset (the weights, the optimizer state and the activations); on a
CPU it is not measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers import vit  # noqa: E402
from ptft_helpers.devices import autocast, describe_device, grad_scaler, pick_device, synchronize  # noqa: E402
from ptft_helpers.engine import adam, optimizer_step  # noqa: E402
from ptft_helpers.lora import peft_lora, trainable_count  # noqa: E402
from ptft_helpers.lora_trials import TARGETS, alpha  # noqa: E402


def build_models(ranks: list[int], device: torch.device) -> dict[str, torch.nn.Module]:
    """The full classifier and one LoRA copy of it per rank, on ``device``."""
    torch.manual_seed(0)
    full = vit.to_hf_classifier(vit.ViTClassifier()).to(device)
    models = {"full fine-tuning": full}
    for rank in ranks:
        models[f"LoRA r={rank}"] = peft_lora(copy.deepcopy(full), rank, alpha(rank), TARGETS)
    return models


def timed_steps(model, optimizer, batch, steps: int, device: torch.device) -> tuple[float, int | None]:
    """Seconds per step over ``steps`` steps, and the peak bytes allocated during them (CUDA only, else None)."""
    x, y = batch
    amp, scaler = autocast(device), grad_scaler(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        with amp:
            loss = F.cross_entropy(model(pixel_values=x).logits.float(), y)
        optimizer_step(loss, optimizer, scaler)
    synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    return seconds, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    """Every model's fastest round and its peak memory, with its trainable parameters."""
    models = build_models(args.ranks, device)
    batch = (torch.rand(args.batch_size, 1, 28, 28, device=device), torch.randint(0, 10, (args.batch_size,)).to(device))
    optimizers = {
        name: adam([p for p in m.parameters() if p.requires_grad], 1e-4, device) for name, m in models.items()
    }
    names = list(models)
    for name in names:  # a warm-up step each: Adam makes its state, kernels are chosen
        timed_steps(models[name], optimizers[name], batch, 1, device)
    rounds: dict[str, list[tuple[float, int | None]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rounds[name].append(timed_steps(models[name], optimizers[name], batch, args.steps, device))
    return {
        name: {
            "seconds_per_step": min(s for s, _ in rounds[name]),
            "peak_bytes": max((b for _, b in rounds[name] if b is not None), default=None),
            "trainable": trainable_count(models[name]),
        }
        for name in names
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="steps per round (default 10)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    runs = measure(args, device)
    full = runs["full fine-tuning"]
    print(f"{describe_device(device)}; batch {args.batch_size}")
    print("| method | trainable | s/step | step time / full | peak memory |\n|---|---:|---:|---:|---:|")
    for name, run in runs.items():
        peak = f"{run['peak_bytes'] / 2**20:.1f} MiB" if run["peak_bytes"] is not None else "not measured (CPU)"
        ratio = run["seconds_per_step"] / full["seconds_per_step"]
        print(f"| {name} | {run['trainable']:,} | {run['seconds_per_step']:.4f} | {ratio:.2f} | {peak} |")
    lora = {k: v for k, v in runs.items() if k != "full fine-tuning"}
    summary = "LoRA step time / full: " + ", ".join(
        f"{k.split()[-1]} {v['seconds_per_step'] / full['seconds_per_step']:.2f}" for k, v in lora.items()
    )
    if full["peak_bytes"]:
        summary += "; peak memory / full: " + ", ".join(
            f"{k.split()[-1]} {v['peak_bytes'] / full['peak_bytes']:.2f}" for k, v in lora.items()
        )
    print(summary)
    if args.json:
        record = {"device": describe_device(device), "batch_size": args.batch_size, "runs": runs, "summary": summary}
        args.json.write_text(json.dumps(record, indent=2))
    return runs


if __name__ == "__main__":
    main()
