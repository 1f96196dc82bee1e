"""Loading Fashion-MNIST and MNIST through torchvision, offline first.

Files are looked for in this order (see ``prepare``):

1. the project's data folder (``data/`` or ``$PTFT_DATA``), in torchvision's layout;
2. a system copy of gzip IDX files (Debian's ``dataset-fashion-mnist`` package puts
   them in ``/usr/share/datasets/fashion-mnist/``), decompressed into the data folder;
3. torchvision's own download;
4. on a Debian machine where we are root, ``apt-get install dataset-fashion-mnist``.

Images are then loaded once with the real torchvision loaders into uint8 tensors and
kept in memory; ``to_inputs`` turns them into floats in [0, 1] on any device.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

from .settings import data_dir
from .validation import is_whole_number

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What we know about one supported dataset."""

    name: str
    loader: type[datasets.MNIST]
    system_dir: Path | None  # where a distribution package puts the gzip files
    debian_package: str | None


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        datasets.FashionMNIST,
        Path("/usr/share/datasets/fashion-mnist"),
        "dataset-fashion-mnist",
    ),
    "mnist": DatasetInfo("mnist", datasets.MNIST, None, None),
}


@dataclass(frozen=True)
class ImageData:
    """One split of a dataset: uint8 images (N, 28, 28), int64 labels (N,), class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> ImageData:
        """The examples at ``indices``, as a new ``ImageData``."""
        return ImageData(self.images[indices], self.labels[indices], self.classes)


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset by name ('fashion-mnist' or 'mnist'; case and '_' are ignored)."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    return DATASETS[key]


def raw_folder(name: str, root: Path | None = None) -> Path:
    """The folder where torchvision expects the four uncompressed IDX files."""
    info = dataset_info(name)
    return Path(root or data_dir()) / info.loader.__name__ / "raw"


def _has_raw_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in IDX_FILES)


def _copy_from_system(system_dir: Path, folder: Path) -> bool:
    """Decompress gzip IDX files from ``system_dir`` into ``folder``; False if any is missing."""
    sources = [system_dir / f"{f}.gz" for f in IDX_FILES]
    if not all(s.is_file() for s in sources):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        target = folder / src.stem
        tmp = target.with_suffix(".partial")
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, target)
    return True


def _download(info: DatasetInfo, root: Path) -> str | None:
    """Try torchvision's download; return None on success or the reason it failed."""
    try:
        info.loader(str(root), train=True, download=True)
        info.loader(str(root), train=False, download=True)
    except Exception as err:  # network errors come in many types
        return " ".join(f"{type(err).__name__}: {err}".split())  # one line: it is one item of a list
    return None


def _apt_install(package: str) -> str | None:
    """Install a Debian package as root; return None on success or why it failed."""
    if not shutil.which("apt-get") or not Path("/etc/debian_version").exists():
        return "not a Debian machine"
    if os.geteuid() != 0:
        return "not running as root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    for attempt in range(2):
        result = subprocess.run(install, capture_output=True, text=True, env=env)
        if result.returncode == 0:
            return None
        if attempt == 0:  # the package lists may be missing or stale
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
    return (result.stderr.strip().splitlines() or ["apt-get failed"])[-1]


def prepare(
    name: str = "fashion-mnist",
    root: str | Path | None = None,
    *,
    system_dir: str | Path | None = None,
    allow_download: bool = True,
    allow_apt: bool = True,
) -> str:
    """Make sure the dataset's files are in the data folder; return where they came from.

    ``system_dir`` overrides the dataset's usual system location (tests use it).
    Raises ``FileNotFoundError`` naming every place it looked, and how to fix it.
    """
    info = dataset_info(name)
    root = Path(root) if root is not None else data_dir()
    folder = raw_folder(info.name, root)
    if _has_raw_files(folder):
        return f"data folder {folder}"
    system = Path(system_dir) if system_dir is not None else info.system_dir
    tried = [f"the data folder {folder}: the four IDX files are not all there"]
    if system is not None:
        if _copy_from_system(system, folder):
            return f"system copy {system}"
        tried.append(f"the system copy {system}: no gzip IDX files")
    if allow_download:
        reason = _download(info, root)
        if reason is None and _has_raw_files(folder):
            return "torchvision download"
        tried.append(f"torchvision's download: {reason}")
    if allow_apt and info.debian_package and system is not None:
        reason = _apt_install(info.debian_package)
        if reason is None and _copy_from_system(system, folder):
            return f"Debian package {info.debian_package} ({system})"
        tried.append(f"apt-get install {info.debian_package}: {reason or 'installed, but no files appeared'}")
    fixes = [
        f"copy the four IDX files ({', '.join(IDX_FILES)}) into {folder}, or set PTFT_DATA to a folder that has them",
        "connect to the internet once and run `python -m ptft_helpers data"
        + ("" if info.name == "fashion-mnist" else f" --dataset {info.name}")
        + "` to download them",
    ]
    if info.debian_package:
        fixes.append(f"on Debian, `sudo apt-get install {info.debian_package}` and run this again")
    else:
        fixes.append("use the dataset 'fashion-mnist', which Debian packages for offline use")
    raise FileNotFoundError(
        f"Dataset {info.name!r} is not available. Looked in:\n  - "
        + "\n  - ".join(tried)
        + "\nTo fix it, either:\n  - "
        + "\n  - ".join(fixes)
    )


@functools.lru_cache(maxsize=8)
def _load_split(name: str, root: str, train: bool) -> ImageData:
    info = dataset_info(name)
    ds = info.loader(root, train=train, download=False)
    return ImageData(ds.data.contiguous(), ds.targets.to(torch.int64), tuple(ds.classes))


def load(name: str = "fashion-mnist", split: str = "train", *, root: str | Path | None = None) -> ImageData:
    """Load one split ('train' or 'test') as uint8 tensors, preparing the files if needed.

    The result is cached, so later calls in the same process cost nothing.
    """
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split {split!r}. Use 'train' or 'test'.")
    info = dataset_info(name)
    root = Path(root) if root is not None else data_dir()
    prepare(info.name, root)
    return _load_split(info.name, str(root), split == "train")


def to_inputs(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 rows (N, 784) in [0, 1] on ``device``."""
    x = images.to(device) if device is not None else images
    if x.dtype == torch.uint8:
        return x.reshape(len(x), -1).float().div_(255.0)
    return x.reshape(len(x), -1).float()


def balanced_subset(labels: torch.Tensor, n: int, seed: int = 0, num_classes: int = 10) -> torch.Tensor:
    """Indices of ``n`` examples, ``n / num_classes`` from each class, chosen with ``seed``.

    Draw them from the training split: it never overlaps the test split.
    """
    if not is_whole_number(n, num_classes) or n % num_classes:
        raise ValueError(
            f"n={n!r} labels cannot be split evenly over {num_classes} classes; use a multiple of {num_classes}."
        )
    per_class = n // num_classes
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(num_classes):
        where = torch.nonzero(labels == c).flatten()
        if len(where) < per_class:
            raise ValueError(
                f"Asked for {per_class} labels of class {c}, but only {len(where)} exist "
                f"(at most {len(where) * num_classes} labels in total here)."
            )
        picked.append(where[torch.randperm(len(where), generator=gen)[:per_class]])
    chosen = torch.cat(picked)
    return chosen[torch.randperm(len(chosen), generator=gen)]
