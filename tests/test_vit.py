"""The by-hand masked autoencoder (``vit``) against Hugging Face's ViTMAE and ViT given the same weights and noise;
masking, patches, bad input, the classifier, checkpoints and local ``save_pretrained`` folders; MAE pretraining."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from ptft_helpers import training, vit
from ptft_helpers.checkpoints import REQUIRED_METADATA, load_pretrained, model_from_config, save_checkpoint
from ptft_helpers.mae import _parameter_groups, masked_loss, pretrain_mae, warmup_cosine
from ptft_helpers.vit import MaskedAutoencoder, ViTClassifier, ViTConfig, patchify, random_masking, unpatchify

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL = ViTConfig(width=32, depth=2, heads=4, decoder_width=16, decoder_depth=1, decoder_heads=2)
# Tolerances from rounding. The two models compute the same operations, possibly summed in another order (SDPA's
# and matmul's kernels choose their own blocking); each reordered sum of k terms moves a result by a few units of
# the last place times sqrt(k) at most in practice, over ~10 layers of sums of <= 512 terms: a relative 1e-5 is
# ~80 float32 epsilons (1.2e-7) and ~10 times the largest difference measured (0 on our CPU); float64's epsilon is
# 2.2e-16, so 1e-12 there.
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def seeded_mae(config: ViTConfig = SMALL, dtype: torch.dtype = torch.float32) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(config).to(dtype)


def images_and_noise(config: ViTConfig, batch: int = 6, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 1, config.image_size, config.image_size, generator=generator, dtype=dtype)
    return images, torch.rand(batch, config.num_patches, generator=generator)


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    """|a - b| <= rtol * (largest |a|), element-wise: a tolerance relative to the tensor's scale."""
    return bool((a - b).abs().max() <= RTOL[dtype] * a.abs().max().clamp_min(1.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_the_same_loss_as_hugging_face_given_the_same_weights_and_noise(dtype, norm_pix_loss):
    config = ViTConfig(**{**vars(SMALL), "norm_pix_loss": norm_pix_loss})
    mae = seeded_mae(config, dtype)
    hf = vit.to_hf(mae)
    assert isinstance(hf, transformers.ViTMAEForPreTraining) and hf.config.norm_pix_loss == norm_pix_loss
    images, noise = images_and_noise(config, dtype=dtype)
    loss, pred, mask = mae(images, noise=noise)
    out = hf(pixel_values=images, noise=noise)
    assert torch.equal(mask, out.mask.to(dtype))
    assert close(loss, out.loss, dtype) and close(pred, out.logits, dtype)
    assert loss.dtype == out.loss.dtype == dtype
    # ids_restore: our masking of the same noise gives Hugging Face's
    assert torch.equal(random_masking(mae.encoder.embed(images), config.mask_ratio, noise)[2], out.ids_restore)


def test_the_default_model_matches_too_and_flat_rows_are_images():
    mae = seeded_mae(ViTConfig())
    images, noise = images_and_noise(mae.vit_config, batch=3)
    loss, pred, _ = mae(images.reshape(3, -1), noise=noise)  # (B, 784) rows, as the data module gives them
    out = vit.to_hf(mae)(pixel_values=images, noise=noise)
    assert close(loss, out.loss, torch.float32) and close(pred, out.logits, torch.float32)
    assert pred.shape == (3, 16, 49)


def test_the_position_embeddings_are_hugging_faces_sin_cos_tables():
    for grid, dim in ((4, 128), (4, 64), (7, 32)):
        table = build_2d_sinusoidal_position_embedding(grid, grid, embed_dim=dim, cls_token=True)
        half = dim // 2  # ViTMAE's initialize_weights swaps the halves to MAE's layout: columns first
        theirs = torch.cat([table[:, half:], table[:, :half]], dim=1)
        torch.testing.assert_close(vit.sincos_position_embedding(grid, dim), theirs, rtol=0, atol=0)


def test_patchify_is_hugging_faces_and_unpatchify_inverts_it():
    mae = seeded_mae()
    hf = vit.to_hf(mae)
    images, _ = images_and_noise(SMALL)
    patches = patchify(images, 7)
    assert patches.shape == (6, 16, 49)
    assert torch.equal(patches, hf.patchify(images))
    assert torch.equal(unpatchify(patches), images) and torch.equal(hf.unpatchify(patches), images)
    assert torch.equal(patches[0, 1], images[0, 0, 0:7, 7:14].flatten())  # patch 1: top row, second column
    assert torch.equal(patchify(images[:, 0], 4), patchify(images.reshape(6, -1), 4))  # (B, 28, 28) and (B, 784)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("length", [16, 49])
def test_masking_keeps_exactly_the_unmasked_share_and_ids_restore_inverts_the_shuffle(ratio, length):
    batch, keep = 5, int(length * (1 - ratio))
    tokens = torch.arange(length, dtype=torch.float32)[None, :, None].expand(batch, length, 3)  # token l holds l
    kept, mask, ids_restore = random_masking(tokens, ratio, generator=torch.Generator().manual_seed(0))
    assert kept.shape == (batch, keep, 3) and mask.shape == ids_restore.shape == (batch, length)
    assert mask.sum(dim=1).tolist() == [length - keep] * batch
    visible = kept[..., 0].long()  # the patches each image kept
    assert (mask.gather(1, visible) == 0).all()  # exactly those are unmasked
    ids_shuffle = ids_restore.argsort(dim=1)
    shuffled = tokens.gather(1, ids_shuffle[..., None].expand(-1, -1, 3))
    assert torch.equal(shuffled[:, :keep], kept)
    assert torch.equal(shuffled.gather(1, ids_restore[..., None].expand(-1, -1, 3)), tokens)
    assert len({tuple(row) for row in visible.sort(dim=1).values.tolist()}) > 1  # each image its own masks


def test_masks_come_from_the_generator_and_noise_of_the_right_shape():
    tokens = torch.randn(4, 16, 8)
    draws = [random_masking(tokens, 0.75, generator=torch.Generator().manual_seed(s))[1] for s in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    with pytest.raises(ValueError, match=r"noise must have shape \(B, L\) = \(4, 16\), got \(4, 15\)"):
        random_masking(tokens, 0.75, noise=torch.rand(4, 15))


BAD_CONFIGS = [
    ({"patch_size": 5}, r"patch_size 5 does not divide image_size 28: choose one of \[1, 2, 4, 7, 14, 28\]"),
    ({"mask_ratio": 0.0}, "mask_ratio must lie strictly between 0 and 1"),
    ({"mask_ratio": 1}, "mask_ratio must lie strictly between 0 and 1"),
    ({"mask_ratio": -0.5}, "mask_ratio must lie strictly between 0 and 1"),
    ({"mask_ratio": True}, "mask_ratio must lie strictly between 0 and 1"),
    ({"mask_ratio": 0.97}, "mask_ratio 0.97 keeps no patch of 16"),
    ({"width": 0}, "ViTConfig's width must be a whole number >= 1, got 0"),
    ({"depth": -1}, "ViTConfig's depth must be a whole number >= 1, got -1"),
    ({"decoder_depth": 1.5}, "ViTConfig's decoder_depth must be a whole number >= 1, got 1.5"),
    ({"heads": 0}, "ViTConfig's heads must be a whole number >= 1, got 0"),
    ({"width": 132, "heads": 8}, "width 132 must be a multiple of 4 .* and of heads 8"),
    ({"decoder_width": 66}, "decoder_width 66 must be a multiple of 4"),
    ({"mlp_ratio": 0}, "mlp_ratio must be a number from 0.25 to 16"),
    ({"mlp_ratio": 1e5}, "mlp_ratio must be a number from 0.25 to 16"),  # a crafted checkpoint's memory bomb
    ({"width": 65536}, "sizes give about .* parameters, more than this series trains"),
    ({"norm_pix_loss": 1}, "norm_pix_loss must be True or False"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS)
def test_bad_configs_are_one_line_errors(change, message):
    with pytest.raises(ValueError, match=message) as err:
        ViTConfig(**change)
    assert "\n" not in str(err.value)


def test_images_as_bytes_or_numpy_ratios_are_taken_as_they_come():
    torch.manual_seed(0)
    mae = MaskedAutoencoder(ViTConfig(mask_ratio=np.float32(0.75))).eval()  # a NumPy number is a number
    pixels = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)  # as data.load gives them
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(mae(pixels, noise=noise)[0], mae(pixels.float() / 255, noise=noise)[0])
    with pytest.raises(ValueError, match="This ViT reads 28 x 28 images, got 32 x 32"):
        mae.encoder(torch.zeros(2, 1, 32, 32))


def test_bad_images_and_ratios_elsewhere_are_one_line_errors():
    with pytest.raises(ValueError, match=r"square one-channel images .* got shape \(2, 3, 28, 28\)"):
        patchify(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="patch_size 5 does not divide the image side 28"):
        patchify(torch.zeros(2, 784), 5)
    with pytest.raises(ValueError, match="mask_ratio must lie strictly between 0 and 1"):
        random_masking(torch.zeros(1, 16, 4), 1.0)
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean'"):
        ViTClassifier(SMALL, pooling="max")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_classifier_copies_the_encoder_and_gives_one_score_per_class(pooling):
    mae = seeded_mae()
    classifier = ViTClassifier(num_classes=7, encoder=mae.encoder, pooling=pooling)
    images, _ = images_and_noise(SMALL)
    assert classifier(images).shape == (6, 7)
    assert mae.encode(images).shape == (6, 17, 32)
    tokens = mae.encode(images)
    pooled = tokens[:, 0] if pooling == "cls" else tokens[:, 1:].mean(dim=1)
    torch.testing.assert_close(classifier(images), classifier.head(pooled), rtol=0, atol=0)
    with torch.no_grad():
        classifier.encoder.layers[0].attention.q_proj.weight.add_(1.0)  # fine-tuning changes the copy only
    assert torch.equal(mae.encode(images), tokens)
    classifier.freeze_encoder()
    assert [n for n, p in classifier.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert all(p.requires_grad for p in classifier.unfreeze_encoder().parameters())


def test_the_classifier_fine_tunes_and_scores_through_the_series_training_loop():
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(64, 784, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    torch.manual_seed(0)
    classifier = ViTClassifier(SMALL, num_classes=3).freeze_encoder()
    encoder = {k: v.clone() for k, v in classifier.encoder.state_dict().items()}
    history = training.finetune(classifier, images, labels, epochs=2, batch_size=16, progress=False)
    assert len(history["train_acc"]) == 2 and set(training.evaluate(classifier, images, labels)) == {"loss", "accuracy"}
    assert all(torch.equal(v, classifier.encoder.state_dict()[k]) for k, v in encoder.items())  # a probe: frozen


def test_the_hugging_face_classifier_reproduces_ours_and_loads_from_a_local_folder(tmp_path):
    torch.manual_seed(3)
    classifier = ViTClassifier(encoder=seeded_mae().encoder, num_classes=10)
    hf = vit.to_hf_classifier(classifier)
    assert isinstance(hf, transformers.ViTForImageClassification)
    images, _ = images_and_noise(SMALL)
    logits = classifier(images)
    assert close(logits, hf(pixel_values=images).logits, torch.float32)
    hf.save_pretrained(tmp_path / "vit")
    assert (tmp_path / "vit" / "model.safetensors").is_file()
    loaded = transformers.ViTForImageClassification.from_pretrained(tmp_path / "vit")
    assert close(logits, loaded(pixel_values=images).logits, torch.float32)
    assert close(classifier.encoder(images), loaded.vit(pixel_values=images).last_hidden_state, torch.float32)
    with pytest.raises(ValueError, match="ViTForImageClassification reads the CLS token"):
        vit.to_hf_classifier(ViTClassifier(SMALL, pooling="mean"))


def test_a_checkpoint_round_trip(tmp_path):
    mae = seeded_mae()
    metadata = {key: 0 for key in REQUIRED_METADATA} | {"dataset": "fashion-mnist", "pretext": "mae", "history": {}}
    path = save_checkpoint(mae, tmp_path / "mae.pt", **metadata)
    loaded, meta = load_pretrained(path)
    assert isinstance(loaded, MaskedAutoencoder) and loaded.vit_config == SMALL and meta["pretext"] == "mae"
    images, noise = images_and_noise(SMALL)
    assert torch.equal(loaded(images, noise=noise)[0], mae(images, noise=noise)[0])
    assert isinstance(model_from_config(SMALL.to_dict()), MaskedAutoencoder)
    with pytest.raises(ValueError, match="cannot be read"):
        model_from_config({**SMALL.to_dict(), "colour": 3})


def test_the_learning_rate_warms_up_then_decays_to_zero():
    factors = [warmup_cosine(step, 100, 5) for step in range(100)]
    assert factors[:5] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert all(a >= b for a, b in zip(factors[4:], factors[5:])) and factors[-1] == pytest.approx(
        0.5 * (1 - math.cos(math.pi / 95))
    )


def test_weight_decay_spares_biases_norms_and_tokens():
    mae = seeded_mae()
    decayed, spared = _parameter_groups(mae, 0.05)
    names = {id(p): n for n, p in mae.named_parameters()}
    assert decayed["weight_decay"] == 0.05 and spared["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and p.dim() == 2 for p in decayed["params"])
    spared_names = {names[id(p)] for p in spared["params"]}
    assert {"encoder.cls_token", "decoder.mask_token", "encoder.layernorm.weight"} <= spared_names
    assert len(decayed["params"]) + len(spared["params"]) == len(list(mae.parameters()))


def test_pretraining_lowers_the_masked_loss_and_repeats_with_its_seed():
    generator = torch.Generator().manual_seed(0)
    blobs = (torch.rand(512, 1, 7, 7, generator=generator) > 0.5).float()
    images = torch.nn.functional.interpolate(blobs, scale_factor=4).reshape(512, 28, 28)  # learnable structure
    runs = []
    for _ in range(2):
        mae = seeded_mae()
        before = masked_loss(mae, images[:128], seed=5)
        history = pretrain_mae(mae, images, epochs=3, lr=3e-3, batch_size=64, seed=0, test_images=images[:128])
        runs.append(mae)
        assert not mae.training and len(history["test_loss"]) == len(history["train_loss"]) == 3
        assert masked_loss(mae, images[:128], seed=5) < 0.9 * before
    assert all(torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))


def test_pretraining_refuses_bad_settings_in_one_line():
    mae, images = seeded_mae(), torch.rand(8, 784)
    for change, message in (
        ({"epochs": 0}, "epochs must be a whole number >= 1"),
        ({"lr": 0.0}, "learning rate must be a positive, finite number"),
        ({"batch_size": 2.5}, "batch_size must be a whole number >= 1"),
    ):
        settings = {"epochs": 1, "lr": 1e-3, "batch_size": 4, "seed": 0, **change}
        with pytest.raises(ValueError, match=message):
            pretrain_mae(mae, images, **settings)
    with pytest.raises(ValueError, match="No images to train on"):
        pretrain_mae(mae, images[:0], epochs=1, lr=1e-3, batch_size=4, seed=0)


def test_the_benchmark_script_runs_and_writes_its_numbers(fashion_root, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PTFT_DATA", str(fashion_root))
    spec = importlib.util.spec_from_file_location("bench_vit", REPO_ROOT / "benchmarks" / "bench_vit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--batch-size", "8", "--steps", "2", "--repeats", "1", "--json", str(tmp_path / "vit.json")])
    written = json.loads((tmp_path / "vit.json").read_text())
    assert set(written["runs"]) == {f"{n}, {k}" for n in ("by hand", "Hugging Face") for k in ("train step", "forward")}
    assert written["flops"] > 0 and written["peak"] > 0 and "by hand / Hugging Face" in capsys.readouterr().out
