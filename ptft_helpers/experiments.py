"""The label-efficiency experiment of notebook 05: what did pretraining buy?

For each number of labels n and each label-subset seed, the n labelled images are split into a
training part and a validation part (the validation labels count against n). Then every method
trains a classifier on the training part, once per learning rate of the grid, with the same step
budget; the validation part picks the learning rate and the step (early stopping); the test set
scores that one choice, once. The methods:

- ``scratch``: the whole 784-256-32 MLP plus a linear head, from random weights;
- ``fine-tune``: the same, starting from a pretrained encoder (one per pretext);
- ``probe code`` / ``probe hidden``: a linear head on the frozen encoder's 32-d code / 256-d hidden layer,
  for every pretrained encoder and for a random, untrained one;
- ``pixels``: a linear head on the raw pixels (logistic regression); ``PCA32``: on 32 principal components.

Subset seed s uses pretraining run ``s % pretrain_runs`` of every pretext, so the spread of the paired
differences contains the spread between pretraining runs. All runs with the same layers and data sizes
are trained together by ``sweep.train_stack``.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import load_autoencoder, save_checkpoint
from .data import ImageData, balanced_subset, to_inputs
from .models import Autoencoder, Classifier, build_autoencoder
from .pca import principal_subspace
from .seeding import seeded
from .settings import checkpoint_dirs, pick, progress_enabled, writable_checkpoint_dir
from .stats import Interval, holm, t_interval
from .sweep import Job, score_on_test, train_stack
from .training import corrupt, pretrain
from .validation import positive_int

PRETEXTS = ("plain", "denoising", "masked", "masked-rescaled")
WHOLE_LRS = (3e-4, 1e-3, 3e-3)  # scratch and fine-tune: Adam learning rates tried
HEAD_LRS = (1e-3, 1e-2, 1e-1)  # linear heads (probes, pixels, PCA): same number of tries


@dataclass(frozen=True)
class Protocol:
    """Everything that fixes the sweep's budget (see ``protocol()`` for the values used)."""

    label_counts: tuple[int, ...]
    seeds_small: int  # label-subset seeds at n <= 100
    seeds_large: int  # ... and above
    pretrain_runs: int  # independent pretraining runs per pretext
    steps: int  # Adam steps per run (every method, every n)
    batch_size: int  # min(batch_size, training examples)
    check_every: int  # validation check interval, in steps
    val_fraction: float  # share of the n labels used for validation (at least one per class)

    def seeds(self, n: int) -> list[int]:
        return list(range(self.seeds_small if n <= 100 else self.seeds_large))

    def val_size(self, n: int) -> int:
        return max(10, round(n * self.val_fraction / 10) * 10)


def protocol() -> Protocol:
    """The full-run protocol (a smaller one in fast mode, same code path)."""
    return Protocol(
        label_counts=pick((20, 50, 100, 500, 1000), (20, 100)),
        seeds_small=pick(12, 3),
        seeds_large=pick(6, 3),
        pretrain_runs=pick(3, 2),
        steps=pick(150, 20),
        batch_size=128,
        check_every=10,
        val_fraction=0.2,
    )


def split_labelled(labels: torch.Tensor, n: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of ``n`` balanced labelled examples drawn with ``seed``, split into (train, validation).

    The validation part takes ``n_val / 10`` examples of each class; the rest is for training.
    """
    chosen = balanced_subset(labels, n, seed=seed)
    per_class = n_val // 10
    if n_val % 10 or not 1 <= per_class < n // 10:
        raise ValueError(f"n_val={n_val!r} must be a multiple of 10 that leaves each class a training example.")
    is_val = torch.zeros(len(chosen), dtype=torch.bool)
    for c in range(10):
        is_val[torch.nonzero(labels[chosen] == c).flatten()[:per_class]] = True
    return chosen[~is_val], chosen[is_val]


@torch.no_grad()
def features(encoder: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """A frozen encoder's ``"code"`` (N, 32) or ``"hidden"`` layer (N, 256) for float inputs ``x`` (N, 784)."""
    if layer == "code":
        return encoder(x)
    if layer == "hidden":
        return torch.relu(encoder.fc1(x))
    raise ValueError(f"Unknown layer {layer!r}. Choose 'code' or 'hidden'.")


@torch.no_grad()
def pretext_error(model: Autoencoder, images: torch.Tensor, pretext: str, seed: int = 0) -> float:
    """Mean squared error per pixel on the pretext's own task: reconstruct clean ``images`` from corrupted ones."""
    x = to_inputs(images)
    inputs = corrupt(x, pretext, torch.Generator().manual_seed(seed))
    return float(F.mse_loss(model.eval()(inputs), x))


def load_or_pretrain_on_subset(
    train: ImageData, *, size: int, pretext: str, seed: int, steps: int, batch_size: int = 128
) -> Autoencoder:
    """An autoencoder pretrained on the first ``size`` training images for about ``steps`` Adam steps
    (whole epochs), loaded from its checkpoint when one exists.

    Fewer images get more epochs, so every size gets the same number of updates: only the amount of
    unlabelled data changes. (No per-epoch test score, unlike ``load_or_pretrain``: at 1,000 images
    that would mean over a thousand test passes.)
    """
    positive_int(size, "size")
    positive_int(steps, "steps")
    epochs = max(1, round(steps / -(-size // batch_size)))
    name = f"fashion-mnist-mlp-256-32-{pretext}-e{epochs}-n{size}-s{seed}-subset.pt"
    for folder in checkpoint_dirs():
        if (folder / name).is_file():
            return load_autoencoder(folder / name)[0]
    with seeded(seed):
        model = build_autoencoder()
    history = pretrain(
        model, train.images[:size], epochs=epochs, pretext=pretext, seed=seed, batch_size=batch_size, progress=False
    )
    save_checkpoint(
        model,
        writable_checkpoint_dir() / name,
        pretext=pretext,
        seed=seed,
        train_size=size,
        epochs=epochs,
        seconds=sum(history["seconds"]),
    )
    return model.cpu()


def _linear(d: int, seed: int) -> nn.Linear:
    with seeded(seed):
        return nn.Linear(d, 10)  # (N, d) -> (N, 10)


def _classifier(encoder: nn.Module, seed: int) -> Classifier:
    with seeded(seed):
        return Classifier(copy.deepcopy(encoder))


def make_jobs(
    encoders: Mapping[str, Sequence[nn.Module]],
    train: ImageData,
    test: ImageData,
    *,
    n: int,
    seed: int,
    val_counts: bool = True,
    n_val: int,
    pca: tuple[torch.Tensor, torch.Tensor] | None = None,
    cache: dict | None = None,
    methods: Sequence[str] = ("scratch", "fine-tune", "probe code", "probe hidden", "pixels", "PCA32"),
    info: Mapping | None = None,
) -> list[Job]:
    """Every (method, encoder, learning rate) job for one label count and subset seed.

    ``encoders[pretext]`` lists that pretext's pretraining runs; this seed uses run ``seed % len``.
    ``val_counts=False`` draws ``n`` training labels plus ``n_val`` extra validation labels.
    ``pca`` is (mean, basis) for the PCA32 control; ``cache`` keeps test-set features between calls.
    """
    cache = {} if cache is None else cache
    if val_counts:
        tr, va = split_labelled(train.labels, n, n_val, seed)
    else:
        tr, va = split_labelled(train.labels, n + n_val, n_val, seed)
    x_tr, x_va = to_inputs(train.images[tr]), to_inputs(train.images[va])
    y_tr, y_va = train.labels[tr], train.labels[va]
    if "test" not in cache:
        cache["test"] = to_inputs(test.images)
    x_te = cache["test"]
    base = {"labels": n, "seed": seed, "val_counts": val_counts, "n_train": len(tr), "n_val": len(va), **(info or {})}
    jobs = []

    def add(method, model, inputs, test_x, lrs, **extra):
        for lr in lrs:
            jobs.append(
                Job(
                    copy.deepcopy(model),
                    inputs[0],
                    y_tr,
                    inputs[1],
                    y_va,
                    test_x,
                    test.labels,
                    lr,
                    seed,
                    {**base, "method": method, "lr": lr, **extra},
                )
            )

    with seeded(seed):
        random_encoder = build_autoencoder().encoder
    runs = {p: (runs[seed % len(runs)], seed % len(runs)) for p, runs in encoders.items()}
    if "scratch" in methods:
        add("scratch", _classifier(random_encoder, seed), (x_tr, x_va), x_te, WHOLE_LRS, encoder="none")
    if "fine-tune" in methods:
        for p, (enc, run) in runs.items():
            add("fine-tune", _classifier(enc, seed), (x_tr, x_va), x_te, WHOLE_LRS, encoder=p, pretrain_run=run)
    for layer in ("code", "hidden"):
        if f"probe {layer}" not in methods:
            continue
        for p, (enc, run) in [*runs.items(), ("random", (random_encoder, seed))]:
            key = (p, run, layer)
            if key not in cache:
                cache[key] = features(enc, x_te, layer)
            f_tr, f_va = features(enc, x_tr, layer), features(enc, x_va, layer)
            add(
                f"probe {layer}",
                _linear(f_tr.shape[1], seed),
                (f_tr, f_va),
                cache[key],
                HEAD_LRS,
                encoder=p,
                pretrain_run=run,
            )
    if "pixels" in methods:
        add("pixels", _linear(784, seed), (x_tr, x_va), x_te, HEAD_LRS, encoder="none")
    if "PCA32" in methods and pca is not None:
        mean, basis = pca
        if "pca" not in cache:
            cache["pca"] = (x_te - mean) @ basis
        add(
            "PCA32",
            _linear(basis.shape[1], seed),
            ((x_tr - mean) @ basis, (x_va - mean) @ basis),
            cache["pca"],
            HEAD_LRS,
            encoder="pca",
        )
    return jobs


def fit_pca(train: ImageData, k: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean image and top-k principal directions (784, k) of all training images (no labels used)."""
    x = to_inputs(train.images)
    return x.mean(0), principal_subspace(x, k)


def run_sweep(plan: Sequence[Sequence[Job]], prot: Protocol, desc: str = "sweep") -> list[dict]:
    """``run_jobs`` for each list of jobs in ``plan`` (e.g. one per label count), under one progress bar
    over the whole sweep (in model-steps, with its ETA)."""
    total = sum(len(jobs) for jobs in plan) * prot.steps
    with tqdm(total=total, desc=desc, unit="model-step", disable=not progress_enabled(), smoothing=0.1) as bar:
        return [row for jobs in plan for row in run_jobs(jobs, prot, bar)]


def run_jobs(jobs: Sequence[Job], prot: Protocol, progress=None) -> list[dict]:
    """Train ``jobs`` (stacked by model shape and data size), choose each run's learning rate on
    validation, score the chosen model on the test set once; return one row per run.

    A run is the set of jobs that differ only in learning rate.
    """
    stacks: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        shape = tuple((name, tuple(p.shape)) for name, p in job.model.named_parameters())
        stacks.setdefault((shape, len(job.train_y), len(job.val_y)), []).append(i)
    trained: list = [None] * len(jobs)
    seconds = [0.0] * len(jobs)
    for members in stacks.values():
        start = time.perf_counter()
        results = train_stack(
            [jobs[i] for i in members],
            steps=prot.steps,
            batch_size=prot.batch_size,
            check_every=prot.check_every,
            progress=progress,
        )
        share = (time.perf_counter() - start) / len(members)
        for i, r in zip(members, results):
            trained[i], seconds[i] = r, share
    runs: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = tuple(sorted((k, v) for k, v in job.info.items() if k != "lr"))
        runs.setdefault(key, []).append(i)
    # The run's choice: best validation accuracy, then lower validation loss, then the smaller learning rate.
    chosen = [min(m, key=lambda i: (-trained[i].val_acc, trained[i].val_loss, jobs[i].lr)) for m in runs.values()]
    test_acc = score_on_test([jobs[i] for i in chosen], [trained[i] for i in chosen])
    rows = []
    for members, i, acc in zip(runs.values(), chosen, test_acc):
        t = trained[i]
        late = [a for s, a, _ in t.curve if s > t.best_step]
        rows.append(
            {
                **jobs[i].info,
                "steps": prot.steps,
                "best_step": t.best_step,
                "val_acc": t.val_acc,
                "val_loss": t.val_loss,
                "final_val_acc": t.curve[-1][1],
                "max_val_acc_after_best": max(late) if late else t.val_acc,
                "test_acc": acc,
                "seconds": sum(seconds[j] for j in members),
            }
        )
    return rows


def paired_gains(rows: Sequence[Mapping], *, baseline: str = "scratch") -> list[dict]:
    """Per (method, encoder, labels, val_counts, pretrain_size): the paired test-accuracy gain over
    ``baseline`` (same labels, same seed), in percentage points, with its t-based 95% CI, p-value and
    Holm-adjusted p-value over all the comparisons returned."""
    base = {(r["labels"], r["seed"], r["val_counts"]): r["test_acc"] for r in rows if r["method"] == baseline}
    groups: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r["method"] == baseline:
            continue
        key = (r["method"], r["encoder"], r["labels"], r["val_counts"], r.get("pretrain_size", 60000))
        groups.setdefault(key, {})[r["seed"]] = 100 * (r["test_acc"] - base[r["labels"], r["seed"], r["val_counts"]])
    out = []
    for (method, encoder, n, val_counts, size), diffs in groups.items():
        ci: Interval = t_interval([diffs[s] for s in sorted(diffs)])
        out.append(
            {
                "method": method,
                "encoder": encoder,
                "labels": n,
                "val_counts": val_counts,
                "pretrain_size": size,
                "gain_pp": ci.mean,
                "low": ci.low,
                "high": ci.high,
                "p": ci.p,
                "seeds": ci.n,
            }
        )
    for r, p in zip(out, holm([r["p"] for r in out])):
        r["p_holm"] = p
    return out


def mean_accuracy(rows: Sequence[Mapping], **where) -> dict[int, float]:
    """Mean test accuracy per label count over the rows matching ``where`` (e.g. method="scratch")."""
    by_n: dict[int, list[float]] = {}
    for r in rows:
        if all(r.get(k) == v for k, v in where.items()):
            by_n.setdefault(r["labels"], []).append(r["test_acc"])
    return {n: statistics.fmean(v) for n, v in sorted(by_n.items())}


def select(rows: Sequence[Mapping], fn: Callable[[Mapping], bool]) -> list[Mapping]:
    """The rows for which ``fn(row)`` is true."""
    return [r for r in rows if fn(r)]
