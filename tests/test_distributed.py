"""Data-parallel pretraining on CPUs, with the gloo backend: N processes started by torchrun train what one process
trains on the same global batches (``ptft_helpers.distributed``), for the autoencoder and for SimCLR.

The comparison runs in float64. In float32 the two differ by more than rounding after a few Adam steps: Adam moves
each weight by about the learning rate whatever the size of its gradient, so a gradient near zero whose sign
rounding flips moves a weight by up to twice the learning rate per step (notebook 10 shows it). In float64, rounding
is about 1e-16 relative and stays far below 1e-9 over these steps, so any real difference (a shard trained twice,
negatives not gathered, batch norm on a shard's statistics) shows. The float32 differences are written to
``test-artifacts/distributed.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptft_helpers.pretrained import load_or_pretrain

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
TOLERANCE = 1e-9  # float64, relative to each tensor's largest entry


def torchrun(processes: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PTFT_PROGRESS": "0", "PTFT_DEVICE": "cpu", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, cwd=REPO_ROOT)


def difference(a: dict, b: dict) -> float:
    return max(
        float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in a if b[k].is_floating_point()
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion_root):
    """What one, two and three processes saved, in float64 and (one and two processes) float32."""
    folder = tmp_path_factory.mktemp("ddp")
    env = {"PTFT_DATA": str(fashion_root)}
    out = {}
    for processes, dtype in ((1, "float64"), (2, "float64"), (3, "float64"), (1, "float32"), (2, "float32")):
        path = folder / f"{processes}-{dtype}.pt"
        if processes == 1:
            done = subprocess.run(
                [sys.executable, str(WORKER), "--out", str(path), "--dtype", dtype],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "OMP_NUM_THREADS": "1", "PTFT_DEVICE": "cpu", **env},
            )
        else:
            done = torchrun(processes, str(WORKER), "--out", str(path), "--dtype", dtype, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        out[processes, dtype] = torch.load(path, weights_only=True)
    record_differences(out)
    return out


def record_differences(runs: dict) -> None:
    """The largest relative differences from one process, in float64 and in float32, written to
    ``test-artifacts/distributed.json``, to look at. Not asserted in float32: any two Adam runs from
    the same start stay within 2 x steps x lr x 3.2 of each other, whatever their gradients (Kingma and Ba, 2015,
    section 2.1), so no float32 bound would tell a right implementation from a wrong one; float64 does (above)."""
    measured = {
        kind: {
            "float64, 2 and 3 processes": max(
                difference(runs[p, "float64"][kind]["state"], runs[1, "float64"][kind]["state"]) for p in (2, 3)
            ),
            "float32, 2 processes": difference(runs[2, "float32"][kind]["state"], runs[1, "float32"][kind]["state"]),
        }
        for kind in ("autoencoder", "simclr")
    }
    (REPO_ROOT / "test-artifacts").mkdir(exist_ok=True)
    (REPO_ROOT / "test-artifacts" / "distributed.json").write_text(json.dumps(measured, indent=1))


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("kind", ["autoencoder", "simclr", "autoencoder, empty shard", "simclr, empty shard"])
def test_several_processes_train_what_one_does(runs, processes, kind):
    one, many = runs[1, "float64"][kind], runs[processes, "float64"][kind]
    assert difference(many["state"], one["state"]) < TOLERANCE
    assert max(abs(a - b) for a, b in zip(many["loss"], one["loss"])) < TOLERANCE  # the whole batch's loss, per step
    assert len(one["loss"]) == len(many["loss"]) == 5  # four batches of 24 and a smaller last one
    assert "GlobalBatchNorm2d" not in many["modules"]  # the trained model is plain PyTorch again


def test_the_check_would_see_a_real_difference(runs):
    one = runs[1, "float64"]["autoencoder"]["state"]
    other = {k: v.clone() for k, v in one.items()}
    other["encoder.fc1.weight"][0, 0] += 1e-6 * one["encoder.fc1.weight"].abs().max()
    assert difference(other, one) > TOLERANCE


def test_a_torchrun_checkpoint_loads_in_notebook_code(tmp_path, fashion_root, monkeypatch):
    env = {"PTFT_DATA": str(fashion_root), "PTFT_CHECKPOINTS": str(tmp_path), "PTFT_FAST": "0"}  # no fast/ folder
    recipe = ["--epochs", "1", "--train-size", "256", "--batch-size", "64"]
    done = torchrun(2, "-m", "ptft_helpers", "pretrain", *recipe, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("Saved the checkpoint: ") and done.stdout.count("Saved the checkpoint") == 1
    monkeypatch.setenv("PTFT_DATA", str(fashion_root))
    monkeypatch.setenv("PTFT_CHECKPOINTS", str(tmp_path))
    monkeypatch.delenv("PTFT_FAST", raising=False)
    (saved,) = tmp_path.glob("*.pt")
    before = saved.stat().st_mtime_ns
    model, meta, path = load_or_pretrain(epochs=1, train_size=256, batch_size=64, progress=False)
    assert path == saved and saved.stat().st_mtime_ns == before  # found, not trained again
    assert meta["world_size"] == 2 and model(torch.zeros(1, 784)).shape == (1, 784)


@pytest.mark.parametrize(
    ("processes", "args", "expected"),
    [
        (2, ["--batch-size", "5"], "A global batch of 5 does not split evenly over 2 processes"),
        (3, ["--batch-size", "2"], "3 processes but a global batch of 2"),
    ],
)
def test_bad_setups_are_one_line(processes, args, expected, tmp_path, fashion_root):
    env = {"PTFT_DATA": str(fashion_root), "PTFT_CHECKPOINTS": str(tmp_path)}
    done = torchrun(processes, "-m", "ptft_helpers", "pretrain", "--epochs", "1", "--train-size", "64", *args, env=env)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("python -m ptft_helpers pretrain: error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-2000:]  # said once, by rank 0
    assert not list(tmp_path.glob("*.pt"))


def test_a_rank_that_cannot_see_rank_0s_checkpoint_says_so(tmp_path, fashion_root):
    # Two machines without a shared file system, played by two processes with a checkpoint folder each.
    script = tmp_path / "own_folder_per_rank.py"
    script.write_text(
        "import os, sys\n"
        "os.environ['PTFT_CHECKPOINTS'] = os.path.join(sys.argv[1], 'rank' + os.environ['RANK'])\n"
        "from ptft_helpers.cli import main\n"
        "sys.exit(main(['pretrain', '--epochs', '1', '--train-size', '64', '--batch-size', '32']))\n"
    )
    done = torchrun(2, str(script), str(tmp_path), env={"PTFT_DATA": str(fashion_root)})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("python -m ptft_helpers pretrain: error:")]
    assert len(errors) == 1 and "rank 1 cannot load the checkpoint that rank 0 has" in errors[0], done.stderr[-2000:]
    assert "shared file system" in errors[0]
    assert len(list((tmp_path / "rank0").rglob("*.pt"))) == 1 and not list((tmp_path / "rank1").rglob("*.pt"))


def test_a_missing_rendezvous_variable_is_one_line(tmp_path, fashion_root):
    env = {**os.environ, "PTFT_DATA": str(fashion_root), "RANK": "0", "WORLD_SIZE": "2"}
    for name in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "ptft_helpers", "pretrain", "--epochs", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not set" in done.stderr


def test_a_plain_run_is_one_process_even_where_a_cluster_sets_a_master(monkeypatch):
    from ptft_helpers.distributed import World

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "node0.example")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert World.start() is None


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    # The decision alone, on a machine that would have one GPU: the second process on it has none of its own.
    import ptft_helpers.distributed as distributed

    monkeypatch.setattr(distributed, "pick_device", lambda device=None: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"^2 processes on this machine but 1 GPU\(s\): .*PTFT_DEVICE=cpu"):
        distributed.World.start()
