"""How many threads should each kernel use when a class shares a few cores? (docs/classroom.md)

Starts N copies of the same training job at once (one epoch of autoencoder pretraining on the first
30,000 Fashion-MNIST images, on the CPU), each with ``OMP_NUM_THREADS`` = 1 or 2, and reports how
long each copy's training took (mean and slowest) and the wall time of the batch. N copies stand for
N students pressing Run at the same moment.

    .venv/bin/python benchmarks/bench_threads.py                  # 1, 2 and 4 copies (10 min on our busy 2 cores)
    .venv/bin/python benchmarks/bench_threads.py --copies 1 2 4 8 --images 10000

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

JOB = """
import time, torch
from ptft_helpers.data import load
from ptft_helpers.models import build_autoencoder
from ptft_helpers.training import pretrain
images = load("fashion-mnist", "train").images[:{images}]
torch.manual_seed(0)
start = time.perf_counter()
pretrain(build_autoencoder(), images, epochs=1, device="cpu", progress=False)
print(time.perf_counter() - start)
"""


def run_batch(copies: int, threads: int, images: int) -> dict:
    """Start ``copies`` jobs at once with ``threads`` threads each; their training times and the wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", JOB.format(images=images)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(copies)
    ]
    seconds = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"A training copy failed (exit code {proc.returncode}).")
        seconds.append(float(out.strip().splitlines()[-1]))
    return {
        "copies": copies,
        "threads": threads,
        "mean_s": statistics.fmean(seconds),
        "max_s": max(seconds),
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4], help="how many jobs run at once")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="OMP_NUM_THREADS per job")
    parser.add_argument("--images", type=int, default=30_000, help="training images per job (one epoch)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; one epoch on {args.images} images per copy")
    print(f"{'copies':>6} {'threads':>7} {'training s (mean)':>18} {'(slowest)':>10} {'wall s':>7}")
    for copies in args.copies:
        for threads in args.threads:
            r = run_batch(copies, threads, args.images)
            print(f"{copies:>6} {threads:>7} {r['mean_s']:>18.2f} {r['max_s']:>10.2f} {r['wall_s']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
