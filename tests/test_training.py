"""The training loops on small subsets of the real Fashion-MNIST, and their checks."""

import copy
import math

import pytest
import torch

from ptft_helpers import training
from ptft_helpers.data import balanced_subset, to_inputs
from ptft_helpers.models import Classifier, Encoder, build_autoencoder
from ptft_helpers.training import TrainingDiverged, corrupt, evaluate, finetune, pretrain, reconstruct


def fresh_autoencoder(seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_autoencoder(**kwargs)


def fresh_classifier(seed=0):
    torch.manual_seed(seed)
    return Classifier(Encoder())


@pytest.fixture(scope="module")
def train_images(fashion):
    return fashion["train"].images[:512]


@pytest.fixture(scope="module")
def heldout(fashion):
    test = fashion["test"]
    return test.images[:1000], test.labels[:1000]


# --- pretrain ----------------------------------------------------------------------------------


def test_pretrain_lowers_the_loss(train_images, heldout):
    model = fresh_autoencoder()
    before = evaluate(model, heldout[0])["mse"]
    history = pretrain(model, train_images, epochs=3, batch_size=64, test_images=heldout[0], progress=False)
    assert history["epoch"] == [1, 2, 3]
    assert len(history["step_loss"]) == 3 * 8 and len(history["seconds"]) == 3
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]
    assert history["test_loss"][-1] < 0.7 * before
    assert history["test_loss"][-1] == pytest.approx(evaluate(model, heldout[0])["mse"], rel=1e-5)
    out = reconstruct(model, heldout[0][:6])
    assert out.shape == (6, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_evaluate_mse_is_per_pixel(heldout):
    model = fresh_autoencoder()
    images = heldout[0][:300]
    x = to_inputs(images)
    with torch.no_grad():
        expected = float(((model(x) - x) ** 2).mean())
    # Batches of uneven size are averaged per image, not per batch.
    assert evaluate(model, images, batch_size=128, device="cpu")["mse"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("pretext", training.PRETEXTS)
def test_seeded_runs_repeat_exactly(train_images, pretext):
    def run(seed):
        return pretrain(
            fresh_autoencoder(),
            train_images[:256],
            epochs=1,
            batch_size=64,
            pretext=pretext,
            seed=seed,
            device="cpu",
            progress=False,
        )["step_loss"]

    first = run(seed=0)
    assert len(first) == 4 and all(math.isfinite(v) for v in first)
    assert run(seed=0) == first
    assert run(seed=1) != first


def test_huge_learning_rate_raises_training_diverged(train_images):
    model = fresh_autoencoder()
    with pytest.raises(TrainingDiverged) as info:
        pretrain(model, train_images[:256], epochs=3, lr=1e6, batch_size=64, progress=False)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.epoch == 1 and err.lr == 1e6
    message = str(err)
    assert "epoch 1" in message and "lower learning rate" in message and "100000" in message
    bad = err.history["step_loss"]
    assert not math.isfinite(bad[err.step - 1]) and all(math.isfinite(v) for v in bad[: err.step - 1])


def test_divergence_names_the_epoch_it_happened_in(train_images):
    # One step per epoch: the first step is still finite, the second (in epoch 2) overflows.
    with pytest.raises(TrainingDiverged, match=r"in epoch 2 \(step 2 overall\) with learning rate 1e\+06") as info:
        pretrain(fresh_autoencoder(), train_images[:128], epochs=3, lr=1e6, batch_size=128, progress=False)
    assert info.value.epoch == 2 and info.value.history["epoch"] == [1]


def test_inf_weights_diverge_at_the_first_step(train_images):
    model = fresh_autoencoder()
    with torch.no_grad():
        model.decoder.fc2.bias.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match=r"in epoch 1 \(step 1 overall\) with learning rate 0.001"):
        pretrain(model, train_images[:128], epochs=2, batch_size=64, progress=False)


def test_nan_weights_make_finetune_diverge(train_images, fashion):
    clf = fresh_classifier()
    with torch.no_grad():
        clf.encoder.fc1.weight.fill_(float("nan"))
    labels = fashion["train"].labels[:64]
    with pytest.raises(TrainingDiverged, match="epoch 1.*lower learning rate"):
        finetune(clf, train_images[:64], labels, epochs=2, progress=False)


BAD_LRS = [0, 0.0, -1e-3, float("nan"), float("inf"), -float("inf"), True, "1e-3"]


@pytest.mark.parametrize("lr", BAD_LRS + [None])
def test_pretrain_rejects_bad_learning_rates(lr, train_images):
    model = fresh_autoencoder()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="positive, finite number"):
        pretrain(model, train_images[:64], lr=lr, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("lr", BAD_LRS)
def test_finetune_rejects_bad_learning_rates(lr, train_images, fashion):
    labels = fashion["train"].labels[:64]
    with pytest.raises(ValueError, match="positive, finite number"):
        finetune(fresh_classifier(), train_images[:64], labels, lr=lr, progress=False)
    with pytest.raises(ValueError, match="positive, finite number"):
        finetune(fresh_classifier(), train_images[:64], labels, lr=lr, encoder_lr=1e-3, progress=False)
    with pytest.raises(ValueError, match="encoder learning rate must be a positive, finite number"):
        finetune(fresh_classifier(), train_images[:64], labels, encoder_lr=lr, progress=False)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": 0}, "epochs must be a whole number >= 1"),
        ({"epochs": 1.5}, "epochs must be a whole number >= 1"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"batch_size": True}, "batch_size must be a whole number >= 1"),
        ({"pretext": "rotation"}, "Unknown pretext 'rotation'. Choose one of: plain, denoising, masked"),
    ],
)
def test_pretrain_rejects_bad_settings(kwargs, match, train_images):
    with pytest.raises(ValueError, match=match):
        pretrain(fresh_autoencoder(), train_images[:64], progress=False, **kwargs)


def test_pretrain_rejects_no_images(train_images):
    with pytest.raises(ValueError, match="No images"):
        pretrain(fresh_autoencoder(), train_images[:0], progress=False)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": 0}, "epochs must be"),
        ({"batch_size": 0}, "batch_size must be"),
    ],
)
def test_finetune_rejects_bad_settings(kwargs, match, train_images, fashion):
    with pytest.raises(ValueError, match=match):
        finetune(fresh_classifier(), train_images[:64], fashion["train"].labels[:64], progress=False, **kwargs)


def test_finetune_rejects_mismatched_labels(train_images, fashion):
    with pytest.raises(ValueError, match="64 images but 63 labels"):
        finetune(fresh_classifier(), train_images[:64], fashion["train"].labels[:63], progress=False)
    with pytest.raises(ValueError, match="No labelled images"):
        finetune(fresh_classifier(), train_images[:0], fashion["train"].labels[:0], progress=False)


def test_evaluate_classifier_needs_labels(heldout):
    with pytest.raises(ValueError, match="needs the labels"):
        evaluate(fresh_classifier(), heldout[0][:10])


# --- finetune ----------------------------------------------------------------------------------


def test_finetune_on_100_labels_beats_chance(fashion):
    train = fashion["train"]
    idx = balanced_subset(train.labels, 100, seed=0)
    # Validation images come from the training split too, outside the 100 labelled ones.
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[idx] = False
    val_idx = torch.nonzero(rest).flatten()[:1000]
    val = (train.images[val_idx], train.labels[val_idx])
    clf = fresh_classifier()
    history = finetune(clf, train.images[idx], train.labels[idx], epochs=10, batch_size=25, val=val, progress=False)
    assert history["epoch"] == list(range(1, 11))
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["train_acc"][-1] > 0.6
    scores = evaluate(clf, *val)
    assert scores["accuracy"] > 0.45  # chance is 0.10
    assert history["val_acc"][-1] == pytest.approx(scores["accuracy"])
    assert history["val_loss"][-1] == pytest.approx(scores["loss"], rel=1e-5)
    assert len(history["val_acc"]) == 10 and not any(k.startswith("test") for k in history)


def test_finetune_has_no_test_argument_and_checks_val(fashion):
    train = fashion["train"]
    with pytest.raises(TypeError):
        finetune(fresh_classifier(), train.images[:20], train.labels[:20], test=(train.images[:5], train.labels[:5]))
    with pytest.raises(ValueError, match="val must be"):
        finetune(fresh_classifier(), train.images[:20], train.labels[:20], val=(train.images[:5], train.labels[:4]))


def test_frozen_encoder_does_not_change(train_images, fashion):
    clf = fresh_classifier().freeze_encoder()
    encoder_before = copy.deepcopy(clf.encoder.state_dict())
    head_before = copy.deepcopy(clf.head.state_dict())
    finetune(clf, train_images[:200], fashion["train"].labels[:200], epochs=2, batch_size=50, progress=False)
    assert all(torch.equal(encoder_before[k], v.cpu()) for k, v in clf.encoder.state_dict().items())
    assert not torch.equal(head_before["weight"], clf.head.weight.detach().cpu())
    assert clf.encoder_frozen  # still frozen afterwards


def _encoder_change(encoder_lr, images, labels):
    clf = fresh_classifier()
    before = copy.deepcopy(clf.encoder.state_dict())
    finetune(clf, images, labels, epochs=2, lr=1e-3, encoder_lr=encoder_lr, batch_size=50, device="cpu", progress=False)
    return sum(float((v.cpu() - before[k]).abs().sum()) for k, v in clf.encoder.state_dict().items())


def test_encoder_lr_is_respected(train_images, fashion):
    images, labels = train_images[:200], fashion["train"].labels[:200]
    same = _encoder_change(None, images, labels)  # encoder_lr defaults to lr
    assert same == _encoder_change(1e-3, images, labels)
    slow = _encoder_change(1e-5, images, labels)
    assert 0 < slow < same / 20


# --- corrupt -----------------------------------------------------------------------------------


def test_corrupt_plain_returns_the_input():
    x = torch.rand(8, 784)
    assert corrupt(x, "plain", torch.Generator().manual_seed(0)) is x


def test_corrupt_denoising_adds_noise():
    x = torch.rand(100, 784)
    noisy = corrupt(x, "denoising", torch.Generator().manual_seed(0), noise_std=0.3)
    assert noisy.shape == x.shape
    assert float((noisy - x).std()) == pytest.approx(0.3, rel=0.02)
    assert abs(float((noisy - x).mean())) < 0.01
    assert torch.equal(noisy, corrupt(x, "denoising", torch.Generator().manual_seed(0), noise_std=0.3))


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_corrupt_masked_zeroes_about_mask_ratio_of_the_pixels(ratio):
    x = torch.rand(100, 784) + 0.5  # no zeros to begin with
    masked = corrupt(x, "masked", torch.Generator().manual_seed(0), mask_ratio=ratio)
    zeroed = masked == 0
    assert float(zeroed.float().mean()) == pytest.approx(ratio, abs=0.01)
    assert torch.equal(masked[~zeroed], x[~zeroed])  # the rest is untouched


def test_corrupt_unknown_pretext():
    with pytest.raises(ValueError, match="Unknown pretext"):
        corrupt(torch.rand(2, 784), "jigsaw", torch.Generator())
