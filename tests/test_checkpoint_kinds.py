"""Every kind of encoder checkpoint, as each path that saves one writes it, works with ``evaluate`` and ``finetune``:
each autoencoder pretext, SimCLR, notebook 09's subset encoders and one trained by torchrun on 2 processes. An older
checkpoint without the metadata is one line and exit code 2. The masked autoencoder's (notebook 08) has the same
metadata and loads with ``load_pretrained``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_cli import assert_one_line_error, run
from test_distributed import torchrun

from ptft_helpers import experiments
from ptft_helpers.checkpoints import FORMAT, REQUIRED_METADATA, load_checkpoint, load_pretrained
from ptft_helpers.mae import masked_loss
from ptft_helpers.models import build_autoencoder
from ptft_helpers.pretrained import load_or_pretrain
from ptft_helpers.vit import MaskedAutoencoder, ViTConfig

TINY = {"epochs": 1, "train_size": 256, "progress": False}
TINY_ARGS = ["--epochs", "1", "--train-size", "256"]
AUTOENCODERS = {  # kind -> load_or_pretrain's options
    "plain": {"pretext": "plain"},
    "denoising": {"pretext": "denoising"},
    "masked, conv": {"pretext": "masked", "arch": "conv", "hidden_dim": 4},
    "masked-rescaled": {"pretext": "masked-rescaled"},
    "plain, smallconv": {"pretext": "plain", "arch": "smallconv", "channels": 4},  # 06's control
}
SIMCLR = {"pretext": "simclr", "arch": "smallconv", "hidden_dim": 8, "latent_dim": 16, "batch_size": 64}
SIMCLR_RECIPE = {"epochs": 2, "train_size": 1024}  # 32 steps: its test loss is then clearly below chance
MAE = {"arch": "vit", "pretext": "mae", "batch_size": 64}
KINDS = [*AUTOENCODERS, "simclr", "mae", "subset", "torchrun"]


def old_subset_checkpoint(path):
    """A checkpoint as the old ``load_or_pretrain_on_subset`` wrote it: no dataset, recipe, losses or history."""
    torch.manual_seed(0)
    model = build_autoencoder()
    metadata = {"pretext": "plain", "seed": 0, "train_size": 256, "epochs": 1, "seconds": 0.1}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "config": model.config, "state_dict": model.state_dict(), "metadata": metadata}, path)
    return path


def _torchrun_checkpoint(env: dict) -> str:
    done = torchrun(2, "-m", "ptft_helpers", "pretrain", *TINY_ARGS, "--seed", "1", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith("Saved the checkpoint: "), done.stdout
    return first.split(": ", 1)[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, fashion_root):
    """kind -> the checkpoint's path, each saved by the path that saves that kind, in fast mode, in a folder of its
    own (``PTFT_CHECKPOINTS``)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    env = {"PTFT_DATA": str(fashion_root), "PTFT_CHECKPOINTS": str(folder), "PTFT_FAST": "1", "PTFT_PROGRESS": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        paths = {kind: load_or_pretrain(**options, **TINY).path for kind, options in AUTOENCODERS.items()}
        paths["simclr"] = load_or_pretrain(**SIMCLR, **{**TINY, **SIMCLR_RECIPE}).path
        experiments.load_or_pretrain_on_subset(size=256, pretext="plain", seed=0, steps=2)
        (paths["subset"],) = folder.rglob("*-subset.pt")
        paths["torchrun"] = _torchrun_checkpoint(env)
        paths["mae"] = load_or_pretrain(**MAE, **TINY).path
        yield paths


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_the_metadata(checkpoints, kind):
    metadata = load_checkpoint(checkpoints[kind])["metadata"]
    assert [key for key in REQUIRED_METADATA if key not in metadata] == []
    assert metadata["world_size"] == (2 if kind == "torchrun" else 1)
    assert len(metadata["history"]["train_loss"]) == metadata["epochs"]


def test_the_masked_autoencoder_loads_as_it_was_saved(checkpoints, fashion):
    model, metadata = load_pretrained(checkpoints["mae"])
    assert isinstance(model, MaskedAutoencoder) and metadata["pretext"] == "mae"
    test_loss = masked_loss(model, fashion["test"].images)
    assert test_loss == pytest.approx(metadata["final_test_loss"], rel=1e-6)


def test_the_subset_encoder_is_trained_as_load_or_pretrain_trains(checkpoints):
    # The same recipe (256 images, 1 epoch, seed 0): skipping the test pass after each epoch changes no weight.
    plain, subset = (load_checkpoint(checkpoints[kind]) for kind in ("plain", "subset"))
    assert plain["metadata"]["history"]["test_loss"] and "test_loss" not in subset["metadata"]["history"]
    assert all(torch.equal(subset["state_dict"][k], v) for k, v in plain["state_dict"].items())


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_every_kind(capsys, checkpoints, kind):
    code, out, err = run(capsys, "evaluate", checkpoints[kind])
    assert code == 0, err
    scores = json.loads(out)
    metadata = load_checkpoint(checkpoints[kind])["metadata"]
    assert scores["dataset"] == "fashion-mnist" and scores["pretext"] == metadata["pretext"]
    if kind == "simclr":
        assert scores["code_size"] == 4 * 8 * 16  # 4C channels on a 4 x 4 grid
        assert scores["chance"] == pytest.approx(math.log(2 * 64 - 1))
        assert 0 < scores["nt_xent"] < scores["chance"] - 0.2  # measured: 0.6 below
    elif kind == "mae":  # the masked patches' MSE, with the masks of the test pass after the last epoch
        assert scores["code_size"] == ViTConfig().width  # the CLS token a classifier reads
        assert scores["masked_mse"] == pytest.approx(metadata["final_test_loss"], rel=1e-4)
    elif "final_test_loss" in metadata:  # the test pass after training's last epoch measured the same thing
        assert scores["mse"] == pytest.approx(metadata["final_test_loss"], rel=1e-4)
    else:  # the subset encoder: no test pass during training
        assert kind == "subset" and 0 < scores["mse"] < 1


@pytest.mark.parametrize("kind", KINDS)
def test_finetune_every_kind(capsys, checkpoints, kind):
    code, out, err = run(capsys, "finetune", checkpoints[kind], "--labels", "20", "--epochs", "20")
    assert code == 0, err
    tuned = json.loads(out)
    assert tuned["labels"] == 20 and tuned["mode"] == "finetune"
    assert 0.15 < tuned["accuracy"] <= 1 and tuned["loss"] > 0  # better than a guess (0.1)


def test_a_simclr_probe(capsys, checkpoints):
    code, out, err = run(
        capsys, "finetune", checkpoints["simclr"], "--labels", "20", "--epochs", "20", "--mode", "probe"
    )
    assert code == 0, err
    assert 0.15 < json.loads(out)["accuracy"] <= 1


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_an_older_checkpoint_is_one_line(capsys, tmp_path, fashion_root, monkeypatch, command):
    monkeypatch.setenv("PTFT_DATA", str(fashion_root))
    path = old_subset_checkpoint(tmp_path / "fashion-mnist-mlp-256-32-plain-e1-n256-s0-subset.pt")
    code, out, err = run(capsys, command, path)
    missing = "dataset, lr, batch_size, final_train_loss, world_size, history"
    assert_one_line_error(code, out, err, f"{path} lacks the metadata {missing}", "Delete it and pretrain again")


def test_an_older_subset_checkpoint_is_trained_again_under_its_name(tmp_path, fashion_root, monkeypatch):
    for name, value in {"PTFT_DATA": fashion_root, "PTFT_CHECKPOINTS": tmp_path, "PTFT_FAST": "1"}.items():
        monkeypatch.setenv(name, str(value))
    old = old_subset_checkpoint(tmp_path / "fast" / "fashion-mnist-mlp-256-32-plain-e1-n256-s0-subset.pt")
    model = experiments.load_or_pretrain_on_subset(size=256, pretext="plain", seed=0, steps=2)
    assert [p.name for p in (tmp_path / "fast").glob("*.pt")] == [old.name]  # replaced, not left beside a new one
    payload = load_checkpoint(old)
    assert payload["metadata"]["dataset"] == "fashion-mnist" and "final_test_loss" not in payload["metadata"]
    assert all(torch.equal(payload["state_dict"][k], v) for k, v in model.state_dict().items())
