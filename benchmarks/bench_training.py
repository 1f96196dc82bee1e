#!/usr/bin/env python
"""How fast is the training loop? One epoch of autoencoder pretraining, measured three ways.

1. Against the naive loop: ``ptft_helpers.pretrain`` vs the loop a learner writes from the
   source text (a DataLoader over torchvision's FashionMNIST with ``ToTensor()``, shuffled,
   no workers). Same model (784-256-32), MSE, Adam, batch 128, same images and steps; both
   run in this process, alternating, ``--repeats`` times; medians and their ratio.
2. Against the limit: the FLOPs one epoch must do, counted from the layer sizes, divided by
   the epoch time, as a fraction of this machine's measured fp32 matrix-multiply rate, at
   batch sizes 128 and 512. A profile of the helper's step says where the rest goes.
3. On a CUDA GPU: images per second for fp32 and bf16 autocast, eager, ``torch.compile``
   and a captured CUDA graph, at batch sizes 256..4096, and the time for a 20-epoch run.
   Without one the script says so and measures the CPU only.

It prints tables and writes them as JSON (default ``benchmarks/results.json``, gitignored;
``benchmarks/README.md`` records a run). Run it on a quiet machine: ``make bench``.

FLOP count (``step_flops``): for each ``nn.Linear(i, o)`` at batch B, forward 2*B*i*o;
backward 2*B*i*o for the weight gradient, plus 2*B*i*o for the input gradient except in
the first layer (its input is the data, which needs no gradient). Bias additions, bias
gradients, ReLU, the loss and the optimizer are elementwise work and are *not* counted;
they are cheap in FLOPs but not in time, which is what the profile shows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from ptft_helpers import data, devices, models, settings, training  # noqa: E402
from ptft_helpers.devices import cpu_name  # noqa: E402
from ptft_helpers.seeding import seeded  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results.json"
NO_CUDA = "no CUDA device: measuring the CPU only"
LIMIT_BATCH_SIZES = (128, 512)
GPU_BATCH_SIZES = (256, 512, 1024, 2048, 4096)
GPU_PRECISIONS = ("fp32", "bf16")
GPU_MODES = ("eager", "compile", "cuda-graph")


# ----------------------------------------------------------------------------- FLOPs


def linear_layers(model: nn.Module) -> list[tuple[int, int]]:
    """(in_features, out_features) of every ``nn.Linear`` in ``model``, in forward order."""
    others = [
        type(m).__name__
        for m in model.modules()
        if not isinstance(m, nn.Linear) and next(m.parameters(recurse=False), None) is not None
    ]
    layers = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    if others or not layers:
        raise ValueError(
            f"The FLOP count covers MLPs of nn.Linear layers only, not {others or 'a model without them'}."
        )
    return layers


def step_flops(layers: list[tuple[int, int]], batch_size: int) -> dict[str, int]:
    """Matrix-multiply FLOPs (multiply and add = 2) of one training step on ``batch_size`` images.

    ``layers`` are (in, out) sizes in forward order; the first layer's input is the data, so
    it gets no input gradient. Elementwise work (bias, ReLU, loss, optimizer) is not counted.
    """
    macs = [batch_size * i * o for i, o in layers]
    forward = 2 * sum(macs)
    grad_weight = 2 * sum(macs)
    grad_input = 2 * sum(macs[1:])
    return {
        "forward": forward,
        "backward_weight": grad_weight,
        "backward_input": grad_input,
        "total": forward + grad_weight + grad_input,
    }


def epoch_flops(layers: list[tuple[int, int]], n_images: int) -> int:
    """FLOPs of one epoch over ``n_images``: linear in the batch size, so the batching does not matter."""
    return step_flops(layers, n_images)["total"]


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
            "cuda_version": torch.version.cuda,
        }
    return info


# ----------------------------------------------------------------------------- timing helpers


def _now(device: torch.device | None = None) -> float:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def best_seconds(fn, repeats: int, min_seconds: float = 0.02) -> float:
    """Best time of one ``fn()`` call over ``repeats`` timings, each of enough calls to last ``min_seconds``."""
    fn()  # warm-up
    calls, elapsed = 1, 0.0
    while True:  # calibrate: double the calls until one timing lasts long enough
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def matmul_rate(n: int, repeats: int = 5) -> float:
    """Best fp32 ``torch.mm`` rate in GFLOP/s for square n x n matrices, on the CPU, default threads."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b, out=out), repeats, min_seconds=0.2) / 1e9


def model_gemm_rates(model: nn.Module, batch_size: int, repeats: int = 3) -> dict:
    """The rate of the actual GEMMs of one training step, each timed alone (CPU, fp32).

    Forward x @ W^T, weight gradient g^T @ x, input gradient g @ W (not for the first layer).
    Their total time is what one step would take if nothing else cost anything.
    """
    gemms = []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for index, layer in enumerate(linears):
        i, o = layer.in_features, layer.out_features
        w = layer.weight.detach().to("cpu", torch.float32).contiguous()  # (o, i)
        x, g = torch.randn(batch_size, i), torch.randn(batch_size, o)
        flops = 2 * batch_size * i * o
        gemms.append((f"fwd {batch_size}x{i} @ {i}x{o}", lambda x=x, w=w: torch.mm(x, w.t()), flops))
        gemms.append((f"dW  {o}x{batch_size} @ {batch_size}x{i}", lambda x=x, g=g: torch.mm(g.t(), x), flops))
        if index > 0:
            gemms.append((f"dX  {batch_size}x{o} @ {o}x{i}", lambda g=g, w=w: torch.mm(g, w), flops))
    rows, total_time, total_flops = [], 0.0, 0
    for name, fn, flops in gemms:
        seconds = best_seconds(fn, repeats)
        rows.append({"gemm": name, "gflops": flops / seconds / 1e9, "ms": seconds * 1e3})
        total_time += seconds
        total_flops += flops
    return {
        "batch_size": batch_size,
        "gemms": rows,
        "step_ms": total_time * 1e3,
        "gflops": total_flops / total_time / 1e9,
    }


# ----------------------------------------------------------------------------- the two loops


def naive_dataset(n_images: int | None):
    """torchvision's FashionMNIST with ToTensor(), as the source text builds it (first ``n_images``)."""
    import torchvision
    from torchvision import transforms

    dataset = torchvision.datasets.FashionMNIST(
        root=settings.data_dir(), train=True, download=False, transform=transforms.ToTensor()
    )
    if n_images is not None and n_images < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(n_images))
    return dataset


def naive_epoch(dataset, batch_size: int, seed: int) -> dict:
    """One epoch of the learner's loop (the seed's code), on the CPU. Times the loop only."""
    torch.manual_seed(seed)  # the learner's code seeds the global generator (the DataLoader shuffles with it)
    model = models.build_autoencoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    steps, loss_sum = 0, 0.0
    start = time.perf_counter()
    for x, _ in loader:
        optimizer.zero_grad()
        recon = model(x.view(-1, 784)).view(-1, 1, 28, 28)
        loss = F.mse_loss(recon, x)
        loss.backward()
        optimizer.step()
        steps += 1
        loss_sum += loss.item()
    return {"seconds": time.perf_counter() - start, "steps": steps, "loss": loss_sum / steps}


def helper_epoch(images: torch.Tensor, batch_size: int, seed: int, device: str = "cpu") -> dict:
    """One epoch of ``ptft_helpers.pretrain``. ``seconds`` is the whole call (setup included),
    ``epoch_seconds`` the epoch itself as pretrain reports it."""
    with seeded(seed):
        model = models.build_autoencoder()
    start = time.perf_counter()
    history = training.pretrain(
        model, images, epochs=1, batch_size=batch_size, seed=seed, device=device, progress=False
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "epoch_seconds": history["seconds"][0],
        "steps": len(history["step_loss"]),
        "loss": history["train_loss"][0],
    }


def bench_naive_vs_helper(images: torch.Tensor, dataset, batch_size: int, repeats: int) -> dict:
    """Both loops on the same images, alternating which goes first; medians and the ratio."""
    # warm up both (thread pools, allocator, file cache) on a few batches, untimed
    few = min(len(images), 8 * batch_size)
    naive_epoch(torch.utils.data.Subset(dataset, range(few)), batch_size, seed=0)
    helper_epoch(images[:few], batch_size, seed=0)
    naive, helper = [], []
    for r in range(repeats):
        order = ("naive", "helper") if r % 2 == 0 else ("helper", "naive")
        for which in order:
            if which == "naive":
                naive.append(naive_epoch(dataset, batch_size, seed=r))
            else:
                helper.append(helper_epoch(images, batch_size, seed=r))
    if naive[0]["steps"] != helper[0]["steps"]:
        raise RuntimeError(f"Step counts differ: naive {naive[0]['steps']}, helper {helper[0]['steps']}.")
    result = {
        "batch_size": batch_size,
        "images": len(images),
        "steps": helper[0]["steps"],
        "naive_seconds": [run["seconds"] for run in naive],
        "helper_seconds": [run["seconds"] for run in helper],
        "helper_epoch_seconds": [run["epoch_seconds"] for run in helper],
        "naive_loss": median([run["loss"] for run in naive]),
        "helper_loss": median([run["loss"] for run in helper]),
    }
    result["naive_median"] = median(result["naive_seconds"])
    result["helper_median"] = median(result["helper_seconds"])
    result["speedup"] = result["naive_median"] / result["helper_median"]
    return result


def bench_limit(
    images: torch.Tensor,
    batch_size: int,
    repeats: int,
    peak_gflops: float,
    gemm: dict,
    epoch_seconds: list[float] | None = None,
) -> dict:
    """The helper's achieved matrix-multiply FLOP rate at ``batch_size``, against the peak."""
    if epoch_seconds is None:
        helper_epoch(images[: 4 * batch_size], batch_size, seed=0)  # warm-up
        epoch_seconds = [helper_epoch(images, batch_size, seed=r)["epoch_seconds"] for r in range(repeats)]
    flops = epoch_flops(linear_layers(models.build_autoencoder()), len(images))
    seconds = median(epoch_seconds)
    achieved = flops / seconds / 1e9
    return {
        "batch_size": batch_size,
        "epoch_flops": flops,
        "epoch_seconds": epoch_seconds,
        "epoch_median": seconds,
        "gflops": achieved,
        "fraction_of_peak": achieved / peak_gflops,
        "model_gemm_gflops": gemm["gflops"],
        "fraction_of_model_gemms": achieved / gemm["gflops"],
    }


def profile_step(images: torch.Tensor, batch_size: int, steps: int = 12) -> dict:
    """Where a step of ``pretrain`` spends its time on the CPU: GEMMs, the optimizer, the rest."""
    from torch.profiler import ProfilerActivity, profile

    subset = images[: steps * batch_size]
    steps = math.ceil(len(subset) / batch_size)
    helper_epoch(subset, batch_size, seed=0)  # warm-up
    model = models.build_autoencoder()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        training.pretrain(model, subset, epochs=1, batch_size=batch_size, device="cpu", progress=False)
    wall = time.perf_counter() - start
    averages = prof.key_averages()
    self_us = {e.key: e.self_cpu_time_total for e in averages}
    total_us = sum(self_us.values())
    gemm_us = sum(self_us.get(k, 0) for k in ("aten::mm", "aten::addmm"))
    optim_us = sum(e.cpu_time_total for e in averages if e.key.startswith("Optimizer.step#"))
    rest_us = max(total_us - gemm_us - optim_us, 0)
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {
        "batch_size": batch_size,
        "steps": steps,
        "wall_ms_per_step_profiled": wall * 1e3 / steps,
        "share": {
            "gemm (mm, addmm)": gemm_us / total_us,
            "optimizer step": optim_us / total_us,
            "elementwise, reductions, copies, other": rest_us / total_us,
        },
        "top_ops": [
            {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps, "calls_per_step": e.count / steps}
            for e in top
        ],
    }


# ----------------------------------------------------------------------------- GPU


def _train_step_fn(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    device: torch.device,
    precision: str,
    cache_enabled: bool = True,
):
    """``training.pretrain_step`` (the shipped step) on one batch of indices: bf16 is ``devices.autocast``
    (bf16 on CUDA, a no-op on the CPU), fp32 no autocast; ``cache_enabled=False`` for CUDA graph capture."""
    amp = devices.autocast(device, cache_enabled=cache_enabled) if precision == "bf16" else None

    def step(idx: torch.Tensor) -> torch.Tensor:
        target = x.index_select(0, idx)
        return training.pretrain_step(model, optimizer, target, target, amp)

    return step


def _graph_runner(step, indices, optimizer):
    """``run(n)``: ``n`` steps replayed from one CUDA graph (captured after 3 warm-up steps on a side stream);
    returns the last step's loss."""
    static_idx = indices()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(static_idx)
    torch.cuda.current_stream().wait_stream(side)
    optimizer.zero_grad(set_to_none=True)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        static_loss = step(static_idx)

    def run(n: int) -> torch.Tensor:
        for _ in range(n):
            static_idx.copy_(indices())
            cuda_graph.replay()
        return static_loss

    return run


def _eager_runner(step, indices):
    """``run(n)``: ``n`` eager steps; returns the last step's loss."""

    def run(n: int) -> torch.Tensor:
        loss = None
        for _ in range(n):
            loss = step(indices())
        return loss

    return run


def bench_throughput(
    images: torch.Tensor, device: torch.device, batch_size: int, precision: str, mode: str, steps: int, repeats: int
) -> dict:
    """Training images per second for one configuration (median of ``repeats`` runs of ``steps`` steps).

    mode: 'eager'; 'compile' (``torch.compile(model)``, compile time reported apart);
    'cuda-graph' (forward, backward and a capturable fused Adam step captured once, replayed).
    """
    x = data.to_inputs(images, device)
    with seeded(0):
        model = models.build_autoencoder().to(device).train()
    graph = mode == "cuda-graph"
    if graph and device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device.")
    optimizer = training.adam(model.parameters(), 1e-3, device, capturable=graph)
    net = model
    if mode == "compile":
        torch._dynamo.reset()  # a fresh compile per configuration (no recompile-limit fallbacks)
        net = torch.compile(model)
    step = _train_step_fn(net, optimizer, x, device, precision, cache_enabled=not graph)
    generator = torch.Generator(device=device).manual_seed(0)

    def indices() -> torch.Tensor:
        return torch.randint(len(x), (batch_size,), device=device, generator=generator)

    start = _now(device)
    run = _graph_runner(step, indices, optimizer) if graph else _eager_runner(step, indices)
    run(5)  # warm-up (and, for 'compile', the compilation)
    setup_seconds = _now(device) - start
    times = []
    for _ in range(repeats):
        start = _now(device)
        loss = run(steps)
        times.append(_now(device) - start)
    loss_value = float(loss)
    if not math.isfinite(loss_value):
        raise RuntimeError(f"{precision} {mode} batch {batch_size}: the loss is {loss_value}.")
    seconds = median(times)
    return {
        "batch_size": batch_size,
        "precision": precision,
        "mode": mode,
        "steps": steps,
        "images_per_second": steps * batch_size / seconds,
        "ms_per_step": seconds / steps * 1e3,
        "setup_seconds": setup_seconds,
        "loss": loss_value,
    }


def bench_gpu(images: torch.Tensor, batch_sizes, precisions, modes, steps: int, repeats: int, epochs: int) -> dict:
    device = torch.device("cuda")
    rows = []
    for precision in precisions:
        for mode in modes:
            for batch_size in batch_sizes:
                try:
                    rows.append(bench_throughput(images, device, batch_size, precision, mode, steps, repeats))
                except Exception as err:  # report, keep going: one failing mode should not lose the rest
                    rows.append(
                        {
                            "batch_size": batch_size,
                            "precision": precision,
                            "mode": mode,
                            "error": f"{type(err).__name__}: {err}",
                        }
                    )
                print(_throughput_line(rows[-1]), flush=True)
    # the run a notebook does: pretrain, default batch size (128), bf16 autocast on CUDA
    with seeded(0):
        warm, model = models.build_autoencoder(), models.build_autoencoder()
    training.pretrain(warm, images[:4096], epochs=1, device=device, progress=False)  # warm-up
    start = _now(device)
    history = training.pretrain(model, images, epochs=epochs, device=device, progress=False)
    run_seconds = _now(device) - start
    return {
        "device": torch.cuda.get_device_name(device),
        "throughput": rows,
        "pretrain_run": {
            "epochs": epochs,
            "batch_size": 128,
            "images": len(images),
            "seconds": run_seconds,
            "epoch_seconds_median": median(history["seconds"]),
            "final_loss": history["train_loss"][-1],
        },
    }


def _throughput_line(row: dict) -> str:
    head = f"  {row['precision']:>4}  {row['mode']:<10}  batch {row['batch_size']:>4}: "
    if "error" in row:
        return head + f"FAILED ({row['error'][:100]})"
    return (
        head
        + f"{row['images_per_second']:>12,.0f} images/s  "
        + f"({row['ms_per_step']:.3f} ms/step, setup {row['setup_seconds']:.1f} s)"
    )


# ----------------------------------------------------------------------------- report


def report(results: dict) -> None:
    """Print the results: the same Markdown that ``benchmarks/README.md`` records (one renderer, ``markdown``)."""
    print("\n" + markdown(results))


def _pivot(rows: list[dict]) -> list[list]:
    sizes = sorted({r["batch_size"] for r in rows})
    table = []
    for key in dict.fromkeys((r["precision"], r["mode"]) for r in rows):
        by_size = {r["batch_size"]: r for r in rows if (r["precision"], r["mode"]) == key}
        table.append(
            list(key)
            + [
                ("failed" if "error" in by_size[b] else f"{by_size[b]['images_per_second']:,.0f}")
                if b in by_size
                else "-"
                for b in sizes
            ]
        )
    return table


def _runs(seconds: list[float]) -> str:
    return " ".join(f"{s:.2f}" for s in seconds)


def _table(headers: list[str], rows: list[list], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(headers))]
    return ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows
    ]


def _machine_lines(results: dict) -> list[str]:
    """The machine, its matrix-multiply peak and the model's GEMMs timed alone."""
    m, mm = results["machine"], results["matmul"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpus_usable']} usable CPUs ({m['cpu_capability']}, {m['blas']}), "
        f"torch {m['torch']} with {m['torch_threads']} threads, Python {m['python']}"
        + (
            f"; GPU {m['cuda']['name']} ({m['cuda']['memory_gib']} GiB, CUDA {m['cuda']['cuda_version']})"
            if m["cuda"]
            else "; no GPU"
        )
        + ".",
        "",
        f"fp32 matrix-multiply peak (best square `torch.mm`): **{mm['peak_gflops']:.0f} GFLOP/s** "
        "(" + ", ".join(f"{r['n']}: {r['gflops']:.0f}" for r in mm["square"]) + ").",
    ]
    for g in mm["model_gemms"]:
        lines += ["", f"The model's GEMMs at batch {g['batch_size']}, each timed alone:", ""]
        rows = [[f"`{r['gemm']}`", f"{r['ms']:.3f}", f"{r['gflops']:.1f}"] for r in g["gemms"]]
        lines += _table(
            ["GEMM", "ms", "GFLOP/s"], rows + [["all of one step", f"{g['step_ms']:.3f}", f"{g['gflops']:.1f}"]]
        )
    return lines


def _naive_lines(results: dict) -> list[str]:
    """The naive loop against ``pretrain``, and what a 20-epoch pretrain costs."""
    nv, lines = results["naive_vs_helper"], []
    lines += [""] + _table(
        [
            f"one epoch, batch {nv['batch_size']}, {nv['images']:,} images, {nv['steps']} steps",
            "median s",
            "runs (s)",
            "mean loss",
        ],
        [
            [
                "naive loop (DataLoader + ToTensor)",
                f"{nv['naive_median']:.2f}",
                _runs(nv["naive_seconds"]),
                f"{nv['naive_loss']:.4f}",
            ],
            [
                "`ptft_helpers.pretrain`",
                f"{nv['helper_median']:.2f}",
                _runs(nv["helper_seconds"]),
                f"{nv['helper_loss']:.4f}",
            ],
            ["**speedup**", f"**{nv['speedup']:.1f}x**", "", ""],
        ],
    )
    epoch_60k = median(nv["helper_epoch_seconds"]) * 60000 / nv["images"]
    lines += [
        "",
        f"speedup: {nv['speedup']:.1f}x (target >= 3x); a 20-epoch pretrain at batch 128 on this CPU takes "
        f"about {20 * epoch_60k:.0f} s (20 x the median epoch, scaled to 60,000 images).",
    ]
    return lines


def _limit_lines(results: dict) -> list[str]:
    """``pretrain`` against the matrix-multiply limit, per batch size."""
    lines: list[str] = []
    lines += [""] + _table(
        ["batch", "GFLOP / epoch", "median epoch s", "GFLOP/s", "% of matmul peak", "% of the model's GEMMs alone"],
        [
            [
                r["batch_size"],
                f"{r['epoch_flops'] / 1e9:.1f}",
                f"{r['epoch_median']:.2f}",
                f"{r['gflops']:.1f}",
                f"**{100 * r['fraction_of_peak']:.0f}%**",
                f"{100 * r['fraction_of_model_gemms']:.0f}%",
            ]
            for r in results["limit"]
        ],
        right_from=0,
    )
    return lines


def _profile_and_gpu_lines(results: dict) -> list[str]:
    """The profile of one step (when measured) and the GPU section (or why there is none)."""
    lines: list[str] = []
    prof = results.get("profile")
    if prof:
        lines += [
            "",
            f"Profile of a pretrain step at batch {prof['batch_size']} (CPU self time): "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in prof["share"].items())
            + ".",
            "",
        ]
        lines += _table(
            ["top op", "ms/step", "calls/step"],
            [[f"`{t['op']}`", f"{t['self_ms_per_step']:.3f}", f"{t['calls_per_step']:.0f}"] for t in prof["top_ops"]],
        )
    gpu = results.get("gpu")
    if gpu:
        sizes = sorted({r["batch_size"] for r in gpu["throughput"]})
        lines += ["", f"GPU training throughput on {gpu['device']} (images/s):", ""]
        lines += _table(
            ["precision, mode"] + [str(b) for b in sizes],
            [[f"{row[0]} {row[1]}"] + row[2:] for row in _pivot(gpu["throughput"])],
        )
        run = gpu["pretrain_run"]
        lines += [
            "",
            f"{run['epochs']}-epoch pretrain run (batch {run['batch_size']}, {run['images']:,} images, "
            f"bf16 autocast): **{run['seconds']:.1f} s** ({run['epoch_seconds_median']:.2f} s/epoch), "
            f"final loss {run['final_loss']:.4f}.",
        ]
    else:
        lines += ["", f"GPU: {NO_CUDA}."]
    return lines


def markdown(results: dict) -> str:
    """The results as Markdown: what the script prints and what ``benchmarks/README.md`` records."""
    lines = _machine_lines(results) + _naive_lines(results) + _limit_lines(results)
    lines += _profile_and_gpu_lines(results)
    t = results["targets"]
    lines += [
        "",
        f"Targets: speedup >= 3x: {'met' if t['speedup_at_least_3x'] else 'NOT met'}; "
        f"batch 512 >= 60% of peak: {'met' if t['batch512_at_least_60pct_of_peak'] else 'NOT met'} "
        f"(benchmark time {results['benchmark_seconds']:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per measurement (default 5; 2 with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run: a few thousand images, small matrices")
    p.add_argument(
        "--images", type=int, default=None, help="train on the first N images (default all 60000; 4096 with --quick)"
    )
    p.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO_ROOT)})",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown")
    p.add_argument("--no-gpu", action="store_true", help="measure the CPU only even when CUDA is available")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.images is None and args.quick:
        args.images = 4096
    if args.repeats < 1 or (args.images is not None and args.images < 512):
        p.error("--repeats must be >= 1 and --images >= 512")
    return args


def measure_matmul(args: argparse.Namespace) -> dict:
    """The fp32 matrix-multiply rate: square products (the peak) and the model's own GEMMs."""
    print("Measuring the fp32 matrix-multiply rate...", flush=True)
    sizes = (512, 1024) if args.quick else (1024, 2048, 3072, 4096)
    square = [{"n": n, "gflops": matmul_rate(n, repeats=max(3, args.repeats))} for n in sizes]
    model = models.build_autoencoder()
    return {
        "square": square,
        "peak_gflops": max(r["gflops"] for r in square),
        "model_gemms": [model_gemm_rates(model, b, repeats=3) for b in LIMIT_BATCH_SIZES],
    }


def measure_gpu(images: torch.Tensor, args: argparse.Namespace) -> dict:
    """The GPU section: throughput per batch size, precision and mode, and a pretrain run."""
    print("Measuring the GPU...", flush=True)
    return bench_gpu(
        images,
        batch_sizes=(256, 1024) if args.quick else GPU_BATCH_SIZES,
        precisions=GPU_PRECISIONS,
        modes=GPU_MODES,
        steps=20 if args.quick else 200,
        repeats=args.repeats,
        epochs=2 if args.quick else 20,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    began = time.perf_counter()
    train = data.load("fashion-mnist", "train")
    images = train.images[: args.images] if args.images else train.images
    results: dict = {
        "machine": machine_info(),
        "settings": {"repeats": args.repeats, "quick": args.quick, "images": len(images)},
    }
    m = results["machine"]
    print(f"Machine: {m['cpu']}, {m['cpus_usable']} usable CPUs, torch {m['torch']}, {m['torch_threads']} threads")
    use_gpu = torch.cuda.is_available() and not args.no_gpu
    print(
        f"GPU: {m['cuda']['name']}"
        if use_gpu
        else NO_CUDA
        if not torch.cuda.is_available()
        else "GPU: skipped (--no-gpu)"
    )

    results["matmul"] = measure_matmul(args)
    peak = results["matmul"]["peak_gflops"]

    print(f"Timing the naive loop against pretrain ({args.repeats} repeats each, alternating)...", flush=True)
    dataset = naive_dataset(len(images))
    results["naive_vs_helper"] = nv = bench_naive_vs_helper(images, dataset, 128, args.repeats)

    print("Timing pretrain against the limit...", flush=True)
    gemm = {g["batch_size"]: g for g in results["matmul"]["model_gemms"]}
    results["limit"] = [
        bench_limit(
            images, b, args.repeats, peak, gemm[b], epoch_seconds=nv["helper_epoch_seconds"] if b == 128 else None
        )
        for b in LIMIT_BATCH_SIZES
    ]
    results["profile"] = None if args.no_profile else profile_step(images, 512, steps=4 if args.quick else 12)

    results["gpu"] = measure_gpu(images, args) if use_gpu else None
    limit512 = next(r for r in results["limit"] if r["batch_size"] == 512)
    results["targets"] = {
        "speedup_at_least_3x": nv["speedup"] >= 3,
        "batch512_at_least_60pct_of_peak": limit512["fraction_of_peak"] >= 0.6,
    }
    results["benchmark_seconds"] = time.perf_counter() - began
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"Wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
