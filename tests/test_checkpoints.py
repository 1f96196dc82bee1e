"""Saving and loading checkpoints: round trips, damaged files, atomic writes, load_or_pretrain."""

import fractions
import os
import platform

import pytest
import torch
import torchvision
from torch import nn

import ptft_helpers
from ptft_helpers import checkpoints
from ptft_helpers.checkpoints import (
    default_checkpoint_path,
    load_autoencoder,
    load_checkpoint,
    load_or_pretrain,
    load_weights,
    save_checkpoint,
)
from ptft_helpers.models import build_autoencoder


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
    path = save_checkpoint(model, tmp_path / "sub" / "ae.pt", dataset="fashion-mnist", epochs=3, note="hi")
    assert path == tmp_path / "sub" / "ae.pt" and path.is_file()
    assert leftovers(path.parent, keep="ae.pt") == []  # no temporary file left
    loaded, meta = load_autoencoder(path)
    assert loaded.config == model.config
    assert same_weights(loaded, model)
    assert not same_weights(loaded, build_autoencoder(arch, **kwargs))
    assert meta["dataset"] == "fashion-mnist" and meta["epochs"] == 3 and meta["note"] == "hi"
    assert meta["versions"] == {"torch": torch.__version__, "torchvision": torchvision.__version__,
                                "ptft_helpers": ptft_helpers.__version__, "python": platform.python_version()}
    payload = load_checkpoint(path)
    assert payload["format"] == checkpoints.FORMAT and payload["config"] == model.config


def test_loading_into_another_shape_names_the_sizes(tmp_path):
    path = save_checkpoint(trained_looking(), tmp_path / "ae.pt")
    payload = load_checkpoint(path)
    other = build_autoencoder(latent_dim=16)
    with pytest.raises(ValueError) as info:
        load_weights(other, payload, "ae.pt")
    message = str(info.value)
    assert "latent_dim: checkpoint 32, model 16" in message
    assert "hidden_dim" not in message  # only the sizes that differ


def test_loading_into_a_model_without_config_names_the_tensors(tmp_path):
    path = save_checkpoint(trained_looking(latent_dim=16), tmp_path / "ae.pt")
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
    full = save_checkpoint(trained_looking(), tmp_path / "full.pt").read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(full[: len(full) // 2])
    _assert_corrupt_message(path)


def test_file_that_weights_only_refuses(tmp_path):
    # A pickled object of a class torch.load(weights_only=True) does not allow: never unpickled.
    path = tmp_path / "pickle.pt"
    torch.save({"format": checkpoints.FORMAT, "config": {}, "state_dict": {}, "metadata": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match="not a ptft checkpoint"):
        load_checkpoint(path)


def test_other_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_autoencoder().state_dict(), path)  # a bare state dict: loads, but is not ours
    with pytest.raises(ValueError, match="is not a ptft checkpoint"):
        load_checkpoint(path)


def test_failed_save_leaves_the_old_checkpoint_untouched(tmp_path):
    path = save_checkpoint(trained_looking(seed=1), tmp_path / "ae.pt", note="old")
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(trained_looking(seed=2), path, note=lambda: "cannot be pickled")
    assert path.read_bytes() == before
    assert leftovers(tmp_path, keep="ae.pt") == []
    model, meta = load_autoencoder(path)
    assert meta["note"] == "old" and same_weights(model, trained_looking(seed=1))


def test_failed_first_save_leaves_nothing(tmp_path):
    with pytest.raises(Exception):
        save_checkpoint(trained_looking(), tmp_path / "ae.pt", note=lambda: None)
    assert list(tmp_path.iterdir()) == []


# --- load_or_pretrain --------------------------------------------------------------------------

TINY = {"epochs": 1, "train_size": 500}


def test_load_or_pretrain_trains_saves_then_loads(data_env):
    model, meta = load_or_pretrain(progress=False, **TINY)
    path = data_env / "checkpoints" / "fashion-mnist-mlp-256-32-plain-e1-n500-s0.pt"
    assert path.is_file()
    assert [p.name for p in (data_env / "checkpoints").iterdir()] == [path.name]
    assert meta["dataset"] == "fashion-mnist" and meta["epochs"] == 1 and meta["train_size"] == 500
    assert meta["history"]["epoch"] == [1] and meta["final_test_loss"] == meta["history"]["test_loss"][-1]
    assert 0 < meta["final_train_loss"] < 0.2
    assert "step_loss" not in meta["history"]
    stamp = path.stat().st_mtime_ns

    again, meta_again = load_or_pretrain(progress=False, **TINY)
    assert path.stat().st_mtime_ns == stamp  # loaded, not trained and saved again
    assert same_weights(again, model) and meta_again["final_test_loss"] == meta["final_test_loss"]
    assert meta_again["history"] == meta["history"]


def test_load_or_pretrain_retrains_when_the_settings_differ(data_env):
    path = data_env / "ae.pt"
    model, _ = load_or_pretrain(path=path, progress=False, **TINY)
    other, meta = load_or_pretrain(path=path, seed=1, progress=False, **TINY)  # same file, another seed
    assert meta["seed"] == 1 and load_checkpoint(path)["metadata"]["seed"] == 1
    assert not same_weights(model, other)


def test_fast_mode_keeps_checkpoints_apart(data_env, monkeypatch):
    args = ("fashion-mnist", "mlp", 256, 32, "plain", 1, 500, 0)
    assert default_checkpoint_path(*args).parent == data_env / "checkpoints"
    monkeypatch.setenv("PTFT_FAST", "1")
    assert default_checkpoint_path(*args).parent == data_env / "checkpoints" / "fast"
    assert checkpoints.pretrain_settings()["epochs"] < 20
    monkeypatch.setenv("PTFT_FAST", "0")
    assert default_checkpoint_path(*args).parent == data_env / "checkpoints"


def test_load_or_pretrain_rejects_bad_settings(data_env):
    with pytest.raises(ValueError, match="Unknown pretraining setting.*'epoch'"):
        load_or_pretrain(epoch=1)
    with pytest.raises(ValueError, match="train_size must be between 1 and 60000"):
        load_or_pretrain(epochs=1, train_size=60001, progress=False)
    with pytest.raises(ValueError, match="latent_dim"):
        load_or_pretrain(latent_dim=0, **TINY)
    assert not (data_env / "checkpoints").exists()
