"""The autoencoder from the source text (784-256-32 MLP), a convolutional variant,
and a classifier that puts a linear head on a (pre)trained encoder.

Every model flattens its input, so (N, 28, 28), (N, 1, 28, 28) and (N, 784) all work,
and every autoencoder returns flat reconstructions of shape (N, 784).
"""

from __future__ import annotations

import torch
from torch import nn

from .validation import positive_int, whole_number

IMAGE_SHAPE = (1, 28, 28)
INPUT_DIM = 28 * 28


def _check_dims(input_dim: int, hidden_dim: int, latent_dim: int) -> None:
    for label, value in (("input_dim", input_dim), ("hidden_dim", hidden_dim), ("latent_dim", latent_dim)):
        positive_int(value, label)
    if latent_dim > input_dim:
        raise ValueError(
            f"latent_dim={latent_dim} is larger than the input ({input_dim} values): the code would not "
            f"compress anything. Choose a latent size between 1 and {input_dim}."
        )


class Encoder(nn.Module):
    """x (N, 784) -> z (N, latent_dim): Linear, ReLU, Linear, as in the source text."""

    def __init__(self, input_dim: int = INPUT_DIM, hidden_dim: int = 256, latent_dim: int = 32):
        super().__init__()
        _check_dims(input_dim, hidden_dim, latent_dim)
        self.config = {"arch": "mlp", "input_dim": input_dim, "hidden_dim": hidden_dim, "latent_dim": latent_dim}
        self.latent_dim = latent_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)  # (N, 784) -> (N, 256)
        self.fc2 = nn.Linear(hidden_dim, latent_dim)  # (N, 256) -> (N, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))  # (N, 256)
        return self.fc2(x)  # (N, 32): the code z


class Decoder(nn.Module):
    """z (N, latent_dim) -> x_hat (N, 784): Linear, ReLU, Linear, as in the source text."""

    def __init__(self, latent_dim: int = 32, hidden_dim: int = 256, output_dim: int = INPUT_DIM):
        super().__init__()
        _check_dims(output_dim, hidden_dim, latent_dim)
        self.config = {"arch": "mlp", "input_dim": output_dim, "hidden_dim": hidden_dim, "latent_dim": latent_dim}
        self.fc1 = nn.Linear(latent_dim, hidden_dim)  # (N, 32) -> (N, 256)
        self.fc2 = nn.Linear(hidden_dim, output_dim)  # (N, 256) -> (N, 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.fc1(z))  # (N, 256)
        return self.fc2(z)  # (N, 784): the reconstruction x_hat


class ConvEncoder(nn.Module):
    """x (N, 1, 28, 28) -> z (N, latent_dim) with two strided convolutions."""

    def __init__(self, latent_dim: int = 32, channels: int = 16):
        super().__init__()
        _check_dims(INPUT_DIM, channels, latent_dim)
        self.config = {"arch": "conv", "input_dim": INPUT_DIM, "hidden_dim": channels, "latent_dim": latent_dim}
        self.latent_dim = latent_dim
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1),  # (N, 1, 28, 28) -> (N, C, 14, 14)
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),  # -> (N, 2C, 7, 7)
            nn.ReLU(),
            nn.Flatten(),  # -> (N, 2C * 49)
        )
        self.fc = nn.Linear(2 * channels * 49, latent_dim)  # -> (N, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x.reshape(-1, *IMAGE_SHAPE)))


class ConvDecoder(nn.Module):
    """z (N, latent_dim) -> x_hat (N, 784) with two transposed convolutions."""

    def __init__(self, latent_dim: int = 32, channels: int = 16):
        super().__init__()
        _check_dims(INPUT_DIM, channels, latent_dim)
        self.config = {"arch": "conv", "input_dim": INPUT_DIM, "hidden_dim": channels, "latent_dim": latent_dim}
        self.channels = channels
        self.fc = nn.Linear(latent_dim, 2 * channels * 49)  # (N, latent_dim) -> (N, 2C * 49)
        self.upsample = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),  # (N, 2C, 7, 7) -> (N, C, 14, 14)
            nn.ReLU(),
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1),  # -> (N, 1, 28, 28)
            nn.Flatten(),  # -> (N, 784)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.fc(z).reshape(-1, 2 * self.channels, 7, 7))


class Autoencoder(nn.Module):
    """x -> encoder -> z -> decoder -> x_hat, trained to make x_hat close to x."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        if encoder.config != decoder.config:
            raise ValueError(f"Encoder {encoder.config} and decoder {decoder.config} do not fit together.")
        self.config = dict(encoder.config)
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # (N, 784)


class Classifier(nn.Module):
    """A linear head on an encoder: x -> encoder -> z -> logits (N, num_classes).

    This is the correct way to reuse a pretrained autoencoder: keep its *encoder*,
    drop the decoder, and learn a new head that maps the code z to class scores.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = 10):
        super().__init__()
        whole_number(num_classes, "num_classes", 2)
        self.encoder = encoder
        self.head = nn.Linear(encoder.latent_dim, num_classes)  # (N, latent_dim) -> (N, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def train(self, mode: bool = True) -> Classifier:
        """Training (or eval) mode; a frozen encoder stays in eval mode, so its batch norm keeps its statistics."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def freeze_encoder(self) -> Classifier:
        """Stop training the encoder (a linear probe): only the head learns, and the encoder stays in eval mode."""
        self.encoder.requires_grad_(False)
        return self.train(self.training)

    def unfreeze_encoder(self) -> Classifier:
        """Train the encoder and the head together (full fine-tuning)."""
        self.encoder.requires_grad_(True)
        return self.train(self.training)

    @property
    def encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())


DEFAULT_HIDDEN = {"mlp": 256, "conv": 16}  # hidden units of the MLP; channels of the first convolution


def build_autoencoder(
    arch: str = "mlp", latent_dim: int = 32, hidden_dim: int | None = None, input_dim: int = INPUT_DIM
) -> Autoencoder:
    """An untrained autoencoder: 'mlp' (input-hidden-latent) or 'conv' (hidden_dim = channels).

    ``hidden_dim`` defaults to the architecture's own size: 256 units (mlp) or 16 channels (conv).
    """
    if hidden_dim is None and arch in DEFAULT_HIDDEN:
        hidden_dim = DEFAULT_HIDDEN[arch]
    if arch == "mlp":
        return Autoencoder(Encoder(input_dim, hidden_dim, latent_dim), Decoder(latent_dim, hidden_dim, input_dim))
    if arch == "conv":
        if input_dim != INPUT_DIM:
            raise ValueError(
                f"The convolutional autoencoder takes 28x28 images (input_dim={INPUT_DIM}), not {input_dim}."
            )
        return Autoencoder(ConvEncoder(latent_dim, hidden_dim), ConvDecoder(latent_dim, hidden_dim))
    raise ValueError(f"Unknown architecture {arch!r}. Choose 'mlp' or 'conv'.")


def autoencoder_from_config(config: dict) -> Autoencoder:
    """Rebuild an untrained autoencoder from ``model.config`` (as stored in checkpoints)."""
    if config.get("arch") == "smallconv":
        raise ValueError(
            "This checkpoint holds a model on SimCLR's encoder (arch smallconv, notebook 06: SimCLR or its autoencoder "
            "control): load it with checkpoints.load_pretrained or pretrained.load_or_pretrain(arch='smallconv', ...)."
        )
    try:
        return build_autoencoder(config["arch"], config["latent_dim"], config["hidden_dim"], config["input_dim"])
    except KeyError as err:
        raise ValueError(f"Model configuration {config!r} lacks the key {err}.") from None


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
