"""Environment switches, folders, the whole-number check and seeding: the package's ground floor."""

import re
from pathlib import Path

import pytest
import torch

import ptft_helpers
from ptft_helpers import settings
from ptft_helpers.seeding import seeded
from ptft_helpers.validation import is_whole_number, positive_int, whole_number

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in

ENV = ("PTFT_FAST", "PTFT_PROGRESS", "PTFT_DATA", "PTFT_RESULTS", "PTFT_CHECKPOINTS", "XDG_CACHE_HOME", "CI")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_fast_mode_values(monkeypatch, value, expected):
    monkeypatch.setenv("PTFT_FAST", value)
    assert settings.fast_mode() is expected
    assert settings.pick("full", "fast") == ("fast" if expected else "full")


def test_fast_mode_unset_is_off():
    assert settings.fast_mode() is False and settings.pick(1, 2) == 1


@pytest.mark.parametrize("name", ["PTFT_FAST", "PTFT_PROGRESS"])
@pytest.mark.parametrize("value", ["maybe", "2", "y", "fast"])
def test_unknown_switch_values_are_a_one_line_error(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as info:
        settings.fast_mode() if name == "PTFT_FAST" else settings.progress_enabled()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}='{value}' is not a switch value") and "1 or 0" in message


def test_progress_bars(monkeypatch):
    assert settings.progress_enabled() is True
    monkeypatch.setenv("CI", "true")
    assert settings.progress_enabled() is False  # CI logs: no bars unless asked for
    monkeypatch.setenv("PTFT_PROGRESS", "1")
    assert settings.progress_enabled() is True
    monkeypatch.delenv("CI")
    monkeypatch.setenv("PTFT_PROGRESS", "off")
    assert settings.progress_enabled() is False


def test_data_dir(monkeypatch, tmp_path):
    assert settings.data_dir() == REPO_ROOT / "data"
    monkeypatch.setenv("PTFT_DATA", str(tmp_path))
    assert settings.data_dir() == tmp_path
    monkeypatch.setenv("PTFT_DATA", "  ")
    assert settings.data_dir() == REPO_ROOT / "data"
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("PTFT_DATA", str(tmp_path / "f"))
    with pytest.raises(ValueError, match=r"PTFT_DATA=.* is a file, not a folder"):
        settings.data_dir()


def test_a_clone_is_recognised_by_its_pyproject(monkeypatch, tmp_path):
    assert settings.checkout_root() == REPO_ROOT  # the tests run from a clone
    fake = tmp_path / "site-packages" / "ptft_helpers"
    fake.mkdir(parents=True)
    try:
        for text, expected in [
            (None, None),
            ("not toml [", None),
            ('[project]\nname = "other"\n', None),
            ('[project]\nname = "ptft-helpers"\n', fake.parent),
        ]:
            if text is not None:
                (fake.parent / "pyproject.toml").write_text(text)
            monkeypatch.setattr(settings, "PACKAGE_DIR", fake)
            settings.checkout_root.cache_clear()
            assert settings.checkout_root() == expected, text
    finally:
        settings.checkout_root.cache_clear()  # later tests see the real clone again


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """As if the package were installed (no clone beside it), with a home folder of its own."""
    monkeypatch.setattr(settings, "checkout_root", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_installed_the_defaults_are_per_user(installed):
    home = installed / "home"
    folder = settings.data_folder()
    assert folder.path == home / ".cache" / "ptft" / "data"
    assert folder.describe("data") == (
        "data folder: ~/.cache/ptft/data (the per-user cache: ptft_helpers is installed, not run from a clone of "
        "the repository; set PTFT_DATA to choose another)"
    )
    results = settings.results_folder()
    assert results.path == installed / "results" and "the current folder" in results.why
    assert settings.code_version() == f"ptft_helpers {ptft_helpers.__version__}"
    assert settings.display_path(home / "a" / "b") == "~/a/b" and settings.display_path("/etc/x") == "/etc/x"


def test_from_a_clone_the_defaults_are_the_clones_folders():
    assert settings.data_folder() == (REPO_ROOT / "data", "the clone's data folder", "PTFT_DATA")
    assert settings.results_folder().path == REPO_ROOT / "results"
    assert settings.results_folder(fast=True).path == REPO_ROOT / "results" / "fast"
    assert settings.display_path(REPO_ROOT / "data" / "x.pt") == "data/x.pt"
    assert re.fullmatch(r"[0-9a-f]{7,40}", settings.code_version())  # a git commit


def test_results_folder_choices(installed, monkeypatch):
    monkeypatch.setenv("PTFT_RESULTS", str(installed / "mine"))
    assert settings.results_folder() == (installed / "mine", "set by PTFT_RESULTS", "PTFT_RESULTS")
    monkeypatch.setenv("PTFT_FAST", "1")
    assert settings.results_folder().path == installed / "mine" / "fast"
    monkeypatch.delenv("PTFT_RESULTS")
    monkeypatch.chdir("/proc")  # a current folder nobody can write: the per-user cache instead
    fallback = settings.results_folder()
    assert fallback.path == installed / "home" / ".cache" / "ptft" / "results" / "fast"
    assert fallback.why == "the per-user cache: /proc/results cannot be written"


def test_checkpoint_folders_in_lookup_order(monkeypatch, tmp_path):
    monkeypatch.setenv("PTFT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / ".cache" / "ptft" / "checkpoints"
    assert settings.checkpoint_dirs() == [tmp_path / "data" / "checkpoints", cache]
    assert settings.writable_checkpoint_dir() == tmp_path / "data" / "checkpoints"
    assert not (tmp_path / "data").exists()  # asking creates nothing
    monkeypatch.setenv("PTFT_FAST", "1")
    assert settings.checkpoint_dirs() == [tmp_path / "data" / "checkpoints" / "fast", cache / "fast"]
    monkeypatch.setenv("PTFT_CHECKPOINTS", str(tmp_path / "mine"))
    assert settings.checkpoint_dirs()[0] == tmp_path / "mine" / "fast"
    assert settings.writable_checkpoint_dir() == tmp_path / "mine" / "fast"


def test_an_unwritable_data_folder_sends_checkpoints_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PTFT_DATA", "/proc/ptft-data")  # nothing can be created under /proc, not even by root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings.is_writable(tmp_path / "new" / "folder") and not (tmp_path / "new").exists()
    assert not settings.is_writable(settings.data_dir() / "checkpoints")
    assert settings.writable_checkpoint_dir() == tmp_path / "xdg" / "ptft" / "checkpoints"


@pytest.mark.parametrize("value", [1, 7, 10**9])
def test_positive_int_accepts_whole_numbers(value):
    assert positive_int(value, "n") == value and is_whole_number(value)


@pytest.mark.parametrize("value", [0, -3, True, False, 2.0, 2.5, "3", None])
def test_positive_int_refuses_the_rest(value):
    with pytest.raises(ValueError, match=rf"^n must be a whole number >= 1, got {value!r}\.$"):
        positive_int(value, "n")


def test_whole_number_bounds():
    assert whole_number(0, "k", 0, 5) == 0 and whole_number(5, "k", 0, 5) == 5
    with pytest.raises(ValueError, match=r"k must be a whole number between 0 and 5, got 6"):
        whole_number(6, "k", 0, 5)


def test_seeded_repeats_and_restores_the_callers_state():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    with seeded(7):
        first = torch.rand(3)
    assert torch.equal(torch.random.get_rng_state(), state)
    with seeded(7):
        assert torch.equal(torch.rand(3), first)
    with seeded(8):
        assert not torch.equal(torch.rand(3), first)
