"""Choosing the device: automatic choice, PTFT_DEVICE, and clear errors for devices that are not there."""

import pytest
import torch

from ptft_helpers import devices
from ptft_helpers.devices import autocast, describe_device, pick_device, synchronize

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = devices._mps_available()


@pytest.fixture(autouse=True)
def no_device_setting(monkeypatch):
    monkeypatch.delenv("PTFT_DEVICE", raising=False)


def test_automatic_choice():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert pick_device() == torch.device(expected)
    if not (HAS_CUDA or HAS_MPS):
        assert pick_device().type == "cpu"


@pytest.mark.parametrize("value", ["cpu", " cpu\n"])
def test_ptft_device_cpu(monkeypatch, value):
    monkeypatch.setenv("PTFT_DEVICE", value)
    assert pick_device() == torch.device("cpu")


@pytest.mark.parametrize("value", ["", " "])
def test_empty_ptft_device_means_automatic(monkeypatch, value):
    automatic = pick_device()
    monkeypatch.setenv("PTFT_DEVICE", value)
    assert pick_device() == automatic


def test_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("PTFT_DEVICE", "bogus")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_that_is_not_there(monkeypatch):
    # Without a GPU ask for "cuda"; with one, ask for a device index past the last GPU.
    wanted = f"cuda:{torch.cuda.device_count()}" if HAS_CUDA else "cuda"
    monkeypatch.setenv("PTFT_DEVICE", wanted)
    with pytest.raises(ValueError) as info:
        pick_device()
    message = str(info.value)
    assert repr(wanted) in message
    if HAS_CUDA:
        assert f"only {torch.cuda.device_count()} CUDA device(s) exist" in message
    else:
        assert "CUDA is not available here" in message
    assert "Set PTFT_DEVICE to one of: cpu, cuda, cuda:N, mps (or unset it" in message


def test_mps_that_is_not_there():
    if HAS_MPS:
        assert pick_device("mps") == torch.device("mps")
    else:
        with pytest.raises(ValueError, match="Apple MPS is not available here"):
            pick_device("mps")


@pytest.mark.parametrize("value", ["bogus", "gpu", "cuda:x", "cpu:zero"])
def test_unknown_device(monkeypatch, value):
    monkeypatch.setenv("PTFT_DEVICE", value)
    with pytest.raises(ValueError, match=f"Unknown device '{value}'. Set PTFT_DEVICE to one of"):
        pick_device()


def test_unsupported_device_type():
    with pytest.raises(ValueError, match="Device type 'meta' is not supported"):
        pick_device("meta")


def test_autocast_is_a_no_op_on_cpu():
    cpu = torch.device("cpu")
    a, b = torch.rand(16, 32), torch.rand(32, 8)
    with autocast(cpu):
        assert not torch.is_autocast_enabled("cpu")
        inside = a @ b
    assert inside.dtype == torch.float32
    assert torch.equal(inside, a @ b)


def test_describe_and_synchronize_on_cpu():
    cpu = torch.device("cpu")
    assert describe_device(cpu).startswith("CPU: ")
    assert f"{torch.get_num_threads()} threads" in describe_device(cpu)
    assert synchronize(cpu) is None
