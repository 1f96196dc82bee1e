"""Sliders for the two explorers: ``latent_size_explorer()`` and ``learning_rate_explorer()``.

Each is a thin ipywidgets shell: the slider calls a plain function of ``explorers`` and shows
the figure ``plots`` draws from the results so far. Results are cached per argument values
for the life of the Python process, so going back to a value is instant.
"""

from __future__ import annotations

import base64
import inspect
import io
from collections.abc import Callable, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .explorers import LATENT_SIZES, explore_latent_size, explore_learning_rate
from .plots import plot_latent_sizes, plot_learning_rates
from .training import check_learning_rate


def _figure_output(fig: Figure, alt: str) -> dict:
    """A figure as a notebook display_data output (PNG), for an ``Output`` widget; closes ``fig``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"output_type": "display_data", "data": {"image/png": png, "text/plain": alt}, "metadata": {}}


def _text_output(text: str) -> dict:
    return {"output_type": "display_data", "data": {"text/plain": text}, "metadata": {}}


class Explorer(widgets.VBox):
    """A slider, a status line (which doubles as the progress indicator) and an output area.

    ``.slider``, ``.status``, ``.output`` (the figure), ``.results`` ({key: result}, in the order tried),
    ``.error`` (the last update's exception, or None). ``explore(key)`` computes one result,
    ``plot(results, key)`` draws them, ``key(value)`` turns a slider value into a results key.
    """

    def __init__(
        self,
        slider: widgets.Widget,
        *,
        explore: Callable[[object], dict],
        plot: Callable[[dict, object], Figure],
        key: Callable[[object], object],
        busy: Callable[[object], str],
        summary: Callable[[dict], str],
        css_class: str,
    ):
        self.slider, self.explore, self.plot, self.key, self.busy, self.summary = (
            slider,
            explore,
            plot,
            key,
            busy,
            summary,
        )
        self.status = widgets.Label(value="")
        self.status.add_class("ptft-status")
        self.output = widgets.Output(layout=widgets.Layout(min_height="240px"))
        self.results: dict = {}
        self.error: Exception | None = None
        super().__init__([widgets.HBox([self.slider, self.status]), self.output])
        self.add_class("ptft-explorer")
        self.add_class(css_class)
        self.slider.observe(lambda change: self.update(change["new"]), names="value")
        self.update(self.slider.value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}: {self.status.value or 'not run yet'}"

    def _repr_mimebundle_(self, **kwargs) -> dict | None:
        """The live widget, plus the current figure as a still image for viewers without widgets."""
        bundle = super()._repr_mimebundle_(**kwargs)
        figure = self.output.outputs[0]["data"].get("image/png") if self.output.outputs else None
        if bundle is not None and figure:
            bundle["image/png"] = figure
        return bundle

    def update(self, value) -> dict | None:
        """Train for ``value`` (or reuse the cache) and redraw; errors become a message, never a traceback."""
        self.status.value = f"⏳ {self.busy(value)}"
        self.slider.disabled = True
        try:
            key = self.key(value)
            result = self.explore(key)
            self.results[key] = result
            self.output.outputs = (_figure_output(self.plot(self.results, key), self.summary(result)),)
        except Exception as err:  # shown in the widget: a slider callback must never print a traceback
            self.error = err
            self.status.value = f"Could not train for {value:g}: {type(err).__name__}: {err}"
            self.output.outputs = (_text_output(f"{type(err).__name__}: {err}"),)
            return None
        finally:
            self.slider.disabled = False
        self.error = None
        how = "from the cache" if result["cached"] else f"trained in {result['seconds']:.1f} s"
        self.status.value = f"{self.summary(result)} ({how})"
        return result


def latent_size_explorer(sizes: Sequence[int] = LATENT_SIZES, value: int | None = None, **explore_kwargs) -> Explorer:
    """A slider over latent ``sizes`` (powers of two): originals beside reconstructions, and test error vs size.

    ``value`` picks the starting size (default 32); other keywords go to ``explorers.explore_latent_size``.
    """
    sizes = sorted({int(s) for s in sizes})
    if not sizes:
        raise ValueError("Give at least one latent size, e.g. sizes=(2, 4, 8, 16, 32).")
    value = (32 if 32 in sizes else sizes[len(sizes) // 2]) if value is None else value
    if value not in sizes:
        raise ValueError(f"The starting latent size {value!r} is not one of the sizes {sizes}.")
    inspect.signature(explore_latent_size).bind(value, **explore_kwargs)  # TypeError for a typo, now
    slider = widgets.SelectionSlider(
        options=[(str(s), s) for s in sizes],
        value=value,
        description="latent size",
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="420px"),
    )
    return Explorer(
        slider,
        explore=lambda size: explore_latent_size(size, **explore_kwargs),
        plot=plot_latent_sizes,
        key=int,
        busy=lambda size: f"training an autoencoder with latent size {size}…",
        summary=lambda r: f"latent size {r['latent_dim']}: test MSE {r['test_mse']:.4f} per pixel",
        css_class="ptft-latent-explorer",
    )


def _lr_summary(result: dict) -> str:
    if result["diverged_at"] is not None:
        return f"learning rate {result['lr']:.2g}: diverged at step {result['diverged_at']}"
    return f"learning rate {result['lr']:.2g}: final training loss {result['final_loss']:.4f}"


def learning_rate_explorer(value: float = 1e-3, **explore_kwargs) -> Explorer:
    """A log-scale slider (1e-5 to 1) that trains briefly with each rate and draws every tried rate's loss curve.

    ``value`` picks the starting rate (default 1e-3); other keywords go to ``explorers.explore_learning_rate``.
    """
    check_learning_rate(value)
    inspect.signature(explore_learning_rate).bind(value, **explore_kwargs)  # TypeError for a typo, now
    slider = widgets.FloatLogSlider(
        value=value,
        base=10,
        min=-5,
        max=0,
        step=0.25,
        description="learning rate",
        readout_format=".2g",
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="420px"),
    )
    return Explorer(
        slider,
        explore=lambda lr: explore_learning_rate(lr, **explore_kwargs),
        plot=plot_learning_rates,
        key=lambda lr: float(f"{lr:.3g}"),  # the slider's 10**x values, rounded as they are shown
        busy=lambda lr: f"training with learning rate {lr:.2g}…",
        summary=_lr_summary,
        css_class="ptft-lr-explorer",
    )
