"""A vision transformer pretrained as a masked autoencoder (MAE), written by hand, and its Hugging Face twin.

The pieces (notebook 08 teaches them one at a time):

- ``patchify`` cuts a 28 x 28 image into a grid of square patches, row by row; ``unpatchify`` puts them back.
- ``random_masking`` keeps a random ``1 - mask_ratio`` of the patches per image with MAE's trick: sort uniform noise,
  keep the patches with the smallest noise; ``ids_restore`` (the inverse permutation) puts them back in place.
- ``ViTEncoder``: patches -> linear embedding + fixed 2-D sin-cos position embeddings, a CLS token in front,
  pre-norm transformer blocks (attention through ``F.scaled_dot_product_attention``), a final LayerNorm.
- ``MaskedAutoencoder``: the encoder sees only the visible patches; a light decoder fills mask tokens in at the
  masked places and predicts every patch's pixels; the loss is the MSE on the masked patches only (on per-patch
  normalised pixels with ``norm_pix_loss``), the source text's reconstruction error.
- ``ViTClassifier``: a copy of an encoder (pretrained, or fresh: scratch) and a linear head (Hugging Face's
  ``classifier``).

Every layer and parameter is laid out, and named, as in ``transformers``' ViTMAE and ViT, so that ``to_hf`` and
``to_hf_classifier`` copy the weights one to one (only the patch embedding is reshaped: ours is a ``Linear`` on
patchified pixels, theirs the equivalent ``Conv2d``). LoRA target names (``q_proj``, ``v_proj``, ...) are the same in
both. Nothing is downloaded: the Hugging Face models are built from configs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .models import Classifier
from .validation import whole_number

if TYPE_CHECKING:  # transformers is imported when a Hugging Face model is built, not with this module
    import transformers

LAYER_NORM_EPS = 1e-6  # MAE's own (timm's ViT); Hugging Face's ViTMAEConfig gets it through hf_config
MAX_PARAMETERS = 50_000_000  # a bound on a config's size (ViT-Base has 86 M; ours 0.35 M)
SIZES = ("image_size", "patch_size", "width", "depth", "heads", "decoder_width", "decoder_depth", "decoder_heads")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """The sizes of the MAE's encoder and decoder, its mask ratio and its loss. Checked on construction: a bad
    value is a one-line ``ValueError``. The defaults are the series' MAE: patch 7, so 16 patches (patch 4's 49 were
    about 8 times slower per image), and the depth that ``benchmarks/mae_recipe_search.py`` chose on validation
    (``results/mae_recipe_search.csv``: 2 blocks probed best, though every recipe lay within noise of the others)."""

    image_size: int = 28
    patch_size: int = 7  # 4 x 4 = 16 patches of 49 pixels
    width: int = 128  # the encoder's token length
    depth: int = 2  # encoder blocks (4 and 2 were searched; 2 won on validation)
    heads: int = 4
    mlp_ratio: float = 2.0  # each block's MLP: width -> mlp_ratio * width -> width (ViT-Base: 4; 2 is 1.3x faster)
    decoder_width: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False  # targets: each patch's pixels normalised to mean 0, variance 1

    def __post_init__(self) -> None:
        for name in SIZES:
            whole_number(getattr(self, name), f"ViTConfig's {name}", 1)
        if self.image_size % self.patch_size:
            divisors = [d for d in range(1, self.image_size + 1) if self.image_size % d == 0]
            raise ValueError(
                f"ViTConfig's patch_size {self.patch_size} does not divide image_size {self.image_size}: "
                f"choose one of {divisors}."
            )
        for width, heads in (("width", "heads"), ("decoder_width", "decoder_heads")):
            if getattr(self, width) % getattr(self, heads) or getattr(self, width) % 4:
                raise ValueError(
                    f"ViTConfig's {width} {getattr(self, width)} must be a multiple of 4 (the 2-D sin-cos position "
                    f"embeddings) and of {heads} {getattr(self, heads)} (each head gets {width} / {heads} numbers)."
                )
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.25 <= ratio <= 16:
            raise ValueError(f"ViTConfig's mlp_ratio must be a number from 0.25 to 16 (ViT's: 4.0), got {ratio!r}.")
        check_mask_ratio(self.mask_ratio, self.num_patches)
        if self.parameter_estimate() > MAX_PARAMETERS:
            raise ValueError(
                f"ViTConfig's sizes give about {self.parameter_estimate():,} parameters, more than this series trains "
                f"({MAX_PARAMETERS:,}): choose a smaller width, depth or patch."
            )
        if not isinstance(self.norm_pix_loss, bool):
            raise ValueError(f"ViTConfig's norm_pix_loss must be True or False, got {self.norm_pix_loss!r}.")

    def parameter_estimate(self) -> int:
        """About how many numbers the MAE holds (its linear layers and position tables), from the sizes alone: checked
        before anything is built, so that a crafted checkpoint cannot ask for more memory than the machine has."""
        block = (4 + 2 * self.mlp_ratio) * self.width**2
        decoder_block = (4 + 2 * self.mlp_ratio) * self.decoder_width**2
        patch = self.patch_size**2
        ends = patch * self.width + self.width * self.decoder_width + self.decoder_width * patch
        positions = (self.num_patches + 1) * 2 * self.width
        return int(self.depth * block + self.decoder_depth * decoder_block + ends + positions)

    @property
    def grid(self) -> int:
        """Patches along each side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def kept(self) -> int:
        """Patches the encoder sees per image: ``int(num_patches * (1 - mask_ratio))``, rounded as Hugging Face."""
        return int(self.num_patches * (1 - self.mask_ratio))

    def to_dict(self) -> dict:
        """The config as a checkpoint stores it (``arch`` "vit" first, for ``checkpoints.model_from_config``)."""
        return {"arch": "vit", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, config: dict) -> ViTConfig:
        """Inverse of ``to_dict``."""
        return cls(**{k: v for k, v in config.items() if k != "arch"})


def check_mask_ratio(mask_ratio: float, num_patches: int) -> float:
    """``mask_ratio`` if it lies strictly between 0 and 1 and keeps at least one of ``num_patches``; else a
    one-line ``ValueError``."""
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, numbers.Real) or not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio must lie strictly between 0 and 1 (MAE masks 0.75), got {mask_ratio!r}.")
    if int(num_patches * (1 - mask_ratio)) < 1:
        raise ValueError(
            f"mask_ratio {mask_ratio} keeps no patch of {num_patches}: the encoder would see nothing; lower it."
        )
    return float(mask_ratio)


def as_images(images: torch.Tensor) -> torch.Tensor:
    """Square one-channel images as (B, 1, S, S), from (B, 1, S, S), (B, S, S) or flat rows (B, S * S); bytes (uint8,
    as ``data.load`` gives them) become floats in [0, 1]."""
    if images.dtype == torch.uint8:
        images = images.to(torch.get_default_dtype()) / 255
    if images.dim() == 2:
        side = math.isqrt(images.shape[1])
        if side * side == images.shape[1]:
            return images.reshape(len(images), 1, side, side)
    elif images.dim() == 3 and images.shape[1] == images.shape[2]:
        return images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[1] == 1 and images.shape[2] == images.shape[3]:
        return images
    raise ValueError(
        f"Expected square one-channel images (B, 1, 28, 28), (B, 28, 28) or (B, 784), got shape {tuple(images.shape)}."
    )


def patchify(images: torch.Tensor, patch_size: int = 7) -> torch.Tensor:
    """(B, 1, 28, 28), (B, 28, 28) or (B, 784) -> (B, L, p * p): patches row by row, each one's pixels row by row
    (Hugging Face's ``ViTMAEForPreTraining.patchify`` order)."""
    images = as_images(images)
    batch, side = len(images), images.shape[-1]
    if side % patch_size:
        raise ValueError(f"patch_size {patch_size} does not divide the image side {side}: choose a divisor of {side}.")
    grid = side // patch_size
    patches = images.reshape(batch, grid, patch_size, grid, patch_size)  # (B, rows, p, cols, p)
    patches = patches.permute(0, 1, 3, 2, 4)  # (B, rows, cols, p, p)
    return patches.reshape(batch, grid * grid, patch_size * patch_size)  # (B, L, p * p)


def unpatchify(patches: torch.Tensor) -> torch.Tensor:
    """(B, L, p * p) -> (B, 1, S, S), the inverse of ``patchify`` (L and p * p must be squares)."""
    batch, count, size = patches.shape
    grid, patch_size = math.isqrt(count), math.isqrt(size)
    if grid * grid != count or patch_size * patch_size != size:
        raise ValueError(f"Expected (B, L, p * p) with L and p * p squares, got shape {tuple(patches.shape)}.")
    images = patches.reshape(batch, grid, grid, patch_size, patch_size)  # (B, rows, cols, p, p)
    images = images.permute(0, 1, 3, 2, 4)  # (B, rows, p, cols, p)
    return images.reshape(batch, 1, grid * patch_size, grid * patch_size)  # (B, 1, S, S)


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings, (1 + grid * grid, dim): row 0 (the CLS token's) is zero; patch (r, c)
    gets [sin(c w), cos(c w), sin(r w), cos(r w)] with the dim / 4 frequencies w = 10000 ** (-k / (dim / 4)):
    MAE's layout, which Hugging Face's ViTMAE reproduces. Computed in float64, returned in float32."""
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim / 4,)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    by_col = cols.flatten().outer(omega)  # (L, dim / 4)
    by_row = rows.flatten().outer(omega)  # (L, dim / 4)
    table = torch.cat([by_col.sin(), by_col.cos(), by_row.sin(), by_row.cos()], dim=1)  # (L, dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()  # (1 + L, dim)


def random_masking(
    tokens: torch.Tensor,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random ``int(L * (1 - mask_ratio))`` of each image's L tokens, by sorting uniform ``noise`` (B, L)
    (drawn on the CPU with ``generator`` when not given, so seeds repeat on any device).

    Returns ``kept`` (B, K, D), the visible tokens in the shuffled order; ``mask`` (B, L), 1 where a patch is
    masked, in patch order; ``ids_restore`` (B, L), where each patch went in the shuffle (the shuffle's inverse).
    """
    batch, length, dim = tokens.shape
    keep = int(length * (1 - check_mask_ratio(mask_ratio, length)))
    if noise is None:
        noise = torch.rand(batch, length, generator=generator).to(tokens.device)
    elif noise.shape != (batch, length):
        raise ValueError(f"noise must have shape (B, L) = {(batch, length)}, got {tuple(noise.shape)}.")
    ids_shuffle = torch.argsort(noise, dim=1)  # (B, L): patches by rising noise; the first `keep` stay visible
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, L): the inverse permutation
    kept = torch.gather(tokens, 1, ids_shuffle[:, :keep, None].expand(-1, -1, dim))  # (B, K, D)
    dtype = torch.promote_types(tokens.dtype, torch.float32)  # at least float32: a bfloat16 sum would round
    mask = torch.ones(batch, length, dtype=dtype, device=tokens.device)  # (B, L) in the shuffled order
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore  # mask back in patch order


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(d)) v per head, through ``F.scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)  # (B, T, D) -> (B, T, D)
        self.k_proj = nn.Linear(width, width)  # (B, T, D) -> (B, T, D)
        self.v_proj = nn.Linear(width, width)  # (B, T, D) -> (B, T, D)
        self.o_proj = nn.Linear(width, width)  # (B, T, D) -> (B, T, D): the heads mixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def by_head(t: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, heads, T, D / heads)
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = by_head(self.q_proj(x)), by_head(self.k_proj(x)), by_head(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, D / heads)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, width))  # (B, T, D)


class MLP(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)  # (B, T, D) -> (B, T, hidden)
        self.fc2 = nn.Linear(hidden, width)  # (B, T, hidden) -> (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), then + mlp(norm(.)). (B, T, D) -> (B, T, D)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attention = Attention(width, heads)
        self.layernorm_after = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.mlp(self.layernorm_after(x))


def _init_weights(module: nn.Module) -> None:
    """MAE's initialisation: Xavier-uniform linear weights (the patch embedding too), zero biases, LayerNorms at
    1 and 0; the CLS and mask tokens are drawn by their owners (normal, std 0.02)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class ViTEncoder(nn.Module):
    """Images -> tokens: a CLS token and one token per patch, (B, 1 + L, width), after the final LayerNorm."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.vit_config = config
        self.latent_dim = config.width  # each token's length (models.Classifier sizes its head by it)
        self.patch_embed = nn.Linear(config.patch_size**2, config.width)  # (B, L, p * p) -> (B, L, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))  # (1, 1, width)
        pos = sincos_position_embedding(config.grid, config.width)[None]  # (1, 1 + L, width), fixed
        self.register_buffer("pos_embed", pos, persistent=False)
        self.layers = nn.ModuleList(Block(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.layernorm = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        _init_weights(self)
        nn.init.normal_(self.cls_token, std=0.02)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens with their positions, (B, L, width)."""
        images, size = as_images(images), self.vit_config.image_size
        if images.shape[-1] != size:
            raise ValueError(f"This ViT reads {size} x {size} images, got {images.shape[-1]} x {images.shape[-1]}.")
        return self.patch_embed(patchify(images, self.vit_config.patch_size)) + self.pos_embed[:, 1:]

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """Put the CLS token in front of ``tokens`` (B, T, width), run the blocks: (B, 1 + T, width)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(tokens), -1, -1)  # (B, 1, width)
        x = torch.cat([cls, tokens], dim=1)  # (B, 1 + T, width)
        for layer in self.layers:
            x = layer(x)
        return self.layernorm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Every patch, no masking: (B, 1 + L, width), the CLS token first."""
        return self.transform(self.embed(images))


class MAEDecoder(nn.Module):
    """Encoded visible tokens + mask tokens at the masked places -> each patch's predicted pixels, (B, L, p * p)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        width = config.decoder_width
        self.decoder_embed = nn.Linear(config.width, width)  # (B, 1 + K, width) -> (B, 1 + K, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))  # (1, 1, decoder_width), learnt
        pos = sincos_position_embedding(config.grid, width)[None]  # (1, 1 + L, decoder_width), fixed
        self.register_buffer("decoder_pos_embed", pos, persistent=False)
        blocks = (Block(width, config.decoder_heads, config.mlp_ratio) for _ in range(config.decoder_depth))
        self.decoder_layers = nn.ModuleList(blocks)
        self.decoder_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(width, config.patch_size**2)  # (B, L, decoder_width) -> (B, L, p * p)
        _init_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)  # (B, 1 + K, decoder_width)
        batch, length = ids_restore.shape
        masks = self.mask_token.expand(batch, length + 1 - x.shape[1], -1)  # (B, L - K, decoder_width)
        shuffled = torch.cat([x[:, 1:], masks], dim=1)  # (B, L, decoder_width): visible first, as shuffled
        restored = torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))  # patch order
        x = torch.cat([x[:, :1], restored], dim=1) + self.decoder_pos_embed  # (B, 1 + L, decoder_width)
        for layer in self.decoder_layers:
            x = layer(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # (B, L, p * p), the CLS token dropped


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool) -> torch.Tensor:
    """Mean over the masked patches of each patch's mean squared error; ``pred`` and ``target`` (B, L, p * p),
    ``mask`` (B, L). With ``norm_pix_loss`` each target patch is normalised by its mean and (unbiased) variance."""
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
    return (per_patch * mask).sum() / mask.sum()


class MaskedAutoencoder(nn.Module):
    """The by-hand MAE. ``vit_config`` is its ``ViTConfig``; ``config`` the dict a checkpoint stores."""

    def __init__(self, config: ViTConfig | None = None):
        super().__init__()
        self.vit_config = config or ViTConfig()
        self.config = self.vit_config.to_dict()
        self.encoder = ViTEncoder(self.vit_config)
        self.decoder = MAEDecoder(self.vit_config)

    def forward(
        self, images: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, 1, 28, 28) or (B, 784) -> (loss, pred (B, L, p * p), mask (B, L), 1 = masked). ``noise``
        (B, L) fixes the masks (as Hugging Face's ``noise=``); else they are drawn with ``generator``."""
        tokens = self.encoder.embed(images)  # (B, L, width), positions added
        kept, mask, ids_restore = random_masking(tokens, self.vit_config.mask_ratio, noise, generator)  # (B, K, .)
        latent = self.encoder.transform(kept)  # (B, 1 + K, width)
        pred = self.decoder(latent, ids_restore)  # (B, L, p * p)
        target = patchify(images, self.vit_config.patch_size)  # (B, L, p * p)
        return masked_mse(pred, target, mask, self.vit_config.norm_pix_loss), pred, mask

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Every patch, no masking: (B, 1 + L, width), the CLS token first."""
        return self.encoder(images)

    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images with the masked patches filled in by the prediction, the masked input with masked patches at 0),
        both (B, 1, 28, 28). With ``norm_pix_loss`` the prediction is put back on each patch's own mean and
        standard deviation (MAE's pictures do the same)."""
        _, pred, mask = self(images, noise, generator)
        target = patchify(images, self.vit_config.patch_size)  # (B, L, p * p)
        if self.vit_config.norm_pix_loss:
            pred = pred * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
        masked = mask[..., None]  # (B, L, 1)
        return unpatchify(target * (1 - masked) + pred * masked), unpatchify(target * (1 - masked))


class ViTClassifier(Classifier):
    """A copy of ``encoder`` (or a fresh ``ViTEncoder(config)``: scratch) and a linear ``head`` on the pooled tokens:
    the CLS token (``pooling="cls"``, as Hugging Face's ``ViTForImageClassification``, which ``to_hf_classifier``
    builds) or the mean of the patch tokens (``"mean"``). The copy: fine-tuning never changes the pretrained model
    it came from. A ``models.Classifier``: ``freeze_encoder()`` (a linear probe), ``unfreeze_encoder()``, and
    ``training.finetune`` and ``training.evaluate`` take it."""

    def __init__(
        self,
        config: ViTConfig | None = None,
        num_classes: int = 10,
        encoder: ViTEncoder | None = None,
        pooling: str = "cls",
    ):
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}.")
        if encoder is not None and config not in (None, encoder.vit_config):
            raise ValueError("Give the encoder or a config, not both with different sizes: the encoder has its own.")
        encoder = copy.deepcopy(encoder) if encoder is not None else ViTEncoder(config or ViTConfig())
        super().__init__(encoder, num_classes)
        self.vit_config, self.pooling = self.encoder.vit_config, pooling
        _init_weights(self.head)  # (B, width) -> (B, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(images)  # (B, 1 + L, width)
        pooled = tokens[:, 0] if self.pooling == "cls" else tokens[:, 1:].mean(dim=1)  # (B, width)
        return self.head(pooled)  # (B, classes)


def _hf_encoder_sizes(config: ViTConfig) -> dict:
    """The encoder's sizes in Hugging Face's words (ViTMAEConfig and ViTConfig share them)."""
    return {
        "hidden_size": config.width,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.heads,
        "intermediate_size": int(config.width * config.mlp_ratio),
        "hidden_act": "gelu",  # exact GELU, as F.gelu
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": LAYER_NORM_EPS,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": 1,
        "qkv_bias": True,
    }


def hf_config(config: ViTConfig) -> transformers.ViTMAEConfig:
    """The ``transformers.ViTMAEConfig`` of the same MAE."""
    from transformers import ViTMAEConfig

    return ViTMAEConfig(
        **_hf_encoder_sizes(config),
        decoder_hidden_size=config.decoder_width,
        decoder_num_hidden_layers=config.decoder_depth,
        decoder_num_attention_heads=config.decoder_heads,
        decoder_intermediate_size=int(config.decoder_width * config.mlp_ratio),
        mask_ratio=config.mask_ratio,
        norm_pix_loss=config.norm_pix_loss,
    )


def hf_classifier_config(config: ViTConfig, num_classes: int = 10) -> transformers.ViTConfig:
    """The ``transformers.ViTConfig`` of a ``ViTForImageClassification`` with this encoder and ``num_classes``."""
    from transformers import ViTConfig as HFViTConfig

    return HFViTConfig(**_hf_encoder_sizes(config), num_labels=num_classes)


def _hf_encoder_state(encoder: ViTEncoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under Hugging Face's names (ViTMAEModel's and ViTModel's, without the ``vit.``)."""
    width, patch = encoder.vit_config.width, encoder.vit_config.patch_size
    embeddings = {
        "embeddings.cls_token": encoder.cls_token,
        "embeddings.position_embeddings": encoder.pos_embed,
        # a Linear on row-major patch pixels is a Conv2d with kernel = stride = p: (width, p * p) -> (width, 1, p, p)
        "embeddings.patch_embeddings.projection.weight": encoder.patch_embed.weight.reshape(width, 1, patch, patch),
        "embeddings.patch_embeddings.projection.bias": encoder.patch_embed.bias,
    }
    rest = {k: v for k, v in encoder.state_dict().items() if k.startswith(("layers.", "layernorm."))}
    return {**embeddings, **rest}


def _load_all(hf_model: nn.Module, state: dict[str, torch.Tensor], like: nn.Module) -> nn.Module:
    """Load ``state`` into ``hf_model`` (every weight, none left over), in ``like``'s dtype, device and mode."""
    parameter = next(like.parameters())
    hf_model.to(dtype=parameter.dtype, device=parameter.device)
    hf_model.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)
    return hf_model.train(like.training)


def to_hf(model: MaskedAutoencoder) -> transformers.ViTMAEForPreTraining:
    """A ``transformers.ViTMAEForPreTraining`` with ``model``'s weights: the same loss and predictions given the same
    ``noise``. Built from a config: nothing is downloaded."""
    from transformers import ViTMAEForPreTraining

    decoder = {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
    decoder["decoder.decoder_pos_embed"] = model.decoder.decoder_pos_embed
    state = {**{f"vit.{k}": v for k, v in _hf_encoder_state(model.encoder).items()}, **decoder}
    return _load_all(ViTMAEForPreTraining(hf_config(model.vit_config)), state, model)


def to_hf_classifier(classifier: ViTClassifier) -> transformers.ViTForImageClassification:
    """A ``transformers.ViTForImageClassification`` with ``classifier``'s weights (CLS pooling only, as theirs):
    the same logits. ``.save_pretrained(folder)`` writes it as safetensors; ``from_pretrained(folder)`` reads it
    back with no download. For a pretrained MAE: ``to_hf_classifier(ViTClassifier(encoder=mae.encoder))``."""
    from transformers import ViTForImageClassification

    if classifier.pooling != "cls":
        raise ValueError("ViTForImageClassification reads the CLS token: build the ViTClassifier with pooling='cls'.")
    state = {f"vit.{k}": v for k, v in _hf_encoder_state(classifier.encoder).items()}
    state.update({f"classifier.{k}": v for k, v in classifier.head.state_dict().items()})
    hf_model = ViTForImageClassification(hf_classifier_config(classifier.vit_config, classifier.head.out_features))
    return _load_all(hf_model, state, classifier)
