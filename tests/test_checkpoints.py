"""The checkpoint file format: round trips, damaged files, atomic writes, the metadata every checkpoint holds."""

import fractions
import os
import pickle
import platform

import pytest
import torch
import torchvision
from torch import nn

import ptft_helpers
from ptft_helpers import checkpoints
from ptft_helpers.checkpoints import (
    FORMAT,
    load_autoencoder,
    load_checkpoint,
    load_pretrained,
    load_weights,
    save_checkpoint,
)
from ptft_helpers.contrastive import SimCLR, build_simclr
from ptft_helpers.models import build_autoencoder

# What pretrained.load_or_pretrain records (a made-up run).
META = {
    "dataset": "fashion-mnist",
    "pretext": "plain",
    "seed": 0,
    "epochs": 3,
    "train_size": 500,
    "lr": 1e-3,
    "batch_size": 128,
    "final_train_loss": 0.05,
    "world_size": 1,
    "history": {"epoch": [1, 2, 3], "train_loss": [0.1, 0.07, 0.05]},
}


def trained_looking(arch="mlp", seed=0, **kwargs):
    """A model whose weights differ from a fresh one's (so a round trip that drops them shows)."""
    torch.manual_seed(seed)
    model = build_autoencoder(arch, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


@pytest.mark.parametrize("arch,kwargs", [("mlp", {}), ("mlp", {"latent_dim": 8, "hidden_dim": 64}), ("conv", {})])
def test_round_trip(tmp_path, arch, kwargs):
    model = trained_looking(arch, **kwargs)
    path = save_checkpoint(model, tmp_path / "sub" / "ae.pt", **META, note="hi")
    assert path == tmp_path / "sub" / "ae.pt" and path.is_file()
    assert leftovers(path.parent, keep="ae.pt") == []  # no temporary file left
    loaded, meta = load_autoencoder(path)
    assert loaded.config == model.config
    assert same_weights(loaded, model)
    assert not same_weights(loaded, build_autoencoder(arch, **kwargs))
    assert meta["dataset"] == "fashion-mnist" and meta["epochs"] == 3 and meta["note"] == "hi"
    assert meta["versions"] == {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "ptft_helpers": ptft_helpers.__version__,
        "python": platform.python_version(),
    }
    payload = load_checkpoint(path)
    assert payload["format"] == checkpoints.FORMAT and payload["config"] == model.config


def test_loading_into_another_shape_names_the_sizes(tmp_path):
    path = save_checkpoint(trained_looking(), tmp_path / "ae.pt", **META)
    payload = load_checkpoint(path)
    other = build_autoencoder(latent_dim=16)
    with pytest.raises(ValueError) as info:
        load_weights(other, payload, "ae.pt")
    message = str(info.value)
    assert "latent_dim: checkpoint 32, model 16" in message
    assert "hidden_dim" not in message  # only the sizes that differ


def test_loading_into_a_model_without_config_names_the_tensors(tmp_path):
    path = save_checkpoint(trained_looking(latent_dim=16), tmp_path / "ae.pt", **META)
    torch.manual_seed(0)
    plain = build_autoencoder(latent_dim=8)
    del plain.config  # e.g. a model the user put together by hand
    with pytest.raises(ValueError) as info:
        load_weights(plain, load_checkpoint(path))
    message = str(info.value)
    assert "encoder.fc2.weight: checkpoint (16, 256), model (8, 256)" in message
    assert "decoder.fc1.weight: checkpoint (256, 16), model (256, 8)" in message
    assert "encoder.fc1.weight" not in message
    # Tensors missing on one side are named too.
    with pytest.raises(ValueError, match=r"0.weight: checkpoint missing, model \(4, 2\)"):
        load_weights(nn.Sequential(nn.Linear(2, 4)), {"config": {}, "state_dict": {}})


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at .*nope.pt.*pretrain"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load_autoencoder(tmp_path / "nope.pt")


def _assert_corrupt_message(path):
    with pytest.raises(ValueError) as info:
        load_autoencoder(path)
    message = str(info.value)
    assert str(path) in message
    assert "corrupt" in message and "truncated" in message
    assert "Delete it and pretrain again" in message


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    _assert_corrupt_message(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    _assert_corrupt_message(path)


def test_truncated_file(tmp_path):
    full = save_checkpoint(trained_looking(), tmp_path / "full.pt", **META).read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(full[: len(full) // 2])
    _assert_corrupt_message(path)


def test_file_that_weights_only_refuses(tmp_path):
    # A pickled object of a class torch.load(weights_only=True) does not allow: never unpickled.
    path = tmp_path / "pickle.pt"
    torch.save(
        {"format": checkpoints.FORMAT, "config": {}, "state_dict": {}, "metadata": fractions.Fraction(1, 3)}, path
    )
    with pytest.raises(ValueError, match="not a ptft checkpoint"):
        load_checkpoint(path)


def test_other_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_autoencoder().state_dict(), path)  # a bare state dict: loads, but is not ours
    with pytest.raises(ValueError, match="is not a ptft checkpoint"):
        load_checkpoint(path)


def test_failed_save_leaves_the_old_checkpoint_untouched(tmp_path):
    path = save_checkpoint(trained_looking(seed=1), tmp_path / "ae.pt", **META, note="old")
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on the lambda
        save_checkpoint(trained_looking(seed=2), path, **META, note=lambda: "cannot be pickled")
    assert path.read_bytes() == before
    assert leftovers(tmp_path, keep="ae.pt") == []
    model, meta = load_autoencoder(path)
    assert meta["note"] == "old" and same_weights(model, trained_looking(seed=1))


def test_failed_first_save_leaves_nothing(tmp_path):
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on the lambda
        save_checkpoint(trained_looking(), tmp_path / "ae.pt", **META, note=lambda: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("left_out", ["dataset", "history", "world_size"])
def test_saving_without_the_required_metadata_is_refused(tmp_path, left_out):
    partial = {k: v for k, v in META.items() if k != left_out}
    with pytest.raises(ValueError, match=f"metadata lacks {left_out}\\. Pass them all"):
        save_checkpoint(trained_looking(), tmp_path / "ae.pt", **partial)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_load_pretrained_rebuilds_either_kind(tmp_path):
    torch.manual_seed(0)
    simclr = build_simclr(8, 16)
    path = save_checkpoint(simclr, tmp_path / "simclr.pt", **{**META, "pretext": "simclr"})
    loaded, meta = load_pretrained(path)
    assert isinstance(loaded, SimCLR) and loaded.config == simclr.config and same_weights(loaded, simclr)
    assert meta["pretext"] == "simclr"
    autoencoder, _ = load_pretrained(save_checkpoint(trained_looking("conv"), tmp_path / "ae.pt", **META))
    assert same_weights(autoencoder, trained_looking("conv"))


def test_load_pretrained_names_the_metadata_an_older_checkpoint_lacks(tmp_path):
    path = save_checkpoint(trained_looking(), tmp_path / "ae.pt", **META)
    payload = load_checkpoint(path)
    for key in ("dataset", "lr", "world_size"):
        del payload["metadata"][key]
    torch.save(payload, path)
    assert load_autoencoder(path)[1]["epochs"] == 3  # the weights and what metadata it has still load in Python
    with pytest.raises(ValueError) as info:
        load_pretrained(path)
    message = str(info.value)
    assert f"{path} lacks the metadata dataset, lr, world_size: it was written by an older ptft" in message
    assert "Delete it and pretrain again" in message and "\n" not in message


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        ({"format": FORMAT}, "config, state_dict, metadata missing or not a dictionary"),
        ({"format": FORMAT, "config": {}, "state_dict": {}, "metadata": 5}, "metadata missing or not a dictionary"),
        ({"format": FORMAT, "config": [1], "state_dict": {}, "metadata": {}}, "config missing or not a dictionary"),
        ({"format": FORMAT, "config": {}, "state_dict": {"w": 1}, "metadata": {}}, "not named tensors"),
        (
            {"format": FORMAT, "config": {"arch": "mlp", "hidden_dim": 10**9}, "state_dict": {}, "metadata": {}},
            "outside 0 to 65,536",
        ),
    ],
)
def test_a_crafted_checkpoint_is_one_line_in_the_cli(tmp_path, capsys, payload, said):
    from ptft_helpers import cli

    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    for command in ("evaluate", "finetune"):
        assert cli.main([command, str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err, err


def test_a_simclr_config_without_its_sizes_is_one_line(tmp_path, capsys):
    from ptft_helpers import cli
    from ptft_helpers.checkpoints import REQUIRED_METADATA

    payload = {"format": FORMAT, "config": {"arch": "smallconv"}, "state_dict": {}, "metadata": {}}
    payload["metadata"] = dict.fromkeys(REQUIRED_METADATA, 0) | {"dataset": "fashion-mnist"}
    torch.save(payload, tmp_path / "crafted.pt")
    assert cli.main(["evaluate", str(tmp_path / "crafted.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be read (KeyError" in err, err
