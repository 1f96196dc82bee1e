"""The label-efficiency experiment of notebook 05: what did pretraining buy?

For each number of labels n and each label-subset seed, the n labelled images are split into a
training part and a validation part (the validation labels count against n). Every method then fits a
classifier on the training part for each setting of its grid; the validation part picks the setting; the
test set scores that one choice, once. The methods:

- ``scratch``: the whole 784-256-32 MLP plus a linear head, from random weights;
- ``fine-tune``: the same, starting from a pretrained encoder (one per pretext);
- ``probe code`` / ``probe hidden``: a linear head on the frozen encoder's 32-d code / 256-d hidden layer,
  for every pretrained encoder and for a random, untrained one;
- ``pixels``: a linear head on the raw pixels (logistic regression); ``PCA32``: on 32 principal components.

Networks (scratch, fine-tune) are trained with Adam at 4 learning rates for the same number of steps, with early
stopping, many at once (``sweep.train_stack``; ``network_jobs``, ``run_sweep``). Linear heads are a convex
problem and are fitted exactly, as in every notebook of the series: logistic regression with L-BFGS at each weight
decay of ``probes.WEIGHT_DECAYS``, on features standardised with the unlabelled images' statistics
(``probe_rows``). ``sweep_rows`` runs both for a list of label counts.

Subset seed s uses pretraining run ``s % pretrain_runs`` of every pretext, so the spread of the paired
differences contains the spread between pretraining runs.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import ImageData, balanced_subset, to_inputs
from .models import Autoencoder, Classifier, build_autoencoder
from .pca import principal_subspace
from .pretrained import load_or_pretrain
from .probes import WEIGHT_DECAYS, select_and_score, standardizer
from .protocol import Protocol
from .protocol import protocol as protocol  # the notebooks call experiments.protocol()
from .seeding import seeded
from .settings import progress_enabled
from .stats import Interval, holm, t_interval
from .sweep import Job, score_on_test, train_stack
from .training import PRETEXTS as PRETEXTS  # the notebooks read experiments.PRETEXTS
from .training import corrupt
from .validation import positive_int

WHOLE_LRS = (3e-4, 1e-3, 3e-3, 1e-2)  # networks (scratch, fine-tune, and 06's conv nets): Adam learning rates tried
NETWORKS = ("scratch", "fine-tune")
LINEAR_HEADS = ("probe code", "probe hidden", "pixels", "PCA32")


def split_labelled(labels: torch.Tensor, n: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of ``n`` balanced labelled examples drawn with ``seed``, split into (train, validation).

    The validation part takes ``n_val / 10`` examples of each class; the rest is for training. ``n_val=0`` (no
    validation, e.g. at one label per class) gives every example to training.
    """
    chosen = balanced_subset(labels, n, seed=seed)
    per_class = n_val // 10
    if n_val % 10 or not 0 <= per_class < n // 10:
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
    dataset: str = "fashion-mnist", *, size: int, pretext: str, seed: int, steps: int, batch_size: int = 128
) -> Autoencoder:
    """An autoencoder pretrained on the first ``size`` training images for about ``steps`` Adam steps
    (whole epochs): ``pretrained.load_or_pretrain``'s, found or trained and saved as it says.

    Fewer images get more epochs, so every size gets the same number of updates: only the amount of
    unlabelled data changes. No test pass after each epoch (at 1,000 images that would be over a thousand):
    the checkpoint's history has no test loss, and its name ends in ``-subset``.
    """
    positive_int(size, "size")
    positive_int(steps, "steps")
    epochs = max(1, round(steps / -(-size // batch_size)))
    recipe = {"epochs": epochs, "train_size": size, "batch_size": batch_size}
    found = load_or_pretrain(dataset, pretext=pretext, seed=seed, progress=False, test_every_epoch=False, **recipe)
    return found.model


def _classifier(encoder: nn.Module, seed: int) -> Classifier:
    with seeded(seed):
        return Classifier(copy.deepcopy(encoder))


def labelled_split(
    train: ImageData, n: int, seed: int, n_val: int, val_counts: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of the protocol: ``n`` labels of which ``n_val`` validate, or with
    ``val_counts=False`` ``n`` training labels plus ``n_val`` extra validation labels."""
    return split_labelled(train.labels, n if val_counts else n + n_val, n_val, seed)


def network_jobs(
    encoders: Mapping[str, Sequence[nn.Module]],
    train: ImageData,
    test: ImageData,
    *,
    n: int,
    seed: int,
    n_val: int,
    val_counts: bool = True,
    cache: dict | None = None,
    methods: Sequence[str] = NETWORKS,
    info: Mapping | None = None,
) -> list[Job]:
    """Every (network, encoder, learning rate) job for one label count and subset seed.

    ``encoders[pretext]`` lists that pretext's pretraining runs; this seed uses run ``seed % len``.
    ``cache`` keeps the test inputs between calls.
    """
    cache = {} if cache is None else cache
    tr, va = labelled_split(train, n, seed, n_val, val_counts)
    x_tr, x_va = to_inputs(train.images[tr]), to_inputs(train.images[va])
    y_tr, y_va = train.labels[tr], train.labels[va]
    if "test" not in cache:
        cache["test"] = to_inputs(test.images)
    base = {"labels": n, "seed": seed, "val_counts": val_counts, "n_train": len(tr), "n_val": len(va), **(info or {})}
    jobs = []

    def add(method: str, model: nn.Module, **extra) -> None:
        for lr in WHOLE_LRS:
            row = {**base, "method": method, "lr": lr, **extra}
            jobs.append(Job(copy.deepcopy(model), x_tr, y_tr, x_va, y_va, cache["test"], test.labels, lr, seed, row))

    if "scratch" in methods:
        with seeded(seed):
            random_encoder = build_autoencoder().encoder
        add("scratch", _classifier(random_encoder, seed), encoder="none")
    if "fine-tune" in methods:
        for p, runs in encoders.items():
            run = seed % len(runs)
            add("fine-tune", _classifier(runs[run], seed), encoder=p, pretrain_run=run)
    return jobs


def _standardised(
    name: tuple, make: Callable[[torch.Tensor], torch.Tensor], train: ImageData, test: ImageData, cache: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of all training and test images for ``make`` (inputs -> features), standardised with the
    (unlabelled) training images' mean and spread; computed once per ``name`` and kept in ``cache``."""
    if name not in cache:
        train_f = make(to_inputs(train.images))
        mean, std = standardizer(train_f)
        cache[name] = ((train_f - mean) / std, (make(to_inputs(test.images)) - mean) / std)
    return cache[name]


def probe_rows(
    encoders: Mapping[str, Sequence[nn.Module]],
    train: ImageData,
    test: ImageData,
    *,
    n: int,
    seed: int,
    n_val: int,
    val_counts: bool = True,
    pca: tuple[torch.Tensor, torch.Tensor] | None = None,
    cache: dict | None = None,
    methods: Sequence[str] = LINEAR_HEADS,
    info: Mapping | None = None,
) -> list[dict]:
    """One row per linear head (probes on every encoder and on a random one, pixels, PCA32) for one label count
    and subset seed: logistic regression at each weight decay, the one with the best validation accuracy scored
    on the test set once (``probes.select_and_score``)."""
    cache = {} if cache is None else cache
    tr, va = labelled_split(train, n, seed, n_val, val_counts)
    y_tr, y_va = train.labels[tr], train.labels[va]
    base = {"labels": n, "seed": seed, "val_counts": val_counts, "n_train": len(tr), "n_val": len(va), **(info or {})}
    with seeded(seed):
        random_encoder = build_autoencoder().encoder
    rows = []
    for method, extra, key, make in _linear_heads(encoders, random_encoder, seed=seed, methods=methods, pca=pca):
        start = time.perf_counter()
        f_train, f_test = _standardised(key, make, train, test, cache)
        chosen = select_and_score(
            (f_train[tr], y_tr), (f_train[va], y_va), (f_test, test.labels), weight_decays=WEIGHT_DECAYS
        )
        rows.append(
            {
                **base,
                "method": method,
                **extra,
                "weight_decay": chosen["weight_decay"],
                "val_acc": chosen["val_acc"],
                "val_loss": chosen["val_loss"],
                "test_acc": chosen["test_acc"],
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


_LinearHead = tuple[str, dict, tuple, Callable[[torch.Tensor], torch.Tensor]]
"""A linear head of ``probe_rows``: (method, its row's extra columns, the cache key of its features, inputs ->
features)."""


def _linear_heads(
    encoders: Mapping[str, Sequence[nn.Module]],
    random_encoder: nn.Module,
    *,
    seed: int,
    methods: Sequence[str],
    pca: tuple[torch.Tensor, torch.Tensor] | None,
) -> list[_LinearHead]:
    """``probe_rows``' linear heads among ``methods``, in order: the probes of each pretext's run ``seed % len`` and
    of ``random_encoder`` (code, then hidden layer), then pixels, then PCA32 (only when ``pca`` is given)."""
    heads: list[_LinearHead] = []
    for layer in ("code", "hidden"):
        if f"probe {layer}" in methods:
            for p, runs in encoders.items():
                run = seed % len(runs)
                heads.append(
                    (
                        f"probe {layer}",
                        {"encoder": p, "pretrain_run": run},
                        (p, run, layer),
                        lambda x, e=runs[run], layer=layer: features(e, x, layer),
                    )
                )
            heads.append(
                (
                    f"probe {layer}",
                    {"encoder": "random"},
                    ("random", seed, layer),
                    lambda x, layer=layer: features(random_encoder, x, layer),
                )
            )
    if "pixels" in methods:
        heads.append(("pixels", {"encoder": "none"}, ("pixels",), lambda x: x))
    if "PCA32" in methods and pca is not None:
        mean, basis = pca
        heads.append(("PCA32", {"encoder": "pca"}, ("pca",), lambda x: (x - mean) @ basis))
    return heads


def sweep_rows(
    encoders: Mapping[str, Sequence[nn.Module]],
    train: ImageData,
    test: ImageData,
    prot: Protocol,
    *,
    label_counts: Sequence[int] | None = None,
    val_counts: bool = True,
    methods: Sequence[str] = (*NETWORKS, *LINEAR_HEADS),
    pca: tuple[torch.Tensor, torch.Tensor] | None = None,
    cache: dict | None = None,
    info: Mapping | None = None,
    desc: str = "sweep",
) -> list[dict]:
    """Every method's row at every label count (default ``prot.label_counts``) and subset seed of ``prot``:
    the networks trained together (``run_sweep``), then the linear heads (``probe_rows``)."""
    cache = {} if cache is None else cache
    counts = prot.label_counts if label_counts is None else label_counts
    settings = [(n, seed) for n in counts for seed in prot.seeds(n)]
    common = {"val_counts": val_counts, "cache": cache, "info": info}
    plan = [
        [
            job
            for seed in prot.seeds(n)
            for job in network_jobs(
                encoders, train, test, n=n, seed=seed, n_val=prot.val_size(n), methods=methods, **common
            )
        ]
        for n in counts
    ]
    rows = run_sweep([jobs for jobs in plan if jobs], prot, desc=desc) if any(plan) else []
    heads = [m for m in methods if m in LINEAR_HEADS]
    for n, seed in tqdm(settings, desc=f"{desc}: linear heads", disable=not heads or not progress_enabled()):
        rows += probe_rows(
            encoders, train, test, n=n, seed=seed, n_val=prot.val_size(n), pca=pca, methods=heads, **common
        )
    return rows


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
