"""The benchmark's own helpers (FLOP count, reporting) and a tiny end-to-end run of the script.

Correctness only: nothing here asserts how fast anything is (the benchmark reports that).
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ptft_helpers.models import build_autoencoder
from ptft_helpers.vit import ViTConfig

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_training.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- FLOP count ----------------------------------------------------------------------------------


def test_step_flops_matches_a_hand_count(bench):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    layers = bench.linear_layers(model)
    assert layers == [(4, 3), (3, 2)]
    flops = bench.step_flops(layers, batch_size=5)
    # forward: 2*5*(4*3) + 2*5*(3*2) = 120 + 60
    assert flops["forward"] == 180
    # weight gradients: the same products again
    assert flops["backward_weight"] == 180
    # input gradients: the second layer only (the first layer's input is the data)
    assert flops["backward_input"] == 60
    assert flops["total"] == 420


def test_autoencoder_flops_per_image(bench):
    layers = bench.linear_layers(build_autoencoder())
    assert layers == [(784, 256), (256, 32), (32, 256), (256, 784)]
    macs = 784 * 256 + 256 * 32 + 32 * 256 + 256 * 784  # 417,792 multiply-adds per image and pass
    per_image = 2 * macs + 2 * macs + 2 * (macs - 784 * 256)
    assert per_image == 2_105_344
    assert bench.step_flops(layers, 1)["total"] == per_image
    assert bench.epoch_flops(layers, 60_000) == 60_000 * per_image


def test_epoch_flops_do_not_depend_on_the_batching(bench):
    layers = bench.linear_layers(build_autoencoder())
    batches = [128] * 468 + [96]  # 60,000 images at batch 128: the last batch is short
    assert sum(bench.step_flops(layers, b)["total"] for b in batches) == bench.epoch_flops(layers, 60_000)


def test_flop_count_refuses_models_it_cannot_count(bench):
    with pytest.raises(ValueError, match="nn.Linear layers only"):
        bench.linear_layers(build_autoencoder("conv"))


# --- measuring helpers ---------------------------------------------------------------------------


def test_matmul_rate_is_a_positive_rate(bench):
    assert bench.matmul_rate(64, repeats=1) > 0
    gemms = bench.model_gemm_rates(build_autoencoder(), batch_size=8, repeats=1)
    # 4 forward + 4 weight-gradient + 3 input-gradient GEMMs
    assert len(gemms["gemms"]) == 11 and gemms["gflops"] > 0 and gemms["step_ms"] > 0


def test_naive_and_helper_loops_do_the_same_steps(bench, fashion):
    images = fashion["train"].images[:300]

    class Pairs(torch.utils.data.Dataset):  # what torchvision's FashionMNIST + ToTensor() yields
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i].float().div(255).unsqueeze(0), 0

    naive = bench.naive_epoch(Pairs(), batch_size=128, seed=0)
    helper = bench.helper_epoch(images, batch_size=128, seed=0)
    assert naive["steps"] == helper["steps"] == 3
    assert math.isfinite(naive["loss"]) and math.isfinite(helper["loss"])
    assert naive["loss"] == pytest.approx(helper["loss"], rel=0.2)  # same model, data and optimizer


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_throughput_code_path_runs_on_the_cpu(bench, fashion, precision):
    # The GPU section's step, run on the CPU in eager mode so that its code is exercised here too.
    row = bench.bench_throughput(
        fashion["train"].images[:256],
        torch.device("cpu"),
        batch_size=32,
        precision=precision,
        mode="eager",
        steps=2,
        repeats=1,
    )
    assert row["images_per_second"] > 0 and math.isfinite(row["loss"])
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        bench.bench_throughput(
            fashion["train"].images[:256],
            torch.device("cpu"),
            batch_size=32,
            precision=precision,
            mode="cuda-graph",
            steps=2,
            repeats=1,
        )


def test_report_prints_a_gpu_section(bench, capsys):
    results = json.loads(json.dumps(FAKE_RESULTS))
    bench.report(results)
    out = capsys.readouterr().out
    assert "GPU training throughput on Fake GPU" in out
    assert "failed" in out and "20-epoch pretrain run" in out
    assert "speedup: 4.0x" in out and "about 38 s" in out
    md = bench.markdown(results)
    assert "| **speedup** | **4.0x** |" in md and "| 512 | 126.3 | 2.00 | 63.2 | **63%** | 79% |" in md
    assert "| fp32 eager | 1,000,000 |" in md and "| bf16 compile | failed |" in md and "**10.0 s**" in md


# --- the script, end to end ----------------------------------------------------------------------


def test_script_runs_end_to_end_and_writes_json(fashion_root, tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "PTFT_DATA": str(fashion_root), "PTFT_PROGRESS": "0"}
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--repeats",
            "1",
            "--images",
            "512",
            "--no-gpu",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device: measuring the CPU only" in result.stdout
    assert "speedup" in result.stdout and "% of peak" in result.stdout
    assert "| **speedup** |" in result.stdout  # printed as the README's Markdown

    results = json.loads(out.read_text())
    assert {"machine", "settings", "matmul", "naive_vs_helper", "limit", "profile", "gpu", "targets"} <= results.keys()
    assert results["machine"]["cpu"] and results["machine"]["torch"] == torch.__version__
    assert results["machine"]["torch_threads"] >= 1
    assert results["matmul"]["peak_gflops"] > 0
    assert [g["batch_size"] for g in results["matmul"]["model_gemms"]] == [128, 512]
    nv = results["naive_vs_helper"]
    assert nv["images"] == 512 and nv["steps"] == 4 and nv["batch_size"] == 128
    assert len(nv["naive_seconds"]) == len(nv["helper_seconds"]) == 1
    assert nv["speedup"] == pytest.approx(nv["naive_median"] / nv["helper_median"])
    assert [r["batch_size"] for r in results["limit"]] == [128, 512]
    for row in results["limit"]:
        assert row["epoch_flops"] == 512 * 2_105_344
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / results["matmul"]["peak_gflops"])
    assert set(results["profile"]["share"]) and sum(results["profile"]["share"].values()) == pytest.approx(1, abs=0.01)
    assert results["gpu"] is None  # --no-gpu
    assert set(results["targets"]) == {"speedup_at_least_3x", "batch512_at_least_60pct_of_peak"}


def test_options(bench, capsys):
    quick = bench.parse_args(["--quick"])
    assert quick.repeats == 2 and quick.images == 4096 and quick.json == bench.DEFAULT_JSON
    full = bench.parse_args([])
    assert full.repeats == 5 and full.images is None
    for bad in (["--repeats", "0"], ["--images", "100"]):
        with pytest.raises(SystemExit) as exit_:
            bench.parse_args(bad)
        assert exit_.value.code == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


FAKE_RESULTS = {
    "machine": {
        "cpu": "Fake CPU",
        "cpus_usable": 2,
        "cpu_capability": "AVX2",
        "blas": "MKL",
        "torch": "2.x",
        "torch_threads": 2,
        "python": "3.11",
        "cuda": {"name": "Fake GPU", "memory_gib": 80.0, "cuda_version": "12"},
    },
    "matmul": {
        "square": [{"n": 1024, "gflops": 100.0}],
        "peak_gflops": 100.0,
        "model_gemms": [
            {"batch_size": 512, "gemms": [{"gemm": "fwd", "ms": 1.0, "gflops": 80.0}], "step_ms": 1.0, "gflops": 80.0}
        ],
    },
    "naive_vs_helper": {
        "batch_size": 128,
        "images": 60000,
        "steps": 469,
        "naive_seconds": [8.0],
        "helper_seconds": [2.0],
        "helper_epoch_seconds": [1.9],
        "naive_median": 8.0,
        "helper_median": 2.0,
        "speedup": 4.0,
        "naive_loss": 0.03,
        "helper_loss": 0.03,
    },
    "limit": [
        {
            "batch_size": 512,
            "epoch_flops": 126_320_640_000,
            "epoch_median": 2.0,
            "gflops": 63.2,
            "fraction_of_peak": 0.632,
            "fraction_of_model_gemms": 0.79,
        }
    ],
    "profile": None,
    "gpu": {
        "device": "Fake GPU",
        "throughput": [
            {
                "batch_size": 256,
                "precision": "fp32",
                "mode": "eager",
                "images_per_second": 1e6,
                "ms_per_step": 0.256,
                "setup_seconds": 0.1,
            },
            {"batch_size": 256, "precision": "bf16", "mode": "compile", "error": "RuntimeError: no compiler"},
        ],
        "pretrain_run": {
            "epochs": 20,
            "batch_size": 128,
            "images": 60000,
            "seconds": 10.0,
            "epoch_seconds_median": 0.5,
            "final_loss": 0.01,
        },
    },
    "targets": {"speedup_at_least_3x": True, "batch512_at_least_60pct_of_peak": True},
    "benchmark_seconds": 1.0,
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check itself runs (minutes)")
def test_the_gpu_check_says_in_one_line_that_it_needs_a_gpu():
    done = subprocess.run(["bash", str(SCRIPT.parent / "gpu_check.sh")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip() == "gpu_check: no CUDA GPU here; run it on a machine with one"


def run_benchmark(name: str, args: list[str], fashion_root: Path, out: Path) -> tuple[dict, str]:
    """Run benchmarks/``name`` on the CPU with ``args``; return the JSON it wrote to ``out`` and what it printed."""
    env = {**os.environ, "PTFT_DATA": str(fashion_root), "PTFT_PROGRESS": "0"}
    command = [sys.executable, str(SCRIPT.parent / name), *args, "--device", "cpu", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text()), result.stdout


def test_the_vit_benchmark_runs_end_to_end(fashion_root, tmp_path):
    record, printed = run_benchmark(
        "bench_vit.py", ["--steps", "2", "--repeats", "1", "--batch-size", "16"], fashion_root, tmp_path / "vit.json"
    )
    assert set(record["runs"]) == {
        f"{who}, {kind}" for who in ("by hand", "Hugging Face") for kind in ("train step", "forward")
    }
    assert all(len(rates) == 1 and rates[0] > 0 for rates in record["runs"].values())
    assert record["flops"] > 0 and record["peak"] > 0 and "images/s by hand" in record["summary"]
    assert "by hand / Hugging Face" in printed


def test_the_lora_benchmark_counts_what_each_method_trains(fashion_root, tmp_path):
    record, printed = run_benchmark(
        "bench_lora.py",
        ["--steps", "1", "--rounds", "2", "--batch-size", "8", "--ranks", "2"],
        fashion_root,
        tmp_path / "lora.json",
    )
    runs = record["runs"]
    assert list(runs) == ["full fine-tuning", "LoRA r=2"]
    width, layers, classes = ViTConfig().width, ViTConfig().depth, 10  # LoRA on W_q and W_v of each layer, the head
    head = width * classes + classes
    assert runs["LoRA r=2"]["trainable"] == layers * 2 * 2 * (width + width) + head
    assert all(run["seconds_per_step"] > 0 and run["peak_bytes"] is None for run in runs.values())  # CPU: no peak
    assert record["summary"].startswith("LoRA step time / full: r=2 ") and "not measured (CPU)" in printed
