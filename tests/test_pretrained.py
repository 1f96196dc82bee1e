"""load_or_pretrain: train once, then load; where checkpoints are looked for and saved; read-only shared
data folders; two processes pretraining the same checkpoint at once."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptft_helpers import pretrained, settings
from ptft_helpers.checkpoints import load_autoencoder, load_checkpoint, load_pretrained
from ptft_helpers.data import load
from ptft_helpers.mae import mae_settings, masked_loss
from ptft_helpers.pretrained import Pretrained, default_checkpoint_path, load_or_pretrain
from ptft_helpers.protocol import protocol
from ptft_helpers.vit import MaskedAutoencoder, ViTConfig

from helpers_idx import link_fashion

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in

TINY = {"epochs": 1, "train_size": 500}
TINY_ARGS = ["--epochs", "1", "--train-size", "500"]
NAME = "fashion-mnist-mlp-256-32-plain-e1-n500-s0.pt"


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh home folder (so the per-user cache is in tmp_path), no PTFT_CHECKPOINTS, no XDG_CACHE_HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("PTFT_CHECKPOINTS", raising=False)
    return home


def test_trains_saves_then_loads(data_env, home):
    model, meta, path = result = load_or_pretrain(progress=False, **TINY)
    assert isinstance(result, Pretrained) and result.path == path
    assert path == data_env / "checkpoints" / NAME and path.is_file()
    assert visible(data_env / "checkpoints") == [NAME]
    assert meta["dataset"] == "fashion-mnist" and meta["epochs"] == 1 and meta["train_size"] == 500
    assert meta["history"]["epoch"] == [1] and meta["final_test_loss"] == meta["history"]["test_loss"][-1]
    assert 0 < meta["final_train_loss"] < 0.2
    assert "step_loss" not in meta["history"]
    assert not (home / ".cache").exists()  # the data folder was writable: nothing in the per-user cache
    stamp = path.stat().st_mtime_ns

    again, meta_again, path_again = load_or_pretrain(progress=False, **TINY)
    assert path_again == path and path.stat().st_mtime_ns == stamp  # loaded, not trained and saved again
    assert same_weights(again, model) and meta_again["history"] == meta["history"]
    assert default_checkpoint_path("fashion-mnist", "mlp", 256, 32, "plain", 1, 500, 0) == path


def test_the_global_random_state_is_left_alone(data_env, home):
    state = torch.random.get_rng_state()
    load_or_pretrain(progress=False, **TINY)  # trains
    assert torch.equal(torch.random.get_rng_state(), state)
    load_or_pretrain(progress=False, **TINY)  # loads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_retrains_when_the_settings_differ(data_env, home):
    path = data_env / "ae.pt"
    model, _, _ = load_or_pretrain(path=path, progress=False, **TINY)
    other, meta, used = load_or_pretrain(path=path, seed=1, progress=False, **TINY)  # same file, another seed
    assert used == path and meta["seed"] == 1 and load_checkpoint(path)["metadata"]["seed"] == 1
    assert not same_weights(model, other)


def test_fast_mode_keeps_checkpoints_apart(data_env, home, monkeypatch):
    args = ("fashion-mnist", "mlp", 256, 32, "plain", 1, 500, 0)
    assert default_checkpoint_path(*args).parent == data_env / "checkpoints"
    monkeypatch.setenv("PTFT_FAST", "1")
    assert default_checkpoint_path(*args).parent == data_env / "checkpoints" / "fast"
    assert pretrained.pretrain_settings()["epochs"] < 20
    monkeypatch.setenv("PTFT_FAST", "0")
    assert default_checkpoint_path(*args).parent == data_env / "checkpoints"


def test_simclrs_sizes_have_names_that_say_what_they_hold(data_env, home):
    # channels and projection_dim name the same checkpoint as the old hidden_dim and latent_dim: its file stays.
    recipe = {"epochs": 1, "train_size": 64, "batch_size": 32, "progress": False}
    named = load_or_pretrain(pretext="simclr", arch="smallconv", channels=4, projection_dim=8, **recipe)
    old = load_or_pretrain(pretext="simclr", arch="smallconv", hidden_dim=4, latent_dim=8, **recipe)
    assert named.path == old.path and named.path.name.startswith("fashion-mnist-smallconv-4-8-simclr-")
    assert same_weights(named.model, old.model)
    with pytest.raises(ValueError, match="projection_dim sizes SimCLR's projection head"):
        load_or_pretrain(pretext="plain", arch="smallconv", projection_dim=8, **recipe)
    with pytest.raises(ValueError, match="replace hidden_dim"):
        load_or_pretrain(arch="mlp", channels=4, **recipe)


def test_the_conv_autoencoder_control_gets_simclrs_budget(data_env, home, monkeypatch):
    from ptft_helpers.contrastive import contrastive_settings

    monkeypatch.setenv("PTFT_FAST", "1")  # SimCLR's fast-mode recipe: 2 epochs
    control = load_or_pretrain(pretext="plain", arch="smallconv", channels=4, train_size=64, progress=False)
    budget = {k: v for k, v in contrastive_settings().items() if k != "temperature"}
    assert {k: control.metadata[k] for k in budget} == {**budget, "train_size": 64}
    assert "temperature" not in control.metadata
    assert control.path.name == f"fashion-mnist-smallconv-4-256-plain-e{budget['epochs']}-n64-s0.pt"  # 4 x 64 numbers
    assert control.model.encoder.config == {"arch": "smallconv", "channels": 4}
    with pytest.raises(ValueError, match="code is 64 x channels = 256 numbers, not 32"):
        load_or_pretrain(pretext="plain", arch="smallconv", channels=4, latent_dim=32, train_size=64)
    options = pretrained.series_encoders()
    simclr = next(o for o in options if o["pretext"] == "simclr")
    assert {"pretext": "plain", "arch": "smallconv", "channels": simclr["channels"]} in options


MAE_TINY = {"arch": "vit", "pretext": "mae", "epochs": 1, "train_size": 256, "batch_size": 64, "progress": False}


def test_the_masked_autoencoder_trains_saves_then_loads(data_env, home):
    mae, meta, path = load_or_pretrain(**MAE_TINY)
    assert isinstance(mae, MaskedAutoencoder) and mae.vit_config == ViTConfig()
    assert path == data_env / "checkpoints" / "fashion-mnist-vit-w128-p7-mae-e1-n256-s0.pt"
    assert meta["weight_decay"] == mae_settings()["weight_decay"] and meta["batch_size"] == 64
    assert meta["history"]["epoch"] == [1] and "step_loss" not in meta["history"]
    test_loss = masked_loss(mae, load("fashion-mnist", "test").images)  # the same masks as the check after epoch 1
    assert meta["final_test_loss"] == meta["history"]["test_loss"][-1] == pytest.approx(test_loss, rel=1e-6)
    stamp = path.stat().st_mtime_ns
    again = load_or_pretrain(**MAE_TINY)
    assert again.path == path and path.stat().st_mtime_ns == stamp and same_weights(again.model, mae)
    assert same_weights(load_pretrained(path)[0], mae)
    other = load_or_pretrain(**MAE_TINY, seed=1)
    assert other.path.name.endswith("-s1.pt") and not same_weights(other.model, mae)


def test_the_masked_autoencoder_is_a_series_encoder_and_takes_only_its_options(data_env, home):
    runs = [o["seed"] for o in pretrained.series_encoders() if o["pretext"] == "mae" and o["arch"] == "vit"]
    assert runs == list(range(protocol().pretrain_runs))
    with pytest.raises(ValueError, match="The 'mae' pretext trains the 'vit' architecture and only it"):
        load_or_pretrain(pretext="mae", epochs=1)
    with pytest.raises(ValueError, match="The 'mae' pretext trains the 'vit' architecture and only it"):
        load_or_pretrain(arch="vit", epochs=1)
    with pytest.raises(ValueError, match="The ViT's sizes are vit.ViTConfig\\(\\)'s"):
        load_or_pretrain(**{**MAE_TINY, "latent_dim": 8})
    with pytest.raises(ValueError, match="channels size a conv encoder"):
        load_or_pretrain(**MAE_TINY, channels=4)
    with pytest.raises(ValueError, match="Unknown pretraining setting.*'temperature'"):
        load_or_pretrain(**MAE_TINY, temperature=0.5)
    assert not (data_env / "checkpoints").exists()


def test_rejects_bad_settings(data_env, home):
    with pytest.raises(ValueError, match="Unknown pretraining setting.*'epoch'"):
        load_or_pretrain(epoch=1)
    with pytest.raises(ValueError, match="train_size must be a whole number between 1 and 60000"):
        load_or_pretrain(epochs=1, train_size=60001, progress=False)
    with pytest.raises(ValueError, match="latent_dim"):
        load_or_pretrain(latent_dim=0, **TINY)
    assert not (data_env / "checkpoints").exists()


def test_ptft_checkpoints_comes_first(data_env, home, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    monkeypatch.setenv("PTFT_CHECKPOINTS", str(mine))
    assert settings.checkpoint_dirs() == [mine, data_env / "checkpoints", home / ".cache" / "ptft" / "checkpoints"]
    _, _, path = load_or_pretrain(progress=False, **TINY)
    assert path == mine / NAME and not (data_env / "checkpoints").exists()
    # A checkpoint in the data folder is still found when PTFT_CHECKPOINTS has none.
    monkeypatch.delenv("PTFT_CHECKPOINTS")
    shutil.move(path, tmp_path / "elsewhere.pt")
    _, _, shared = load_or_pretrain(progress=False, **TINY)
    assert shared == data_env / "checkpoints" / NAME
    monkeypatch.setenv("PTFT_CHECKPOINTS", str(mine))
    assert load_or_pretrain(progress=False, **TINY).path == shared  # found, not trained again into mine/
    assert not (mine / NAME).exists()


def test_a_checkpoint_in_the_xdg_cache_home_is_found(data_env, home, tmp_path, monkeypatch):
    trained = load_or_pretrain(progress=False, **TINY)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = tmp_path / "xdg" / "ptft" / "checkpoints" / NAME
    cached.parent.mkdir(parents=True)
    shutil.move(trained.path, cached)
    found = load_or_pretrain(progress=False, **TINY)
    assert found.path == cached and same_weights(found.model, trained.model)  # found there, not trained again
    assert not trained.path.exists() and not (home / ".cache").exists()


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_bad_ptft_checkpoints_and_switches(monkeypatch, tmp_path, value):
    monkeypatch.setenv("PTFT_FAST", value)
    with pytest.raises(ValueError, match=f"PTFT_FAST='{value}' is not a switch value"):
        pretrained.pretrain_settings()
    monkeypatch.delenv("PTFT_FAST")
    a_file = tmp_path / "file"
    a_file.write_text("")
    monkeypatch.setenv("PTFT_CHECKPOINTS", str(a_file))
    with pytest.raises(ValueError, match="PTFT_CHECKPOINTS=.* is a file, not a folder"):
        settings.checkpoint_dirs()


# --- a read-only shared data folder, as a student sees it -------------------------------------


def student(read_only: Path, home: Path):
    """A command prefix that runs as a student for whom ``read_only`` cannot be written.

    As root, permissions do not stop writes, so the folder is made a read-only mount in a private
    mount namespace (``unshare -m``): writes there fail with "Read-only file system", as on a shared
    mount. As any other user, ``chmod`` is enough (the folder is made read-only by the caller).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PTFT_", "XDG_CACHE"))}
    env.update(HOME=str(home), PTFT_DATA=str(read_only), PTFT_PROGRESS="0", PYTHONPATH=str(REPO_ROOT))
    if os.geteuid() != 0:
        return [], env
    if not shutil.which("unshare"):
        pytest.fail("running as root without `unshare`: cannot make a folder read-only for this test")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(read_only)], env


def run_student(prefix, env, *args, cwd=None):
    return subprocess.run([*prefix, *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.fixture
def shared_install(tmp_path, monkeypatch):
    """A teacher's data folder with Fashion-MNIST and one pretrained checkpoint, then made read-only."""
    root = link_fashion(tmp_path / "shared")
    monkeypatch.setenv("PTFT_DATA", str(root))
    monkeypatch.delenv("PTFT_FAST", raising=False)
    monkeypatch.delenv("PTFT_CHECKPOINTS", raising=False)
    load_or_pretrain(progress=False, **TINY)  # the teacher pretrains once
    for folder in (root, root / "checkpoints"):
        folder.chmod(0o555)
    yield root
    for folder in (root, root / "checkpoints"):
        folder.chmod(0o755)


def test_read_only_data_folder_works_for_a_student(shared_install, tmp_path):
    home = tmp_path / "student-home"
    home.mkdir()
    prefix, env = student(shared_install, home)
    before = sorted(str(p.relative_to(shared_install)) for p in shared_install.rglob("*"))
    # The wrapper really makes the folder read-only: writing there fails.
    probe = run_student(prefix, env, sys.executable, "-c", f"open({str(shared_install / 'x')!r}, 'w')")
    assert probe.returncode != 0 and ("Read-only" in probe.stderr or "Permission denied" in probe.stderr)

    python = [sys.executable, "-m", "ptft_helpers"]
    found = run_student(prefix, env, *python, "pretrain", *TINY_ARGS, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    # Paths are printed relative to the current folder (here tmp_path).
    assert found.stdout.splitlines()[0] == f"Found the checkpoint: {Path('shared', 'checkpoints', NAME)}"

    trained = run_student(prefix, env, *python, "pretrain", *TINY_ARGS, "--seed", "1", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    mine = home / ".cache" / "ptft" / "checkpoints" / NAME.replace("-s0", "-s1")
    assert trained.stdout.splitlines()[0] == f"Saved the checkpoint: {mine.relative_to(tmp_path)}"
    assert mine.is_file()
    printed = trained.stdout.splitlines()[0].split(": ", 1)[1]
    evaluated = run_student(prefix, env, *python, "evaluate", printed, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["mse"] > 0
    assert sorted(str(p.relative_to(shared_install)) for p in shared_install.rglob("*")) == before


# --- two processes, one checkpoint ---------------------------------------------------------------


def _first_line_starting(stream, prefix: str) -> str:
    """Read ``stream`` up to the first line that starts with ``prefix``; return it ('' at the end of the stream)."""
    for line in stream:
        if line.startswith(prefix):
            return line
    return ""


def test_two_processes_pretraining_one_checkpoint(data_env, home, tmp_path):
    out = tmp_path / "shared.pt"
    env = {**os.environ, "PTFT_PROGRESS": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("CI", None)
    # Hold the lock ourselves until both processes wait for it, then let them race for it.
    lock = out.parent / f".{out.name}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "ptft_helpers", "pretrain", *TINY_ARGS, "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        waiting = [_first_line_starting(proc.stderr, "Waiting") for proc in procs]
        fcntl.flock(handle, fcntl.LOCK_UN)
    results = [(proc.wait(timeout=300), proc.stdout.read(), proc.stderr.read()) for proc in procs]
    assert all(line.startswith(f"Waiting for another process that is training {out.name}") for line in waiting), waiting
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert json.loads(stdout.splitlines()[-1])["checkpoint"] == str(out)
    trained = [stderr for _, _, stderr in results if "pretrain" in stderr]  # the progress bar: only the trainer's
    assert len(trained) == 1, [stderr for _, _, stderr in results]
    model, meta = load_autoencoder(out)
    assert meta["train_size"] == 500
    assert same_weights(model, load_or_pretrain(path=out, **TINY).model)
    assert not any(p.name.endswith(".tmp") for p in out.parent.iterdir())


def test_an_unwritable_path_is_a_one_line_error(data_env, home, tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/ptft-cannot-write/ae.pt")  # no permission bits can stop root; /proc can
    else:
        target = tmp_path / "ro" / "ae.pt"
        target.parent.mkdir()
        target.parent.chmod(0o555)
    with pytest.raises(PermissionError, match="Cannot save the checkpoint .* Save it in a folder you can write"):
        load_or_pretrain(path=target, progress=False, **TINY)


def test_the_lock_file_is_beside_the_checkpoint_or_in_the_cache(home, tmp_path):
    assert pretrained._lock_file(tmp_path / "a.pt") == tmp_path / ".a.pt.lock"
    elsewhere = pretrained._lock_file(Path("/proc/nowhere/a.pt"))
    assert elsewhere.parent == home / ".cache" / "ptft" / "locks" and elsewhere.name.startswith("a.pt.")
