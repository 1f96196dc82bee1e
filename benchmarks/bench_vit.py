#!/usr/bin/env python
"""How fast is the by-hand masked autoencoder? Images/s against Hugging Face's ViTMAEForPreTraining, and the
pretraining step's share of the machine's matrix-multiply rate.

Both models have the same configuration (``mae.mae_settings()``'s batch, ``vit.ViTConfig()``), the same weights
(``vit.to_hf``) and see the same images and masking noise. In one process, alternating which goes first, each
``--repeats`` times, it times:

- ``train step``: forward, backward and an AdamW step (``engine.adam``, MAE's parameter groups), ``--steps`` steps;
- ``forward``: the masked forward pass alone, without gradients.

Then the FLOPs of one training step (``torch.utils.flop_counter.FlopCounterMode``: every matrix multiply, the
attention's included, forward and backward) over the by-hand step's median time, as a fraction of the fp32
``torch.mm`` peak measured as ``bench_training.py`` measures it (the best rate on square matrices). Elementwise
work (LayerNorm, GELU, softmax, AdamW) is not counted: it costs time, not matrix FLOPs.

Run it on a quiet machine (under ``flock /tmp/ptft-cpu.lock`` on a shared one). Prints Markdown; ``--json PATH``
also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers import data, vit  # noqa: E402
from ptft_helpers.devices import autocast, cpu_name, describe_device, pick_device, precision, synchronize  # noqa: E402
from ptft_helpers.engine import adam  # noqa: E402
from ptft_helpers.mae import _parameter_groups, mae_settings  # noqa: E402


def matmul_peak(sizes: tuple[int, ...], repeats: int, device: torch.device) -> float:
    """The best ``torch.mm`` rate in GFLOP/s over square matrices of ``sizes``, in the precision training uses on
    ``device`` (float32 on a CPU; bfloat16 or float16 on a GPU that trains in it) (bench_training.py's method: the
    fastest of ``repeats`` timings of at least 0.2 s each)."""
    dtype = precision(device).dtype or torch.float32
    rates = []
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        for _ in range(repeats):
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < 0.2 or calls == 0:
                torch.mm(a, b, out=out)
                calls += 1
                if calls % 16 == 0:
                    synchronize(device)
            synchronize(device)
            elapsed = time.perf_counter() - start
            rates.append(2 * n**3 * calls / elapsed / 1e9)
    return max(rates)


def _losses(model: torch.nn.Module, hugging_face: bool):
    """The loss of one batch as each model computes it, from images (B, 1, 28, 28) and noise (B, L)."""
    if hugging_face:
        return lambda x, noise: model(pixel_values=x, noise=noise).loss
    return lambda x, noise: model(x, noise=noise)[0]


def time_model(model, hugging_face: bool, batches: list, train: bool, device: torch.device) -> float:
    """Images per second over ``batches`` [(images, noise)]: training steps, or forward passes without gradients,
    in the precision training uses on ``device`` (``devices.autocast``: bfloat16 on a GPU that supports it)."""
    loss_of = _losses(model, hugging_face)
    amp = autocast(device)
    optimizer = adam(_parameter_groups(model, 0.05), 1e-3, device, weight_decay=0.05) if train else None
    model.train(train)
    synchronize(device)
    start = time.perf_counter()
    for x, noise in batches:
        if train:
            optimizer.zero_grad(set_to_none=True)
            with amp:
                loss = loss_of(x, noise)
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad(), amp:
                loss_of(x, noise)
    synchronize(device)
    return sum(len(x) for x, _ in batches) / (time.perf_counter() - start)


def step_flops(model: vit.MaskedAutoencoder, x: torch.Tensor, noise: torch.Tensor) -> int:
    """The matrix-multiply FLOPs of one training step (forward and backward) of the by-hand model."""
    with FlopCounterMode(display=False) as counter:
        model(x, noise=noise)[0].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def compare(args: argparse.Namespace, device: torch.device) -> dict:
    """Both models, alternating, ``args.repeats`` times: images/s per measurement, as lists."""
    torch.manual_seed(0)
    ours = vit.MaskedAutoencoder().to(device)
    theirs = vit.to_hf(ours)
    generator = torch.Generator().manual_seed(0)
    images = data.to_inputs(data.load("fashion-mnist", "train").images[: args.batch_size * args.steps], device)
    config = ours.vit_config
    batches = [
        (x.reshape(-1, 1, 28, 28), torch.rand(len(x), config.num_patches, generator=generator).to(device))
        for x in images.split(args.batch_size)
    ]
    runs = {(name, kind): [] for name in ("by hand", "Hugging Face") for kind in ("train step", "forward")}
    for kind in ("train step", "forward"):  # a warm-up of each
        for model, hf in ((ours, False), (theirs, True)):
            time_model(model, hf, batches[:2], kind == "train step", device)
    for repeat in range(args.repeats):
        order = [("by hand", ours, False), ("Hugging Face", theirs, True)][:: 1 if repeat % 2 == 0 else -1]
        for kind in ("train step", "forward"):
            for name, model, hf in order:
                runs[name, kind].append(time_model(model, hf, batches, kind == "train step", device))
    return {"runs": runs, "flops": step_flops(ours, *batches[0]), "sdpa": theirs.config._attn_implementation}


def report(result: dict, args: argparse.Namespace) -> None:
    """Print the Markdown tables."""
    runs = result["runs"]
    print(f"| {args.steps} batches of {args.batch_size} | images/s min | median | max |\n|---|---:|---:|---:|")
    for (name, kind), rates in runs.items():
        print(f"| {kind}, {name} | {min(rates):,.0f} | {statistics.median(rates):,.0f} | {max(rates):,.0f} |")
    for kind in ("train step", "forward"):
        ratio = statistics.median(runs["by hand", kind]) / statistics.median(runs["Hugging Face", kind])
        print(f"{kind}: by hand / Hugging Face = {ratio:.2f} (medians; HF attention: {result['sdpa']})")
    rate = statistics.median(runs["by hand", "train step"])
    achieved = result["flops"] / args.batch_size * rate / 1e9
    print(
        f"Train step: {result['flops'] / args.batch_size / 1e6:.1f} MFLOP per image (matrix multiplies, forward and"
        f" backward), {achieved:.1f} GFLOP/s = {100 * achieved / result['peak']:.1f}% of the matmul peak"
        f" {result['peak']:.0f} GFLOP/s (same precision)"
    )
    recipe = mae_settings()
    minutes = recipe["epochs"] * recipe["train_size"] / rate / 60
    print(f"The recipe's {recipe['epochs']} epochs of {recipe['train_size']:,} images at this rate: {minutes:.1f} min")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=mae_settings()["batch_size"])
    parser.add_argument("--steps", type=int, default=20, help="batches per timed run (default 20)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    result = compare(args, device)
    result["peak"] = matmul_peak((1024, 2048, 4096) if device.type == "cuda" else (1024, 2048), 3, device)
    machine = f"{describe_device(device)}; {cpu_name()}, torch {torch.__version__}, Python {platform.python_version()}"
    print(machine)
    report(result, args)
    if args.json:
        rows = {f"{name}, {kind}": rates for (name, kind), rates in result["runs"].items()}
        train = {name: statistics.median(result["runs"][name, "train step"]) for name in ("by hand", "Hugging Face")}
        summary = (
            f"MAE train step {train['by hand']:,.0f} images/s by hand, {train['Hugging Face']:,.0f} Hugging Face "
            f"(medians; {precision(device).describe()})"
        )
        args.json.write_text(json.dumps({**result, "runs": rows, "machine": machine, "summary": summary}, indent=2))
    return result


if __name__ == "__main__":
    main()
