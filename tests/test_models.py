"""Shapes, sizes and checks of the autoencoders and the classifier."""

import pytest
import torch

from ptft_helpers import models
from ptft_helpers.contrastive import SmallConvEncoder
from ptft_helpers.models import (
    Autoencoder,
    Classifier,
    ConvDecoder,
    ConvEncoder,
    Decoder,
    Encoder,
    autoencoder_from_config,
    build_autoencoder,
    count_parameters,
)

INPUT_SHAPES = [(5, 28, 28), (5, 1, 28, 28), (5, 784)]


def linear(n_in, n_out):
    return n_in * n_out + n_out  # weights and biases


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", INPUT_SHAPES)
def test_shapes(arch, shape):
    torch.manual_seed(0)
    model = build_autoencoder(arch, latent_dim=12)
    x = torch.rand(shape)
    z = model.encoder(x)
    assert z.shape == (5, 12)
    assert model.decoder(z).shape == (5, 784)
    x_hat = model(x)
    assert x_hat.shape == (5, 784)
    # The same images in any of the three layouts give the same reconstructions.
    assert torch.allclose(x_hat, model(x.reshape(5, 784)), atol=1e-6)
    assert Classifier(model.encoder, num_classes=7)(x).shape == (5, 7)


def test_mlp_of_another_input_size():
    model = build_autoencoder("mlp", latent_dim=3, hidden_dim=20, input_dim=50)
    assert model(torch.rand(4, 50)).shape == (4, 50)
    assert count_parameters(model) == linear(50, 20) + linear(20, 3) + linear(3, 20) + linear(20, 50)


def test_parameter_counts_of_the_784_256_32_autoencoder():
    enc, dec = Encoder(), Decoder()
    assert count_parameters(enc) == 784 * 256 + 256 + 256 * 32 + 32 == 209_184
    assert count_parameters(dec) == 32 * 256 + 256 + 256 * 784 + 784 == 209_936
    assert count_parameters(Autoencoder(enc, dec)) == 419_120
    assert count_parameters(build_autoencoder()) == 419_120


def test_parameter_counts_of_the_conv_autoencoder():
    c, latent = 16, 32
    conv1 = 1 * c * 3 * 3 + c
    conv2 = c * 2 * c * 3 * 3 + 2 * c
    enc_fc = linear(2 * c * 7 * 7, latent)
    assert count_parameters(ConvEncoder(latent, c)) == conv1 + conv2 + enc_fc == 55_008
    dec_fc = linear(latent, 2 * c * 7 * 7)
    up1 = 2 * c * c * 4 * 4 + c
    up2 = c * 1 * 4 * 4 + 1
    assert count_parameters(ConvDecoder(latent, c)) == dec_fc + up1 + up2 == 60_209
    assert count_parameters(build_autoencoder("conv")) == 55_008 + 60_209


@pytest.mark.parametrize("latent", [0, -1, 785, 1000, 2.5, 32.0, "32", True, None])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_invalid_latent_sizes(arch, latent):
    with pytest.raises(ValueError, match="latent_dim"):
        build_autoencoder(arch, latent_dim=latent)


def test_latent_size_message_says_the_range():
    with pytest.raises(ValueError, match="between 1 and 784"):
        Encoder(latent_dim=785)
    with pytest.raises(ValueError, match="between 1 and 784"):
        ConvEncoder(latent_dim=785)


@pytest.mark.parametrize("latent", [1, 784])
def test_latent_size_limits_are_allowed(latent):
    assert build_autoencoder("mlp", latent_dim=latent, hidden_dim=8)(torch.rand(2, 784)).shape == (2, 784)


@pytest.mark.parametrize("kwargs", [{"hidden_dim": 0}, {"input_dim": 0}, {"hidden_dim": -5}])
def test_invalid_other_sizes(kwargs):
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        build_autoencoder("mlp", **kwargs)


def test_encoder_and_decoder_must_fit():
    with pytest.raises(ValueError, match="do not fit together"):
        Autoencoder(Encoder(latent_dim=16), Decoder(latent_dim=32))
    with pytest.raises(ValueError, match="do not fit together"):
        Autoencoder(Encoder(), ConvDecoder())


def test_unknown_architecture():
    with pytest.raises(ValueError, match="'mlp' or 'conv'"):
        build_autoencoder("transformer")
    with pytest.raises(ValueError, match="28x28"):
        build_autoencoder("conv", input_dim=100)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0])
def test_classifier_needs_two_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(Encoder(), num_classes=num_classes)


def _grads_after_backward(clf):
    clf.zero_grad(set_to_none=True)
    clf(torch.rand(4, 784)).sum().backward()
    enc = [p.grad for p in clf.encoder.parameters()]
    head = [p.grad for p in clf.head.parameters()]
    return enc, head


def test_freeze_and_unfreeze_stop_and_start_gradients():
    torch.manual_seed(0)
    clf = Classifier(Encoder())
    assert not clf.encoder_frozen
    enc, head = _grads_after_backward(clf)
    assert all(g is not None and g.abs().sum() > 0 for g in enc + head)

    assert clf.freeze_encoder() is clf
    assert clf.encoder_frozen
    enc, head = _grads_after_backward(clf)
    assert all(g is None for g in enc)
    assert all(g is not None and g.abs().sum() > 0 for g in head)
    assert count_parameters(clf, trainable_only=True) == linear(32, 10)
    assert count_parameters(clf) == 209_184 + linear(32, 10)

    clf.unfreeze_encoder()
    assert not clf.encoder_frozen
    enc, head = _grads_after_backward(clf)
    assert all(g is not None and g.abs().sum() > 0 for g in enc + head)
    assert count_parameters(clf, trainable_only=True) == 209_184 + linear(32, 10)


def test_a_frozen_encoder_stays_in_eval_mode():
    # A probe on SimCLR's encoder: its batch norm keeps the pretrained statistics while the head trains.
    torch.manual_seed(0)
    clf = Classifier(SmallConvEncoder(4)).freeze_encoder()
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    clf.train()
    assert clf.training and clf.head.training and not clf.encoder.training
    clf(torch.rand(8, 784))
    assert all(torch.equal(v, clf.encoder.state_dict()[k]) for k, v in before.items())
    assert clf.unfreeze_encoder().encoder.training  # fine-tuning: batch norm learns again


def test_classifier_shares_the_encoder_it_is_given():
    ae = build_autoencoder()
    clf = Classifier(ae.encoder)
    with torch.no_grad():
        clf.encoder.fc1.bias.add_(1.0)
    assert torch.equal(ae.encoder.fc1.bias, clf.encoder.fc1.bias)


@pytest.mark.parametrize("arch,latent,hidden", [("mlp", 32, 256), ("mlp", 7, 50), ("conv", 16, 8)])
def test_autoencoder_from_config_round_trip(arch, latent, hidden):
    original = build_autoencoder(arch, latent_dim=latent, hidden_dim=hidden)
    rebuilt = autoencoder_from_config(original.config)
    assert type(rebuilt.encoder) is type(original.encoder)
    assert rebuilt.config == original.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in original.state_dict().items()
    }
    rebuilt.load_state_dict(original.state_dict())
    x = torch.rand(3, 784)
    assert torch.equal(rebuilt(x), original(x))


def test_autoencoder_from_config_missing_key():
    config = dict(build_autoencoder().config)
    del config["latent_dim"]
    with pytest.raises(ValueError, match="latent_dim"):
        autoencoder_from_config(config)


def test_config_is_what_was_built():
    assert build_autoencoder("conv", latent_dim=5, hidden_dim=4).config == {
        "arch": "conv",
        "input_dim": models.INPUT_DIM,
        "hidden_dim": 4,
        "latent_dim": 5,
    }
