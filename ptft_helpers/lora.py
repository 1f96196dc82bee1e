"""LoRA (low-rank adaptation): written by hand, then the same through Hugging Face's ``peft``.

A LoRA layer keeps a linear layer's weight ``W`` (d_out, d_in) frozen and learns a low-rank change to it:

    y = W x + b + (alpha / r) B A x,    A: (r, d_in),  B: (d_out, r),

so an adapted matrix trains ``r (d_in + d_out)`` numbers instead of ``d_in d_out``. ``A`` starts as peft's default
does (Kaiming-uniform with ``a = sqrt(5)``, as ``nn.Linear`` initialises its weight) and ``B`` at zero, so at the
start the layer computes exactly what the frozen one does. ``merged()`` folds the change into one plain linear layer,
``W + (alpha / r) B A``: the same outputs, no extra cost at inference.

Layers are chosen by name the way peft's ``target_modules`` chooses them: a linear layer is adapted when its name
(as in ``model.named_modules()``) is the target or ends with ``"." + target``; so ``"q_proj"`` adapts every layer's
query projection.

The peft path: ``peft_lora`` wraps a model in a ``PeftModel`` (``LoraConfig`` + ``get_peft_model``),
``copy_lora_to_peft`` gives its LoRA layers a hand-made model's ``A`` and ``B`` (so that a notebook can assert equal
outputs), ``save_adapter`` writes the adapter alone (safetensors) and ``load_adapters`` puts several saved adapters
on one frozen base model, served in turn with ``set_adapter``. Nothing is fetched from a hub: the base model is built
by the caller (from a config, or from our own checkpoint), and adapters are saved to and loaded from local folders.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # the file peft's save_pretrained writes an adapter's weights to


def check_rank_alpha(rank: object, alpha: object) -> tuple[int, float]:
    """Return ``(rank, alpha)`` when the rank is a whole number >= 1 and alpha a positive number; else a one-line
    ``ValueError`` that says what was wrong and how to fix it."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be a whole number >= 1 (such as 4 or 8), got {rank!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"LoRA alpha must be a positive number (often the rank, or twice it), got {alpha!r}.")
    return rank, float(alpha)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus the trainable low-rank change ``(alpha / rank) B A``: (..., d_in) -> (..., d_out).

    ``base`` is kept (not copied) and frozen. ``A`` (rank, d_in) starts Kaiming-uniform like peft's, drawn with
    ``generator`` when given; ``B`` (d_out, rank) starts at zero. The forward pass computes what peft's LoRA layer
    computes, in the same order: ``base(x) + B(A(x)) * scaling``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, *, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear adapts an nn.Linear layer, got {type(base).__name__}.")
        self.rank, self.alpha = check_rank_alpha(rank, alpha)
        self.base = base.requires_grad_(False)
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.empty(rank, base.in_features, **like))  # (r, d_in)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, **like))  # (d_out, r)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.A), self.B) * self.scaling  # (..., d_out)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A new plain ``nn.Linear``, weight ``W + (alpha / rank) B A``, the same bias; frozen, like the base."""
        base = self.base
        layer = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        layer = layer.to(device=base.weight.device, dtype=base.weight.dtype)
        layer.weight.copy_(base.weight + (self.B @ self.A) * self.scaling)
        if base.bias is not None:
            layer.bias.copy_(base.bias)
        return layer.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def matches(name: str, target: str) -> bool:
    """Does the module called ``name`` match ``target`` the way peft's ``target_modules`` matches a list entry?"""
    return name == target or name.endswith("." + target)


def linear_name_patterns(model: nn.Module) -> list[str]:
    """The last parts of the names of the model's linear layers, each once, in order: what a target can be."""
    names = [name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return list(dict.fromkeys(names))


def _target_names(model: nn.Module, targets: Sequence[str], what: str) -> list[str]:
    """The names of the linear layers that ``targets`` choose; a one-line ``ValueError`` for a target with none."""
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(
            f"{what} must be a non-empty list of layer names, such as ['q_proj', 'v_proj']: got {targets!r}."
        )
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for target in targets:
        if not any(matches(name, target) for name in linear):
            raise ValueError(
                f"No linear layer of this {type(model).__name__} is named {target!r}. Its linear layers are named: "
                f"{', '.join(linear_name_patterns(model)) or 'none'}. Choose {what} from those."
            )
    return [name for name in linear if any(matches(name, target) for target in targets)]


def add_lora(
    model: nn.Module,
    target_names: Sequence[str],
    rank: int,
    alpha: float,
    *,
    keep_trainable: Sequence[str] = (),
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Adapt ``model`` in place, by hand, and return it: every linear layer that ``target_names`` choose (as peft's
    ``target_modules`` does) becomes a ``LoRALinear``; every other parameter is frozen, except those of the modules
    that ``keep_trainable`` chooses by the same rule (a new task's head, say, as peft's ``modules_to_save``).

    A target that matches no linear layer is a one-line ``ValueError`` naming the layers there are.
    """
    check_rank_alpha(rank, alpha)
    chosen = _target_names(model, target_names, "target_names")
    if keep_trainable:
        _module_names(model, keep_trainable)
    model.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, generator=generator))
    for name, module in model.named_modules():
        if any(matches(name, keep) for keep in keep_trainable):
            module.requires_grad_(True)
    return model


def _module_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The names of the modules that ``names`` choose; a one-line ``ValueError`` for a name that chooses none."""
    if isinstance(names, str):
        raise ValueError(f"Give a list of module names, such as ['head'], not the string {names!r}.")
    present = [name for name, _ in model.named_modules() if name]
    for wanted in names:
        if not any(matches(name, wanted) for name in present):
            top = ", ".join(name for name, _ in model.named_children())
            raise ValueError(f"No module of this {type(model).__name__} is named {wanted!r}; its parts are: {top}.")
    return [name for name in present if any(matches(name, wanted) for wanted in names)]


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{name: layer} for every hand-made ``LoRALinear`` in ``model``."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``LoRALinear`` in ``model`` by its ``merged()`` plain linear layer; return the model."""
    for name, layer in lora_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.merged())
    return model


def trainable_count(model: nn.Module) -> int:
    """How many numbers an optimizer would train: the parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's state tensors (Adam: two moments per trained number, and a step count).

    The state is made at the first step: 0 before it.
    """
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )


# ----------------------------------------------------------------------------- the same through peft


def peft_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    target_modules: Sequence[str],
    modules_to_save: Sequence[str] = ("classifier",),
    adapter_name: str = "default",
):
    """Wrap ``model`` (changed in place: copy it first to keep it) in a ``peft.PeftModel`` with one LoRA adapter.

    ``LoraConfig(r=rank, lora_alpha=alpha, target_modules=..., modules_to_save=...)`` with no dropout and peft's
    default initialisation (A Kaiming-uniform, B zero). ``modules_to_save`` (a new task's head) are trained in full
    and saved with the adapter. A rank below 1 or a name that matches nothing is a one-line ``ValueError`` raised
    before peft sees it, naming the layers there are (peft's own error says only that the target was not found).
    """
    from peft import LoraConfig, get_peft_model

    check_rank_alpha(rank, alpha)
    _target_names(model, target_modules, "target_modules")
    if modules_to_save:
        _module_names(model, modules_to_save)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules),
        modules_to_save=list(modules_to_save) or None,
    )
    with _quiet_peft():
        return get_peft_model(model, config, adapter_name=adapter_name)


@contextlib.contextmanager
def _quiet_peft():
    """Hide the one warning that peft 0.21 causes in transformers 5 (it asks is_gradient_checkpointing, which
    transformers calls deprecated): nothing a user of peft can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def hf_vit_name(name: str) -> str:
    """The name in Hugging Face's ``ViTForImageClassification`` of a module of our ``vit.ViTClassifier``: the
    encoder is called ``vit`` there, and the rest is named alike (``encoder.layers.0.attention.q_proj`` ->
    ``vit.layers.0.attention.q_proj``), and the head ``head`` is ``classifier``. Pass it as ``copy_lora_to_peft``'s
    ``rename``."""
    if name == "head" or name.startswith("head."):
        return "classifier" + name.removeprefix("head")
    return "vit." + name.removeprefix("encoder.") if name.startswith("encoder.") else name


def peft_inner(peft_model) -> nn.Module:
    """The model that a ``PeftModel`` wraps, with its LoRA layers in place (names as in the original model)."""
    return peft_model.base_model.model


@torch.no_grad()
def copy_lora_to_peft(
    model: nn.Module,
    peft_model,
    *,
    rename: Callable[[str], str] | Mapping[str, str] | None = None,
    modules: Sequence[str] = (),
    adapter_name: str = "default",
) -> int:
    """Give ``peft_model``'s LoRA layers the ``A`` and ``B`` of ``model``'s hand-made ``LoRALinear`` layers, and its
    ``modules_to_save`` copies (of the ``modules`` named here, such as ``["classifier"]``) the weights of ``model``'s
    modules of those names; return how many LoRA layers were copied.

    The names are those of ``model.named_modules()``; ``rename`` maps them to the peft model's (a function or a
    dict) when the two models name their layers differently. A layer missing on either side, a rank or scaling that
    differs, is a one-line ``ValueError``.
    """
    mapped = rename.get if isinstance(rename, Mapping) else (rename or (lambda name: name))
    inner, hand = peft_inner(peft_model), lora_layers(model)
    if not hand:
        raise ValueError("The model has no hand-made LoRALinear layers to copy: call add_lora on it first.")
    for name, layer in hand.items():
        target = _submodule(inner, mapped(name) or name, name)
        if not hasattr(target, "lora_A") or adapter_name not in target.lora_A:
            raise ValueError(f"The peft model's {mapped(name)!r} has no LoRA adapter {adapter_name!r}.")
        if target.r[adapter_name] != layer.rank or target.scaling[adapter_name] != layer.scaling:
            raise ValueError(
                f"{name!r}: rank {layer.rank}, scaling {layer.scaling:g} by hand, but rank "
                f"{target.r[adapter_name]}, scaling {target.scaling[adapter_name]:g} in peft: build both alike."
            )
        target.lora_A[adapter_name].weight.copy_(layer.A)
        target.lora_B[adapter_name].weight.copy_(layer.B)
    for name in modules:
        target = _submodule(inner, mapped(name) or name, name)
        saved = getattr(target, "modules_to_save", None)
        if saved is None or adapter_name not in saved:
            raise ValueError(f"The peft model's {mapped(name)!r} is not in its modules_to_save for {adapter_name!r}.")
        saved[adapter_name].load_state_dict(model.get_submodule(name).state_dict())
    return len(hand)


def _submodule(model: nn.Module, name: str, original: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"The peft model has no module {name!r} (for {original!r}): pass rename=.") from None


def file_sizes(folder: str | Path) -> dict[str, int]:
    """{file name: bytes} for the files in ``folder`` (not its subfolders), sorted by name."""
    return {p.name: p.stat().st_size for p in sorted(Path(folder).iterdir()) if p.is_file()}


class SavedAdapter(NamedTuple):
    """Where ``save_adapter`` wrote an adapter (pass it to ``load_adapters``), and its files' sizes in bytes."""

    folder: Path
    sizes: dict[str, int]


def save_adapter(peft_model, folder: str | Path, adapter_name: str = "default") -> SavedAdapter:
    """Save one adapter alone (its LoRA ``A`` and ``B`` and its ``modules_to_save``, not the frozen base) with
    ``save_pretrained`` in safetensors, under ``folder``; return where and the sizes of its files.

    peft writes the adapter called "default" in ``folder`` itself and any other in ``folder / adapter_name``.
    """
    peft_model.save_pretrained(str(folder), selected_adapters=[adapter_name], safe_serialization=True)
    written = Path(folder) if adapter_name == "default" else Path(folder) / adapter_name
    if not (written / ADAPTER_WEIGHTS).is_file():
        raise RuntimeError(f"peft's save_pretrained wrote no {ADAPTER_WEIGHTS} in {written}.")
    return SavedAdapter(written, file_sizes(written))


def load_adapters(base: nn.Module, folders: Mapping[str, str | Path | SavedAdapter]):
    """Put the adapters saved in ``folders`` ({adapter name: its folder, or ``save_adapter``'s result}) on the one
    frozen ``base`` (changed in place); return the ``PeftModel`` in eval mode, the first adapter active and nothing
    trainable. Switch with ``model.set_adapter(name, inference_mode=True)`` (without ``inference_mode``, peft makes
    the adapter it switches to trainable).

    ``base`` must be the model that the adapters were trained on, built again (its weights are not in the adapter).
    """
    from peft import PeftModel

    if not folders:
        raise ValueError("Give at least one adapter: {name: folder it was saved to}.")
    folders = {name: getattr(folder, "folder", folder) for name, folder in folders.items()}  # a SavedAdapter too
    for name, folder in folders.items():
        if not (Path(folder) / ADAPTER_WEIGHTS).is_file():
            raise ValueError(f"No saved adapter in {folder} (for {name!r}): save one there with save_adapter.")
    (first, first_folder), *rest = folders.items()
    with _quiet_peft():
        model = PeftModel.from_pretrained(base, str(first_folder), adapter_name=first)
        for name, folder in rest:
            model.load_adapter(str(folder), adapter_name=name)
    model.set_adapter(first, inference_mode=True)
    return model.eval()
