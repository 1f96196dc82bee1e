"""LoRA by hand (``lora.LoRALinear``, ``add_lora``) and through peft, on a small ViT built from a config."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ptft_helpers import lora, vit

EPS = torch.finfo(torch.float32).eps
SMALL = vit.ViTConfig(width=32, depth=2, heads=2, decoder_width=16, decoder_depth=1, decoder_heads=2)


def close(actual: torch.Tensor, expected: torch.Tensor, terms: int) -> None:
    """Equal up to float32 rounding: each output sums ``terms`` products, each rounded, so the difference stays
    within ``terms`` ulps of the largest output (a generous bound, and far below any real mistake)."""
    tolerance = terms * EPS * float(expected.detach().abs().max().clamp_min(1.0))
    assert float((actual - expected).detach().abs().max()) <= tolerance


def randomise_b(model: nn.Module, seed: int) -> None:
    """Give every hand-made LoRA layer a non-zero B, so that the adapters change the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen) * 0.1)


@pytest.fixture
def classifier() -> vit.ViTClassifier:
    torch.manual_seed(0)
    return vit.ViTClassifier(SMALL).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))


# --- by hand ------------------------------------------------------------------------------------


def test_a_lora_layer_computes_its_frozen_layer_at_the_start():
    base = nn.Linear(20, 12)
    layer = lora.LoRALinear(base, rank=3, alpha=6)
    x = torch.randn(5, 7, 20)
    assert torch.equal(layer(x), base(x))  # B is zero: the change is exactly zero
    assert layer.A.shape == (3, 20) and layer.B.shape == (12, 3) and not layer.B.any()
    assert layer.scaling == 2.0 and layer.base is base
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.A.requires_grad and layer.B.requires_grad
    # peft's default: Kaiming-uniform with a = sqrt(5), whose bound is 1 / sqrt(d_in), as nn.Linear's weight.
    a = layer.A.detach()
    assert float(a.abs().max()) <= 20**-0.5 and float(a.std()) > 0.25 * 20**-0.5


def test_a_is_drawn_with_the_generator_given():
    draw = [lora.LoRALinear(nn.Linear(8, 4), 2, 2, generator=torch.Generator().manual_seed(s)).A for s in (3, 3, 4)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


def test_the_trainable_count_is_r_times_d_in_plus_d_out_per_matrix(classifier):
    head = sum(p.numel() for p in classifier.head.parameters())
    model = lora.add_lora(copy.deepcopy(classifier), ["q_proj", "v_proj", "fc1"], rank=4, alpha=8)
    layers = lora.lora_layers(model)
    assert len(layers) == 3 * SMALL.depth
    expected = sum(4 * (layer.base.in_features + layer.base.out_features) for layer in layers.values())
    assert lora.trainable_count(model) == expected
    with_head = lora.add_lora(copy.deepcopy(classifier), ["q_proj"], 4, 8, keep_trainable=["head"])
    assert lora.trainable_count(with_head) == SMALL.depth * 4 * (2 * SMALL.width) + head
    trained = {name for name, p in with_head.named_parameters() if p.requires_grad}
    assert trained == {f"{n}.{ab}" for n in lora.lora_layers(with_head) for ab in "AB"} | {
        "head.weight",
        "head.bias",
    }


def test_a_model_with_lora_computes_the_base_at_the_start(classifier, images):
    model = lora.add_lora(copy.deepcopy(classifier), ["q_proj", "k_proj", "v_proj", "o_proj"], 2, 4)
    with torch.no_grad():
        assert torch.equal(model(images), classifier(images))


def test_merging_gives_the_same_outputs(classifier, images):
    layer = lora.LoRALinear(nn.Linear(32, 16), rank=4, alpha=8)
    with torch.no_grad():
        layer.B.normal_()
    merged = layer.merged()
    x = torch.randn(9, 32)
    assert isinstance(merged, nn.Linear) and not merged.weight.requires_grad
    close(merged(x), layer(x), terms=32 + 4)
    assert not torch.equal(merged.weight, layer.base.weight)
    model = lora.add_lora(copy.deepcopy(classifier), ["q_proj", "fc2"], 4, 8)
    randomise_b(model, seed=2)
    with torch.no_grad():
        adapted = model(images)
        lora.merge_lora(model)
        assert not lora.lora_layers(model)
        close(model(images), adapted, terms=SMALL.depth * 4 * SMALL.width)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in classifier.parameters())


def test_optimizer_state_bytes_counts_adams_moments(classifier):
    model = lora.add_lora(copy.deepcopy(classifier), ["q_proj"], 4, 8)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    assert lora.optimizer_state_bytes(optimizer) == 0  # no state before the first step
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    moments = 2 * 4 * lora.trainable_count(model)  # two float32 moments per trained number
    state = lora.optimizer_state_bytes(optimizer)
    assert moments <= state <= moments + 8 * len(params)  # plus a step count per tensor


@pytest.mark.parametrize("rank", [0, -2, 2.0, 1.5, True, "4", None])
def test_a_bad_rank_is_one_line(rank):
    for make in (
        lambda: lora.LoRALinear(nn.Linear(4, 4), rank, 8),
        lambda: lora.add_lora(nn.Linear(4, 4), ["x"], rank, 8),
    ):
        with pytest.raises(ValueError) as info:
            make()
        assert str(info.value) == f"LoRA rank must be a whole number >= 1 (such as 4 or 8), got {rank!r}."


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), "8"])
def test_a_bad_alpha_is_one_line(alpha):
    with pytest.raises(ValueError, match="^LoRA alpha must be a positive number .*got") as info:
        lora.LoRALinear(nn.Linear(4, 4), 2, alpha)
    assert "\n" not in str(info.value)


def test_an_unknown_target_names_the_linear_layers_there_are(classifier):
    for add in (lambda m: lora.add_lora(m, ["query"], 2, 4), lambda m: lora.peft_lora(m, 2, 4, ["query"])):
        model = copy.deepcopy(classifier)
        with pytest.raises(ValueError) as info:
            add(model)
        message = str(info.value)
        assert "\n" not in message and "named 'query'" in message
        assert "q_proj, k_proj, v_proj, o_proj, fc1, fc2, head" in message
        assert not lora.lora_layers(model) and all(p.requires_grad for p in model.parameters())  # unchanged
    with pytest.raises(ValueError, match=r"non-empty list of layer names.*got 'q_proj'"):
        lora.add_lora(copy.deepcopy(classifier), "q_proj", 2, 4)
    with pytest.raises(
        ValueError, match="No module of this ViTClassifier is named 'classifier'; its parts are: encoder, head"
    ):
        lora.add_lora(copy.deepcopy(classifier), ["q_proj"], 2, 4, keep_trainable=["classifier"])


# --- through peft --------------------------------------------------------------------------------


@pytest.fixture
def hf_classifier(classifier) -> nn.Module:
    return vit.to_hf_classifier(classifier).eval()


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=images).logits


def test_peft_computes_what_the_hand_made_lora_computes(classifier, hf_classifier, images):
    targets = ["q_proj", "v_proj", "fc1"]
    hand = lora.add_lora(copy.deepcopy(classifier), targets, 4, 8, keep_trainable=["head"])
    randomise_b(hand, seed=3)
    with torch.no_grad():
        hand.head.weight.add_(0.5)  # a head changed by training, as the LoRA layers were
    peft_model = lora.peft_lora(copy.deepcopy(hf_classifier), 4, 8, targets).eval()
    assert lora.trainable_count(peft_model) == lora.trainable_count(hand)
    before = logits(peft_model, images)
    close(before, logits(hf_classifier, images), terms=SMALL.width)  # peft's B starts at zero too
    copied = lora.copy_lora_to_peft(hand, peft_model, rename=lora.hf_vit_name, modules=["head"])
    assert copied == 3 * SMALL.depth
    with torch.no_grad():
        by_hand = hand(images)
    after = logits(peft_model, images)
    close(after, by_hand, terms=SMALL.depth * SMALL.width)
    assert float((after - before).abs().max()) > 1e3 * SMALL.depth * SMALL.width * EPS  # a real change


def test_copying_into_a_peft_model_built_otherwise_is_one_line(classifier, hf_classifier):
    hand = lora.add_lora(copy.deepcopy(classifier), ["q_proj"], 4, 8)
    peft_model = lora.peft_lora(copy.deepcopy(hf_classifier), 2, 8, ["q_proj"])
    with pytest.raises(ValueError, match="rank 4, scaling 2 by hand, but rank 2, scaling 4 in peft"):
        lora.copy_lora_to_peft(hand, peft_model, rename=lora.hf_vit_name)
    with pytest.raises(ValueError, match="has no module 'encoder.layers.0.attention.q_proj'.*pass rename="):
        lora.copy_lora_to_peft(hand, peft_model)
    with pytest.raises(ValueError, match="no hand-made LoRALinear layers"):
        lora.copy_lora_to_peft(classifier, peft_model)


def test_an_adapter_is_saved_alone_and_reloads_to_the_same_outputs(hf_classifier, images, tmp_path):
    peft_model = lora.peft_lora(copy.deepcopy(hf_classifier), 4, 8, ["q_proj", "v_proj"])
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    expected = logits(peft_model.eval(), images)
    saved = lora.save_adapter(peft_model, tmp_path / "adapter")
    assert saved.folder == tmp_path / "adapter" and saved.sizes == lora.file_sizes(saved.folder)
    tensors = load_file(saved.folder / lora.ADAPTER_WEIGHTS)
    assert sum(t.numel() for t in tensors.values()) == lora.trainable_count(peft_model)  # only what was trained
    hf_classifier.save_pretrained(tmp_path / "full")
    full = lora.file_sizes(tmp_path / "full")["model.safetensors"]
    assert saved.sizes[lora.ADAPTER_WEIGHTS] < full / 2
    reloaded = lora.load_adapters(copy.deepcopy(hf_classifier), {"default": saved})
    assert torch.equal(logits(reloaded, images), expected)
    assert lora.trainable_count(reloaded) == 0


def test_two_adapters_on_one_base_switch(hf_classifier, images, tmp_path):
    outputs, saved = {}, {}
    for seed, (task, targets) in enumerate({"clothes": ["q_proj", "v_proj"], "digits": ["fc1"]}.items()):
        model = lora.peft_lora(copy.deepcopy(hf_classifier), 4, 8, targets, adapter_name=task)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        outputs[task] = logits(model.eval(), images)
        saved[task] = lora.save_adapter(model, tmp_path, adapter_name=task)
        assert saved[task].folder == tmp_path / task
    assert not torch.equal(outputs["clothes"], outputs["digits"])
    served = lora.load_adapters(copy.deepcopy(hf_classifier), saved)
    assert served.active_adapter == "clothes"
    for task in ["clothes", "digits", "clothes"]:
        served.set_adapter(task, inference_mode=True)
        assert torch.equal(logits(served, images), outputs[task])
    with pytest.raises(ValueError, match=f"No saved adapter in {tmp_path / 'none'} \\(for 'x'\\)"):
        lora.load_adapters(copy.deepcopy(hf_classifier), {"x": tmp_path / "none"})
