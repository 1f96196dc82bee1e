"""Shared helpers for the unit tests: writing real IDX files, and data folders that hold Fashion-MNIST.

The fixtures built on them (``fashion_root``, ``fashion``, ``data_env``) are in ``conftest.py``.

IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian int32 magic number, 0x00000803 for
uint8 images and 0x00000801 for uint8 labels, then one big-endian int32 per dimension, then the
bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import struct
from pathlib import Path

import torch

from ptft_helpers import data

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """A uint8 tensor (N, 28, 28) or (N,) as the bytes of an IDX file."""
    tensor = tensor.to(torch.uint8).contiguous()
    magic = IMAGES_MAGIC if tensor.dim() == 3 else LABELS_MAGIC
    header = struct.pack(">i", magic) + struct.pack(f">{tensor.dim()}i", *tensor.shape)
    return header + tensor.numpy().tobytes()


def tiny_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random uint8 images (n, 28, 28) and labels cycling through the 10 classes."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return images, labels


def write_idx_dataset(folder: Path, *, n_train: int = 30, n_test: int = 20, gz: bool = False, seed: int = 0) -> dict:
    """Write the four IDX files (gzipped with ``gz``) into ``folder``; return what was written.

    The result is ``{"train": (images, labels), "test": (images, labels)}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = {"train": tiny_split(n_train, seed), "test": tiny_split(n_test, seed + 1)}
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    for split, (images, labels) in written.items():
        for name, tensor in zip(names[split], (images, labels)):
            blob = idx_bytes(tensor)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
    return written


@functools.lru_cache(maxsize=1)
def real_fashion_raw() -> Path:
    """The folder holding the real, uncompressed Fashion-MNIST IDX files (prepared like ``make data``).

    Found once, before any test points ``PTFT_DATA`` elsewhere: the data folder, else the system copy
    or a download, exactly as ``make data`` would get them.
    """
    data.prepare("fashion-mnist", allow_apt=False)
    return data.raw_folder("fashion-mnist")


def link_fashion(root: Path) -> Path:
    """Make ``root`` a data folder whose FashionMNIST/raw files are symlinks to the real ones."""
    source = real_fashion_raw()
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in data.IDX_FILES:
        (raw / name).symlink_to(source / name)
    return root


def expect_written(monkeypatch, name: str, written: dict, gz_folder: Path | None = None) -> None:
    """Make ``data`` expect the tiny files ``written`` (``write_idx_dataset``'s result) for dataset ``name``.

    The published sizes and checksums cannot match tiny test files, so a test injects the table its own
    files must match (sizes from their counts, SHA-256 of their bytes, MD5 of the .gz files in ``gz_folder``);
    the checks themselves are the real ones.
    """
    info = data.dataset_info(name)
    tensors = dict(zip(data.IDX_FILES, [*written["train"], *written["test"]]))
    specs = []
    for file_name, tensor in tensors.items():
        md5 = (hashlib.md5((gz_folder / f"{file_name}.gz").read_bytes()).hexdigest(),) if gz_folder else ()
        specs.append(data.IdxFile(file_name, len(tensor), md5, hashlib.sha256(idx_bytes(tensor)).hexdigest()))
    monkeypatch.setitem(data.DATASETS, info.name, dataclasses.replace(info, files=tuple(specs)))
