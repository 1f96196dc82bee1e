"""Tests for the SimCLR pieces (augmentations, NT-Xent, encoder, pretraining loop) and the probes."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from ptft_helpers.contrastive import (
    SmallConvEncoder,
    augment,
    augmented_trial,
    build_conv_autoencoder,
    build_simclr,
    contrastive_settings,
    embed,
    nt_xent,
    pretrain_contrastive,
    simclr_from_config,
)
from ptft_helpers.probes import fit_linear_probe, select_and_score

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_pretext.py"
NO_AUGMENTATION = {
    "crop_scale": (1.0, 1.0),
    "max_rotation": 0.0,
    "max_shift": 0.0,
    "flip": False,
    "jitter": 0.0,
    "erase": 0.0,
}


def test_nt_xent_matches_a_hand_computed_value():
    # Codes a1=(1,0), b1=(0,1) and their second views a2=(1,0), b2=(-1,0); temperature 1.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    e = math.e
    rows = [
        -1 + math.log(1 + e + 1 / e),  # a1: candidates b1 (0), a2 (1, the positive), b2 (-1)
        math.log(3),  # b1: every cosine is 0, so the positive b2 gets probability 1/3
        -1 + math.log(e + 1 + 1 / e),  # a2: candidates a1 (1, positive), b1 (0), b2 (-1)
        math.log(1 + 2 / e),  # b2: candidates a1 (-1), b1 (0, positive), a2 (-1)
    ]
    assert nt_xent(z1, z2, temperature=1.0).item() == pytest.approx(sum(rows) / 4, rel=1e-6)


def test_nt_xent_ignores_the_length_of_codes_and_rewards_matching_views():
    gen = torch.Generator().manual_seed(0)
    z1, other = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
    assert nt_xent(z1, 3 * z1).item() == pytest.approx(nt_xent(z1, z1).item(), rel=1e-5)
    assert nt_xent(z1, z1 + 0.01 * other) < nt_xent(z1, other)
    # A lower temperature sharpens the softmax: with matching views the loss falls towards zero.
    assert nt_xent(z1, z1, temperature=0.05) < nt_xent(z1, z1, temperature=1.0)


@pytest.mark.parametrize("shapes", [((4, 3), (4, 2)), ((4, 3), (5, 3)), ((4,), (4,))])
def test_nt_xent_rejects_mismatched_codes(shapes):
    with pytest.raises(ValueError, match="shape"):
        nt_xent(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


def test_nt_xent_rejects_a_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.ones(2, 2), torch.ones(2, 2), temperature=0.0)


def test_augment_gives_images_in_range_that_repeat_with_the_seed(fashion):
    x = fashion["train"].images[:64].float() / 255
    views = augment(x, torch.Generator().manual_seed(1))
    assert views.shape == (64, 1, 28, 28)
    assert views.min() >= 0 and views.max() <= 1
    assert torch.equal(views, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.allclose(views, augment(x, torch.Generator().manual_seed(2)))
    assert not torch.allclose(views, x.reshape(-1, 1, 28, 28), atol=0.05)


def test_augment_with_everything_off_is_the_identity(fashion):
    x = fashion["train"].images[:16].float() / 255
    views = augment(x, torch.Generator().manual_seed(0), **NO_AUGMENTATION)
    torch.testing.assert_close(views, x.reshape(-1, 1, 28, 28), atol=1e-5, rtol=0)


def test_augment_flip_mirrors_about_half_the_images(fashion):
    x = fashion["train"].images[:200].float().reshape(-1, 1, 28, 28) / 255
    views = augment(x, torch.Generator().manual_seed(0), **{**NO_AUGMENTATION, "flip": True})
    same = (views - x).abs().amax((1, 2, 3)) < 1e-5
    mirrored = (views - x.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    assert bool((same | mirrored).all())
    assert 60 < int(mirrored.sum()) < 140


def test_augment_erase_blanks_a_rectangle(fashion):
    x = torch.ones(32, 784)
    views = augment(x, torch.Generator().manual_seed(0), **{**NO_AUGMENTATION, "erase": 1.0})
    erased = (views == 0).float().sum((1, 2, 3))
    assert bool((erased >= 25).all()) and bool((erased <= 15 * 15).all())


def test_encoder_and_projection_shapes():
    model = build_simclr(channels=8, projection_dim=16)
    x = torch.rand(5, 784)
    assert model.encoder(x).shape == (5, 8 * 4 * 16)
    assert model(x).shape == (5, 16)
    assert simclr_from_config(model.config).config == model.config
    with pytest.raises(ValueError, match="channels"):
        SmallConvEncoder(0)


def test_the_conv_autoencoder_shares_simclrs_encoder_and_code():
    autoencoder, simclr = build_conv_autoencoder(channels=8), build_simclr(channels=8)
    x = torch.rand(5, 784)
    assert autoencoder.encoder.config == simclr.encoder.config
    assert autoencoder.encoder(x).shape == simclr.encoder(x).shape == (5, 8 * 4 * 16)
    assert autoencoder(x).shape == (5, 784)  # a reconstruction, flat as every autoencoder's
    rebuilt = simclr_from_config(autoencoder.config)  # a checkpoint's config without a projection: the autoencoder
    assert type(rebuilt) is type(autoencoder) and rebuilt.config == autoencoder.config
    assert type(simclr_from_config(simclr.config)) is type(simclr)
    with pytest.raises(ValueError, match="Not a configuration of SimCLR's encoder"):
        simclr_from_config({"arch": "mlp"})


class _Fixed(torch.nn.Module):
    """A classifier whose validation logits are fixed by a learning rate (no learnable effect on them): what
    ``augmented_trial`` sees when two rates tie on validation accuracy but not on cross-entropy."""

    def __init__(self, confidence: float):
        super().__init__()
        self.confidence = confidence
        self.encoder = torch.nn.Linear(1, 1)
        self.head = torch.nn.Linear(1, 1)

    def forward(self, x):
        logits = torch.zeros(len(x), 2)
        logits[:, 0] = self.confidence + 0 * self.head(self.encoder(torch.ones(len(x), 1))).squeeze(1)
        return logits


def test_augmented_trial_breaks_a_tie_by_the_lower_validation_loss(fashion):
    images, labels = fashion["train"].images[:8], torch.zeros(8, dtype=torch.long)  # every image is class 0
    confidences = iter([0.5, 3.0])  # the same accuracy (all right) at both rates; the second is surer: lower loss
    out = augmented_trial(
        lambda: _Fixed(next(confidences)),
        images,
        labels,
        torch.arange(4),
        torch.arange(4, 8),
        (images, labels),
        lrs=[1e-3, 1e-2],
        steps=2,
        eval_every=1,
        seed=0,
    )
    assert out["lr"] == 1e-2 and out["val_acc"] == 1.0 and out["test_acc"] == 1.0
    assert out["val_loss"] == pytest.approx(-torch.log_softmax(torch.tensor([3.0, 0.0]), 0)[0].item(), rel=1e-5)


def test_pretraining_lowers_the_loss_and_repeats_with_the_seed(fashion):
    images = fashion["train"].images[:256]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_simclr(channels=8)
        runs.append(
            (pretrain_contrastive(model, images, epochs=4, batch_size=64, lr=3e-3, seed=3, progress=False), model)
        )
    (history, model), (again, _) = runs
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["train_loss"] == again["train_loss"]
    assert all(r > 0 for r in history["images_per_s"])
    assert embed(model.encoder, images[:10]).shape == (10, 8 * 4 * 16)


def test_pretraining_rejects_unknown_augmentations(fashion):
    with pytest.raises(ValueError, match="rotate"):
        pretrain_contrastive(build_simclr(channels=4), fashion["train"].images[:8], epochs=1, rotate=10)


def test_linear_probe_separates_separable_data():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(5)
    features = torch.nn.functional.one_hot(labels, 10).float() * 3 + 0.1 * torch.randn(50, 10, generator=gen)
    probe = fit_linear_probe(features, labels, weight_decay=1e-3)
    assert bool((probe(features).argmax(1) == labels).all())
    with pytest.raises(ValueError, match="labels"):
        fit_linear_probe(features, labels[:-1], weight_decay=0.1)


def test_select_and_score_chooses_on_validation_and_scores_test_once():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(20)
    features = torch.nn.functional.one_hot(labels, 10).float() + 0.3 * torch.randn(200, 10, generator=gen)
    train, val, test = [(features[i::3], labels[i::3]) for i in range(3)]
    out = select_and_score(train, val, test, weight_decays=[1e3, 1e-3])
    assert out["weight_decay"] == 1e-3  # an enormous weight decay predicts one class
    assert out["val_acc"] > 0.8 and out["test_acc"] > 0.8
    # With no validation images, a single setting is used as it is.
    alone = select_and_score(train, (val[0][:0], val[1][:0]), test, weight_decays=[1e-3])
    assert math.isnan(alone["val_acc"]) and alone["test_acc"] == out["test_acc"]
    with pytest.raises(ValueError, match="single weight decay"):
        select_and_score(train, (val[0][:0], val[1][:0]), test, weight_decays=[1e-3, 1e-2])


def test_bench_pretext_runs_and_writes_its_numbers(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_pretext", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    result = bench.main(["--images", "512", "--repeats", "1", "--device", "cpu", "--json", str(out)])
    assert json.loads(out.read_text())["images_per_s"] == result["images_per_s"]
    assert set(result["images_per_s"]) == {"augment (two views)", "SimCLR epoch"}
    assert all(v > 0 for v in result["images_per_s"].values())


def test_load_or_pretrain_trains_a_simclr_encoder_once_then_loads_it(data_env):
    from ptft_helpers.contrastive import SimCLR
    from ptft_helpers.pretrained import load_or_pretrain

    recipe = {"epochs": 1, "train_size": 64, "batch_size": 32, "arch": "smallconv", "hidden_dim": 4, "latent_dim": 8}
    model, meta, path = load_or_pretrain(pretext="simclr", **recipe)
    assert isinstance(model, SimCLR) and path.is_file()
    recorded = meta["temperature"] == contrastive_settings()["temperature"]  # the recipe's default, not given here
    assert meta["pretext"] == "simclr" and recorded and len(meta["history"]["train_loss"]) == 1
    again, meta_again, path_again = load_or_pretrain(pretext="simclr", **recipe)
    assert path_again == path and meta_again["history"] == meta["history"]
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="smallconv"):
        load_or_pretrain(pretext="simclr", epochs=1, train_size=64)
    with pytest.raises(ValueError, match="temperature"):
        load_or_pretrain(pretext="plain", temperature=0.1)


def test_pretraining_with_nan_weights_stops_with_training_diverged(fashion):
    from ptft_helpers.training import TrainingDiverged

    model = build_simclr(channels=4)
    with torch.no_grad():
        model.head[-1].weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"in epoch 1 \(step 1 overall\)") as info:
        pretrain_contrastive(model, fashion["train"].images[:16], epochs=2, batch_size=8, progress=False)
    assert len(info.value.history["step_loss"]) == 2 and info.value.history["epoch"] == []
