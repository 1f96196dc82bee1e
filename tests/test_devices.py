"""Choosing the device: automatic choice, PTFT_DEVICE, and clear errors for devices that are not there."""

import pytest
import torch

from ptft_helpers import devices
from ptft_helpers.devices import MixedPrecision, Precision, autocast, describe_device, pick_device

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = devices._mps_available()


@pytest.fixture(autouse=True)
def no_device_setting(monkeypatch):
    monkeypatch.delenv("PTFT_DEVICE", raising=False)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_automatic_choice_prefers_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)  # which accelerators this machine has
    monkeypatch.setattr(devices, "_mps_available", lambda: mps)
    assert pick_device() == torch.device(expected)


def test_the_automatic_choice_works_here():
    x = torch.ones(3, device=pick_device())  # the device it picks exists on this machine
    assert (x + x).sum().item() == 6.0


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


def tf32_switches() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_mixed_precision_sets_tf32_only_inside_and_can_be_entered_again():
    # The GPU's bfloat16-with-TF32 precision, run on the CPU: autocast and the global switches behave the same.
    before = tf32_switches()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        amp = MixedPrecision("cpu", Precision(torch.bfloat16, scaler=False, tf32=True))
        for _ in range(2):  # a training loop enters it once per step
            with amp:
                assert torch.is_autocast_enabled("cpu")
                assert tf32_switches() == (True, True)
                assert (torch.rand(4, 4) @ torch.rand(4, 4)).dtype == torch.bfloat16
            assert not torch.is_autocast_enabled("cpu")
            assert tf32_switches() == (False, False)
        with pytest.raises(RuntimeError, match="stop"), amp:
            raise RuntimeError("stop")
        assert tf32_switches() == (False, False) and not torch.is_autocast_enabled("cpu")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_describe_the_cpu():
    cpu = torch.device("cpu")
    assert describe_device(cpu).startswith("CPU: ")
    assert f"{torch.get_num_threads()} threads" in describe_device(cpu)


@pytest.mark.parametrize(
    ("device_type", "capability", "dtype", "scaler", "tf32"),
    [
        ("cpu", None, None, False, False),
        ("mps", None, None, False, False),
        ("cuda", (6, 1), torch.float16, True, False),  # Pascal (P100: 6.0, GTX 10xx: 6.1)
        ("cuda", (7, 0), torch.float16, True, False),  # Volta: V100
        ("cuda", (7, 5), torch.float16, True, False),  # Turing: T4, Colab's usual GPU
        ("cuda", (8, 0), torch.bfloat16, False, True),  # Ampere: A100
        ("cuda", (8, 6), torch.bfloat16, False, True),  # Ampere: RTX 30xx, A10
        ("cuda", (8, 9), torch.bfloat16, False, True),  # Ada: L4, RTX 40xx
        ("cuda", (9, 0), torch.bfloat16, False, True),  # Hopper: H100
        ("cuda", (12, 0), torch.bfloat16, False, True),  # later GPUs
    ],
)
def test_the_precision_decision_table(device_type, capability, dtype, scaler, tf32):
    chosen = devices.choose_precision(device_type, capability)
    assert (chosen.dtype, chosen.scaler, chosen.tf32) == (dtype, scaler, tf32)


def test_the_precision_is_said_in_words():
    assert devices.choose_precision("cpu").describe() == "float32"
    assert devices.choose_precision("cuda", (7, 5)).describe() == "float16 mixed precision with a gradient scaler"
    assert devices.choose_precision("cuda", (9, 0)).describe() == "bfloat16 mixed precision, TF32 matmuls"
    assert describe_device(torch.device("cpu")).endswith("; trains in float32")


def test_the_scaler_is_a_pass_through_where_the_precision_needs_none():
    scaler = devices.grad_scaler(torch.device("cpu"))
    assert not scaler.is_enabled()
    loss = torch.tensor(0.25, requires_grad=True)
    assert scaler.scale(loss) is loss


def test_a_step_through_an_enabled_scaler_is_the_plain_step():
    # float16 training multiplies the loss by a power of two before backward and divides the gradients by it
    # before the step: both exact in binary floating point while nothing overflows, so on the CPU (float32 inside)
    # a step through an enabled scaler must give the very same weights as the plain step. This runs the code path
    # a T4 takes, short of its float16 arithmetic.
    from ptft_helpers.models import build_autoencoder
    from ptft_helpers.training import adam, pretrain_step

    x = torch.rand(32, 784, generator=torch.Generator().manual_seed(0))
    weights = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**16)):
        torch.manual_seed(0)
        model = build_autoencoder()
        optimizer = adam(model.parameters(), 1e-3, torch.device("cpu"))
        for _ in range(3):
            pretrain_step(model, optimizer, x, x, scaler=scaler)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
