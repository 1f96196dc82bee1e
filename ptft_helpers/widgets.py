"""Explorers for the two knobs that matter most: the latent size and the learning rate.

Each explorer is a thin ipywidgets layer over a plain function that returns the numbers
it plots, so the same results are available without widgets (and in tests):

* ``explore_latent_size(latent_dim)`` trains a small autoencoder on a fixed subset of the
  training images and returns its test reconstruction error and 8 reconstructions;
  ``latent_size_explorer()`` puts it behind a slider over powers of two.
* ``explore_learning_rate(lr)`` trains the same autoencoder briefly with one learning rate
  and returns every step's training loss and where (if at all) it diverged;
  ``learning_rate_explorer()`` puts it behind a log-scale slider from 1e-5 to 1.

Training reuses ``training.pretrain`` (Adam, MSE, batches of 128). Results are cached per
argument values for the life of the Python process, so going back to a value is instant.
"""

from __future__ import annotations

import base64
import inspect
import io
import math
import time
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .data import dataset_info, load
from .models import build_autoencoder
from .settings import pick
from .training import TrainingDiverged, check_learning_rate, evaluate, pretrain, reconstruct

LATENT_SIZES: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
N_SHOWN = 8  # test images shown beside their reconstructions
DIVERGENCE_FACTOR = 20.0
"""A run counts as diverged at the first step whose loss is NaN/infinite or more than this many
times the loss of step 1 (the untrained model's loss). Measured on this model: Adam at lr = 1e-2
peaks at about 8x and recovers, lr >= 1.8e-2 jumps by 100x or more at step 2."""

_latent_cache: dict[tuple, dict] = {}
_lr_cache: dict[tuple, dict] = {}


def clear_cache() -> None:
    """Forget every cached explorer result (the next call trains again)."""
    _latent_cache.clear()
    _lr_cache.clear()


def latent_size_settings() -> dict:
    """Defaults for ``explore_latent_size``: 20,000 images, 2 epochs, the pretraining recipe (Adam, lr 1e-3,
    batches of 128), scored on all 10,000 test images; in fast mode 2,000 images, 1 epoch, 1,000 test images."""
    return {"train_size": pick(20000, 2000), "epochs": pick(2, 1), "test_size": pick(10000, 1000),
            "lr": 1e-3, "batch_size": 128}


def learning_rate_settings() -> dict:
    """Defaults for ``explore_learning_rate``: 12,800 images, 2 epochs (200 steps of 128 images), latent size 32;
    in fast mode 1,280 images (20 steps)."""
    return {"train_size": pick(12800, 1280), "epochs": 2, "latent_dim": 32, "batch_size": 128}


def _check_size(value: int, label: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{label} must be a whole number between 1 and {most}, got {value!r}.")
    return value


def fixed_test_images(labels: torch.Tensor, n: int = N_SHOWN) -> torch.Tensor:
    """Indices of the first test image of each of the classes 0, 1, ..., n-1 (the same every time)."""
    return torch.stack([torch.nonzero(labels == c).flatten()[0] for c in range(n)])


def _fresh_autoencoder(latent_dim: int, seed: int):
    """The untrained MLP autoencoder for ``seed``: the same weights every time, global random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_autoencoder("mlp", latent_dim)


def explore_latent_size(
    latent_dim: int,
    *,
    train_size: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    dataset: str = "fashion-mnist",
    test_size: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Train an MLP autoencoder (784-256-``latent_dim``) briefly and measure how well it reconstructs.

    It trains with Adam on the first ``train_size`` training images for ``epochs`` epochs and
    scores the first ``test_size`` test images (defaults: ``latent_size_settings()``).
    Returns ``{"latent_dim", "test_mse" (mean squared error per pixel, pixels in [0, 1]),
    "originals" (uint8 (8, 28, 28): one test image of each of the classes 0-7),
    "reconstructions" (float (8, 28, 28) in [0, 1]), "train_loss" (last epoch's mean),
    "train_size", "epochs", "seconds" (training and scoring time), "cached"}``.
    Results are cached per argument values: asking again returns them at once (``cached=True``).
    """
    defaults = latent_size_settings()
    train_size = defaults["train_size"] if train_size is None else train_size
    epochs = defaults["epochs"] if epochs is None else epochs
    test_size = defaults["test_size"] if test_size is None else test_size
    lr = check_learning_rate(defaults["lr"] if lr is None else lr)
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    name = dataset_info(dataset).name
    key = (name, latent_dim, train_size, epochs, test_size, seed, lr, batch_size)
    if key in _latent_cache:
        return {**_latent_cache[key], "cached": True}
    model = _fresh_autoencoder(latent_dim, seed)  # checks latent_dim before any data is loaded
    train, test = load(name, "train"), load(name, "test")
    _check_size(train_size, "train_size", len(train))
    _check_size(test_size, "test_size", len(test))
    start = time.perf_counter()
    history = pretrain(model, train.images[:train_size], epochs=epochs, lr=lr, batch_size=batch_size,
                       seed=seed, device=device, progress=False)
    test_mse = evaluate(model, test.images[:test_size], device=device)["mse"]
    shown = test.images[fixed_test_images(test.labels)]
    result = {
        "latent_dim": latent_dim,
        "test_mse": float(test_mse),
        "originals": shown.clone(),
        "reconstructions": reconstruct(model, shown, device=device),
        "train_loss": history["train_loss"][-1],
        "train_size": train_size,
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
        "cached": False,
    }
    _latent_cache[key] = result
    return dict(result)


def find_divergence(step_loss: Sequence[float], factor: float = DIVERGENCE_FACTOR) -> int | None:
    """The first step (1-based) whose loss is NaN/infinite or above ``factor`` times step 1's loss; else None."""
    if not step_loss:
        return None
    limit = factor * step_loss[0] if math.isfinite(step_loss[0]) else -math.inf
    for step, loss in enumerate(step_loss, start=1):
        if not math.isfinite(loss) or loss > limit:
            return step
    return None


def explore_learning_rate(
    lr: float,
    *,
    train_size: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    dataset: str = "fashion-mnist",
    latent_dim: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Pretrain the autoencoder briefly with learning rate ``lr`` and record the loss of every step.

    Trains on the first ``train_size`` training images for ``epochs`` epochs with Adam
    (defaults: ``learning_rate_settings()``; the same seed, so the same start, for every rate).
    Divergence: the run counts as diverged at the first step whose loss is NaN or infinite,
    or more than ``DIVERGENCE_FACTOR`` (20) times the loss at step 1; the loss curve is cut
    there, as you would stop such a run. Returns ``{"lr", "step_loss" (list, up to the
    divergence step if any), "diverged_at" (step number or None), "final_loss" (mean loss
    of the last epoch, NaN if diverged), "steps" (steps planned), "batch_size", "seconds", "cached"}``.
    Raises ``ValueError`` if ``lr`` is not a positive, finite number.
    """
    lr = check_learning_rate(lr)
    defaults = learning_rate_settings()
    train_size = defaults["train_size"] if train_size is None else train_size
    epochs = defaults["epochs"] if epochs is None else epochs
    latent_dim = defaults["latent_dim"] if latent_dim is None else latent_dim
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    name = dataset_info(dataset).name
    key = (name, float(f"{lr:.12g}"), train_size, epochs, latent_dim, batch_size, seed)
    if key in _lr_cache:
        return {**_lr_cache[key], "step_loss": list(_lr_cache[key]["step_loss"]), "cached": True}
    model = _fresh_autoencoder(latent_dim, seed)  # checks latent_dim before any data is loaded
    train = load(name, "train")
    _check_size(train_size, "train_size", len(train))
    start = time.perf_counter()
    try:
        history = pretrain(model, train.images[:train_size], epochs=epochs, lr=lr, batch_size=batch_size,
                           seed=seed, device=device, progress=False)
        losses, final = history["step_loss"], history["train_loss"][-1]
    except TrainingDiverged as err:  # the loss became NaN/inf: pretrain stops after that epoch
        losses, final = err.history["step_loss"], math.nan
    diverged_at = find_divergence(losses)
    if diverged_at is not None:
        losses, final = losses[:diverged_at], math.nan
    result = {
        "lr": lr,
        "step_loss": [float(v) for v in losses],
        "diverged_at": diverged_at,
        "final_loss": float(final),
        "steps": epochs * -(-train_size // batch_size),
        "batch_size": batch_size,
        "seconds": time.perf_counter() - start,
        "cached": False,
    }
    _lr_cache[key] = result
    return {**result, "step_loss": list(result["step_loss"])}


# ----------------------------------------------------------------------------- figures


def _images(x: torch.Tensor) -> torch.Tensor:
    y = x.detach().cpu().float()
    return (y / 255.0 if x.dtype == torch.uint8 else y).reshape(len(y), 28, 28)


def plot_latent_sizes(results: Mapping[int, dict], current: int | None = None) -> Figure:
    """Originals above their reconstructions for ``current`` (default: the last result), beside
    the test error of every latent size in ``results`` ({latent_dim: explore_latent_size(...)})."""
    if not results:
        raise ValueError("No results to plot yet: call explore_latent_size first.")
    current = list(results)[-1] if current is None else current
    shown = results[current]
    fig = plt.figure(figsize=(12, 2.9), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[2, 1])
    axes = left.subplots(2, N_SHOWN)
    for r, (row_name, images) in enumerate((("original", shown["originals"]),
                                             ("reconstruction", shown["reconstructions"]))):
        for ax, image in zip(axes[r], _images(images)):
            ax.imshow(image.numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(row_name, fontsize=9)
    left.suptitle(f"Test images and their reconstructions, latent size {current} "
                  f"(test MSE {shown['test_mse']:.4f})", fontsize=11)
    ax = right.subplots()
    sizes = sorted(results)
    errors = [results[s]["test_mse"] for s in sizes]
    ax.plot(sizes, errors, "-o", color="tab:blue", ms=5, label="sizes tried")
    ax.plot([current], [shown["test_mse"]], "o", color="tab:red", ms=9, label=f"latent size {current}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("latent size (length of the code z)")
    ax.set_ylabel("test MSE per pixel")
    ax.set_title("Test error vs latent size", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_learning_rates(results: Mapping[float, dict], current: float | None = None) -> Figure:
    """Every tried rate's training-loss curve on a log scale ({lr: explore_learning_rate(...)}).

    A diverged run ends in a cross labelled "diverged at step N"; the dotted line is the
    divergence threshold (``DIVERGENCE_FACTOR`` times the loss at step 1).
    """
    if not results:
        raise ValueError("No results to plot yet: call explore_learning_rate first.")
    current = list(results)[-1] if current is None else current
    fig, ax = plt.subplots(figsize=(10, 4.2), layout="constrained")
    cmap = plt.get_cmap("viridis")
    finite = [v for r in results.values() for v in r["step_loss"] if math.isfinite(v)]
    starts = sorted(r["step_loss"][0] for r in results.values() if r["step_loss"] and math.isfinite(r["step_loss"][0]))
    threshold = DIVERGENCE_FACTOR * (starts[len(starts) // 2] if starts else 0.25)
    top = threshold * 10
    bottom = min(finite) / 1.5 if finite else threshold / 1000
    notes = []
    for lr in sorted(results):
        r = results[lr]
        losses, at = r["step_loss"], r["diverged_at"]
        color = cmap(min(max((math.log10(lr) + 5) / 5, 0.0), 1.0) * 0.9)
        width, alpha = (2.6, 1.0) if lr == current else (1.3, 0.75)
        label = f"lr = {lr:.2g}" + (f": diverged at step {at}" if at is not None else "")
        ok = losses[:-1] if at is not None else losses
        ax.plot(range(1, len(ok) + 1), ok, color=color, lw=width, alpha=alpha, label=label)
        if at is not None:
            bad = losses[-1]
            y = min(bad, top / 2) if math.isfinite(bad) else top / 2
            if ok:
                ax.plot([at - 1, at], [ok[-1], y], ":", color=color, lw=width, alpha=alpha)
            ax.plot([at], [y], "x", color=color, ms=10, mew=2.5, clip_on=False)
            notes.append(f"lr = {lr:.2g}: diverged at step {at}")
    ax.axhline(threshold, ls=":", color="gray", lw=1)
    ax.text(0.99, threshold * 1.15, f"divergence threshold: {DIVERGENCE_FACTOR:g}x the loss at step 1",
            transform=ax.get_yaxis_transform(), ha="right", va="bottom", fontsize=8, color="gray")
    if notes:
        ax.text(0.99, threshold / 1.4, "\n".join(notes), transform=ax.get_yaxis_transform(), ha="right",
                va="top", fontsize=9, color="tab:red", linespacing=1.3)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    batch = {r.get("batch_size") for r in results.values()}
    ax.set_xlabel(f"training step (one batch of {batch.pop()} images)" if len(batch) == 1 and None not in batch
                  else "training step (one batch of images)")
    ax.set_ylabel("training loss (MSE per pixel, log scale)")
    ax.set_title("Training loss for each learning rate tried (Adam)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# ----------------------------------------------------------------------------- widgets


def _figure_output(fig: Figure, alt: str) -> dict:
    """A figure as a notebook display_data output (PNG), for an ``Output`` widget; closes ``fig``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"output_type": "display_data", "data": {"image/png": png, "text/plain": alt}, "metadata": {}}


def _text_output(text: str) -> dict:
    return {"output_type": "display_data", "data": {"text/plain": text}, "metadata": {}}


class _Explorer(widgets.VBox):
    """A slider, a status line (which doubles as the progress indicator) and an output area."""

    css_class = "ptft-explorer"

    def __init__(self, slider: widgets.Widget, explore_kwargs: dict):
        inspect.signature(self._explore_function()).bind(slider.value, **explore_kwargs)  # TypeError for a typo
        self.slider = slider
        self.status = widgets.Label(value="")
        self.status.add_class("ptft-status")
        self.output = widgets.Output(layout=widgets.Layout(min_height="240px"))
        self.results: dict = {}
        self.error: Exception | None = None
        self.explore_kwargs = dict(explore_kwargs)
        super().__init__([widgets.HBox([self.slider, self.status]), self.output])
        self.add_class("ptft-explorer")
        self.add_class(self.css_class)
        self.slider.observe(self._on_change, names="value")
        self.update(self.slider.value)

    @property
    def widget(self) -> widgets.VBox:
        """The widget to display (the explorer itself)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}: {self.status.value or 'not run yet'}"

    def _repr_mimebundle_(self, **kwargs) -> dict | None:
        """The live widget, plus the current figure as a still image for viewers without widgets."""
        bundle = super()._repr_mimebundle_(**kwargs)
        figure = self.output.outputs[0]["data"].get("image/png") if self.output.outputs else None
        if bundle is not None and figure:
            bundle["image/png"] = figure
        return bundle

    def _on_change(self, change: dict) -> None:
        self.update(change["new"])

    def update(self, value) -> dict | None:
        """Train for ``value`` (or reuse the cache) and redraw; errors become a message, never a traceback."""
        self.status.value = f"⏳ {self._busy_text(value)}"
        self.slider.disabled = True
        try:
            result = self._explore(value)
            self.results[self._key(value)] = result
            self.output.outputs = (_figure_output(self._plot(self._key(value)), self._summary(result)),)
        except Exception as err:  # shown in the widget: a slider callback must never print a traceback
            self.error = err
            self.status.value = f"Could not train for {value:g}: {type(err).__name__}: {err}"
            self.output.outputs = (_text_output(f"{type(err).__name__}: {err}"),)
            return None
        finally:
            self.slider.disabled = False
        self.error = None
        how = "from the cache" if result["cached"] else f"trained in {result['seconds']:.1f} s"
        self.status.value = f"{self._summary(result)} ({how})"
        return result


class LatentSizeExplorer(_Explorer):
    """Slider over latent sizes: originals beside reconstructions, and test error vs latent size.

    ``.slider`` (SelectionSlider), ``.status`` (progress and result line), ``.output`` (the figure),
    ``.results`` ({latent_dim: explore_latent_size(...)}, in the order tried).
    """

    css_class = "ptft-latent-explorer"

    def __init__(self, sizes: Sequence[int] = LATENT_SIZES, value: int | None = None, **explore_kwargs):
        sizes = sorted({int(s) for s in sizes})
        if not sizes:
            raise ValueError("Give at least one latent size, e.g. sizes=(2, 4, 8, 16, 32).")
        value = (32 if 32 in sizes else sizes[len(sizes) // 2]) if value is None else value
        if value not in sizes:
            raise ValueError(f"The starting latent size {value!r} is not one of the sizes {sizes}.")
        slider = widgets.SelectionSlider(options=[(str(s), s) for s in sizes], value=value,
                                         description="latent size", continuous_update=False,
                                         style={"description_width": "initial"},
                                         layout=widgets.Layout(width="420px"))
        super().__init__(slider, explore_kwargs)

    def _key(self, value: int) -> int:
        return int(value)

    def _explore_function(self):
        return explore_latent_size

    def _explore(self, value: int) -> dict:
        return explore_latent_size(int(value), **self.explore_kwargs)

    def _plot(self, current: int) -> Figure:
        return plot_latent_sizes(self.results, current)

    def _busy_text(self, value: int) -> str:
        return f"training an autoencoder with latent size {value}…"

    def _summary(self, result: dict) -> str:
        return f"latent size {result['latent_dim']}: test MSE {result['test_mse']:.4f} per pixel"


class LearningRateExplorer(_Explorer):
    """Log-scale slider over learning rates (1e-5 to 1): each tried rate's training-loss curve.

    ``.slider`` (FloatLogSlider), ``.status``, ``.output`` (the figure), ``.results``
    ({lr: explore_learning_rate(...)}, in the order tried).
    """

    css_class = "ptft-lr-explorer"

    def __init__(self, value: float = 1e-3, **explore_kwargs):
        check_learning_rate(value)
        slider = widgets.FloatLogSlider(value=value, base=10, min=-5, max=0, step=0.25,
                                        description="learning rate", readout_format=".2g",
                                        continuous_update=False, style={"description_width": "initial"},
                                        layout=widgets.Layout(width="420px"))
        super().__init__(slider, explore_kwargs)

    def _key(self, value: float) -> float:
        return float(f"{value:.3g}")  # the slider's 10**x values, rounded as they are shown

    def _explore_function(self):
        return explore_learning_rate

    def _explore(self, value: float) -> dict:
        return explore_learning_rate(self._key(value), **self.explore_kwargs)

    def _plot(self, current: float) -> Figure:
        return plot_learning_rates(self.results, current)

    def _busy_text(self, value: float) -> str:
        return f"training with learning rate {value:.2g}…"

    def _summary(self, result: dict) -> str:
        if result["diverged_at"] is not None:
            return f"learning rate {result['lr']:.2g}: diverged at step {result['diverged_at']}"
        return f"learning rate {result['lr']:.2g}: final training loss {result['final_loss']:.4f}"


def latent_size_explorer(sizes: Sequence[int] = LATENT_SIZES, **kwargs) -> LatentSizeExplorer:
    """A slider over ``sizes`` (powers of two) that trains one autoencoder per size and plots the results.

    ``value`` picks the starting size (default 32); other keywords go to ``explore_latent_size``.
    Each new size takes a few seconds on a laptop CPU; sizes already tried come from the cache.
    """
    return LatentSizeExplorer(sizes, **kwargs)


def learning_rate_explorer(**kwargs) -> LearningRateExplorer:
    """A log-scale slider (1e-5 to 1) that trains briefly with each rate and draws all loss curves.

    ``value`` picks the starting rate (default 1e-3); other keywords go to ``explore_learning_rate``.
    """
    return LearningRateExplorer(**kwargs)
