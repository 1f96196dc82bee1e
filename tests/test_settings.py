"""Environment switches, folders, the whole-number check and seeding: the package's ground floor."""

import pytest
import torch

from ptft_helpers import settings
from ptft_helpers.seeding import seeded
from ptft_helpers.validation import is_whole_number, positive_int, whole_number

ENV = ("PTFT_FAST", "PTFT_PROGRESS", "PTFT_DATA", "PTFT_CHECKPOINTS", "XDG_CACHE_HOME", "CI")


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
    assert settings.data_dir() == settings.REPO_ROOT / "data"
    monkeypatch.setenv("PTFT_DATA", str(tmp_path))
    assert settings.data_dir() == tmp_path
    monkeypatch.setenv("PTFT_DATA", "  ")
    assert settings.data_dir() == settings.REPO_ROOT / "data"
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("PTFT_DATA", str(tmp_path / "f"))
    with pytest.raises(ValueError, match=r"PTFT_DATA=.* is a file, not a folder"):
        settings.data_dir()


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
