"""The notebooks' second run, on other CPU kernels (docs/setup.md, "Testing"): which kernels, and which notebooks get it
inside the Colab and installed-package tests. The Makefile's test-kernels reads both from here (so there is one
list), and runs the other notebooks:

    python3 tests/second_run.py kernels     # e.g. ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ...
    python3 tests/second_run.py notebooks   # e.g. 00 01 02 05 06

Standard library only: make runs it with the system's Python.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# The notebooks that tests/test_colab.py runs as on Colab, and tests/test_installed.py as an installed package.
COLAB_NOTEBOOKS = ("00_setup_and_data.ipynb", "01_loss_math.ipynb", "02_building_the_autoencoder.ipynb")
INSTALLED_NOTEBOOKS = ("05_what_pretraining_bought.ipynb", "06_contrastive_pretraining.ipynb")


def other_kernels(cpuinfo: str) -> dict[str, str]:
    """On a CPU with AVX-512, an AVX2 CPU's kernels (what an AMD EPYC runs); on one without, PyTorch's plain C++
    kernels, with MKL and oneDNN held to AVX (no fused multiply-add)."""
    if re.search(r"\bavx512f\b", cpuinfo):
        return {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
    return {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX", "DNNL_MAX_CPU_ISA": "AVX"}


CPUINFO = Path("/proc/cpuinfo")
OTHER_KERNELS = other_kernels(CPUINFO.read_text() if CPUINFO.is_file() else "")

if __name__ == "__main__":
    if sys.argv[1:] == ["kernels"]:
        print(" ".join(f"{k}={v}" for k, v in OTHER_KERNELS.items()))
    elif sys.argv[1:] == ["notebooks"]:
        print(" ".join(name[:2] for name in (*COLAB_NOTEBOOKS, *INSTALLED_NOTEBOOKS)))
    else:
        sys.exit("usage: python3 tests/second_run.py {kernels,notebooks}")
