#!/usr/bin/env python
"""Classifier runs per second for notebook 05's sweep: batched (``sweep.train_stack``) vs one at a time.

The same runs both ways: whole 784-256-32 MLP classifiers (the scratch/fine-tune case) from
different seeds and learning rates, on the same labelled Fashion-MNIST subset, for the same number
of full-batch Adam steps; then each is scored on the test set. One at a time uses
``training.finetune`` + ``training.evaluate``; batched trains all of them in one stack. It prints
runs per second both ways, the speed-up, and the largest difference in test accuracy between a
run trained alone and the same run trained in the stack.

Run it on a quiet machine (other processes on the same cores slow a 2-thread PyTorch more than
their share):

    .venv/bin/python benchmarks/bench_sweep.py              # 24 runs, 100 labels, 150 steps
    .venv/bin/python benchmarks/bench_sweep.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from ptft_helpers import data
from ptft_helpers.data import balanced_subset, to_inputs
from ptft_helpers.devices import cpu_name
from ptft_helpers.models import Classifier, build_autoencoder
from ptft_helpers.seeding import seeded
from ptft_helpers.sweep import Job, score_on_test, train_stack
from ptft_helpers.training import evaluate, finetune

LRS = (3e-4, 1e-3, 3e-3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24, help="classifier runs (default 24)")
    parser.add_argument("--labels", type=int, default=100, help="labelled training images (default 100)")
    parser.add_argument("--steps", type=int, default=150, help="full-batch Adam steps per run (default 150)")
    parser.add_argument("--quick", action="store_true", help="6 runs of 20 steps")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    runs, steps = (6, 20) if args.quick else (args.runs, args.steps)
    train, test = data.load("fashion-mnist", "train"), data.load("fashion-mnist", "test")
    idx = balanced_subset(train.labels, args.labels, seed=0)
    images, labels = train.images[idx], train.labels[idx]
    setups = [(seed, LRS[seed % len(LRS)]) for seed in range(runs)]
    models = []
    for seed, _ in setups:
        with seeded(seed):
            models.append(Classifier(build_autoencoder().encoder))

    start = time.perf_counter()
    alone = []
    for model, (seed, lr) in zip(models, setups):
        clf = copy.deepcopy(model)
        finetune(clf, images, labels, epochs=steps, lr=lr, batch_size=len(images), seed=seed, progress=False)
        alone.append(evaluate(clf, test.images, test.labels)["accuracy"])
    t_alone = time.perf_counter() - start

    x = to_inputs(images)
    start = time.perf_counter()
    jobs = [
        Job(copy.deepcopy(m), x, labels, x[:10], labels[:10], to_inputs(test.images), test.labels, lr, seed)
        for m, (seed, lr) in zip(models, setups)
    ]
    batched = score_on_test(jobs, train_stack(jobs, steps=steps, batch_size=len(images), check_every=steps))
    t_batched = time.perf_counter() - start

    result = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "runs": runs,
        "labels": args.labels,
        "steps": steps,
        "alone_seconds": t_alone,
        "batched_seconds": t_batched,
        "alone_runs_per_s": runs / t_alone,
        "batched_runs_per_s": runs / t_batched,
        "speedup": t_alone / t_batched,
        "max_test_acc_diff_pp": 100 * max(abs(a - b) for a, b in zip(alone, batched)),
    }
    print(f"{result['cpu']}, {result['threads']} threads, torch {result['torch']}")
    print(f"{runs} runs of a 784-256-32 MLP classifier, {args.labels} labels, {steps} full-batch Adam steps each")
    print(f"one at a time: {t_alone:6.1f} s  {result['alone_runs_per_s']:6.2f} runs/s")
    print(f"batched      : {t_batched:6.1f} s  {result['batched_runs_per_s']:6.2f} runs/s  ({result['speedup']:.1f}x)")
    print(f"largest test-accuracy difference, alone vs batched: {result['max_test_acc_diff_pp']:.2f} points")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
