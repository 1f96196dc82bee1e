"""Notebook 09's trials (``ptft_helpers.lora_trials``) on a small ViT and made-up images: what each method trains,
the choice on validation, the test scored once, the cost counts. Nothing is downloaded; nothing is timed."""

from __future__ import annotations

import copy

import pytest
import torch

from ptft_helpers import lora, vit
from ptft_helpers import lora_trials as lt

SMALL = vit.ViTConfig(width=32, depth=2, heads=2, decoder_width=16, decoder_depth=1, decoder_heads=2)
BUDGET = lt.Budget(steps=4, batch_size=16, check_every=2)
PROBE = lt.Method("linear probe", start="pretrained", trains="head", lrs=())
LORA = lt.Method("LoRA r=2", start="pretrained", trains="lora", lrs=(1e-3, 1e-2), rank=2)
FULL = lt.Method("full fine-tuning", start="pretrained", trains="all", lrs=(1e-3,))
LPFT = lt.Method("LP-FT", start="probe", trains="all", lrs=(1e-3,))
SCRATCH = lt.Method("scratch", start="scratch", trains="all", lrs=(1e-3,))


@pytest.fixture(scope="module")
def base():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return vit.to_hf_classifier(vit.ViTClassifier(SMALL)).eval()


def make(base):
    return lambda: copy.deepcopy(base), lambda: type(base)(vit.hf_classifier_config(SMALL))


@pytest.fixture(scope="module")
def task():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 10
    images = torch.rand(300, 1, 28, 28, generator=generator) * 0.3
    images[:, 0, :, :10] += labels[:, None, None] / 10  # a class signal in the left columns
    return lt.Task("made-up", images[:200], labels[:200], images[200:], labels[200:])


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_each_method_trains_what_it_says(base):
    make_base, make_scratch = make(base)
    probe = lt.build(PROBE, 0, make_base, make_scratch)
    assert trainable_names(probe) == {"classifier.weight", "classifier.bias"}
    adapted = lt.build(LORA, 0, make_base, make_scratch)
    names = trainable_names(adapted)
    assert names and all("lora_" in n or "classifier" in n for n in names)
    assert lora.trainable_count(adapted) == SMALL.depth * 2 * 2 * (32 + 32) + 32 * 10 + 10
    full = lt.build(FULL, 0, make_base, make_scratch)
    assert lora.trainable_count(full) == sum(p.numel() for p in base.parameters())


def test_every_method_of_a_draw_starts_from_the_same_head_and_lpft_from_the_probes(base):
    make_base, make_scratch = make(base)
    a, b = lt.build(FULL, 3, make_base, make_scratch), lt.build(PROBE, 3, make_base, make_scratch)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, lt.build(FULL, 4, make_base, make_scratch).classifier.weight)
    head = {k: torch.full_like(v, 0.5) for k, v in base.classifier.state_dict().items()}
    lpft = lt.build(LPFT, 3, make_base, make_scratch, head)
    assert torch.equal(lpft.classifier.weight, head["weight"])
    with pytest.raises(ValueError, match="probe's head"):
        lt.build(LPFT, 3, make_base, make_scratch)
    with pytest.raises(ValueError, match="trains="):
        lt.build(lt.Method("x", "pretrained", "half", (1e-3,)), 0, make_base, make_scratch)


def test_a_trial_chooses_on_validation_and_repeats(base, task):
    make_base, make_scratch = make(base)
    row, model = lt.trial(LORA, task, 50, 1, BUDGET, make_base, make_scratch)
    assert (row["labels"], row["n_train"], row["n_val"]) == (50, 40, 10)
    assert row["lr"] in LORA.lrs and 0 <= row["best_step"] <= BUDGET.steps
    assert row["test_acc"] == lt.accuracy(model, task.test_x, task.test_y)
    assert row["trainable"] == lora.trainable_count(model) and row["file_bytes"] > 0
    # the choice is the best run on validation: accuracy, then cross-entropy, then the smaller rate
    fit_idx, val_idx = lt.split_labelled(task.train_y, 50, BUDGET.val_size(50), 1)
    scores = []
    for lr in LORA.lrs:
        history, _ = lt.train_run(lt.build(LORA, 1, make_base, make_scratch), task, fit_idx, val_idx, lr, 1, BUDGET)
        best = history["step"].index(history["best_step"][0])
        scores.append((-history["val_acc"][best], history["val_loss"][best], lr))
    assert min(scores)[2] == row["lr"] and -min(scores)[0] == row["val_acc"]
    again, _ = lt.trial(LORA, task, 50, 1, BUDGET, make_base, make_scratch)
    assert {k: v for k, v in again.items() if "second" not in k} == {k: v for k, v in row.items() if "second" not in k}


def test_the_probe_is_fitted_exactly_and_lpft_starts_from_it(base, task):
    make_base, make_scratch = make(base)
    features = lt.probe_features(base, task, 100)
    row, head = lt.probe_trial(PROBE, task, 50, 0, BUDGET, features)
    assert row["weight_decay"] in lt.WEIGHT_DECAYS and row["trainable"] == 32 * 10 + 10
    # the head, moved onto unstandardised features, classifies the test images as the probe did
    lpft = lt.build(LPFT, 0, make_base, make_scratch, head)
    assert lt.accuracy(lpft, task.test_x, task.test_y) == pytest.approx(row["test_acc"], abs=1 / len(task.test_y))
    rows, kept = lt.sweep([PROBE, LPFT], task, {50: [0, 1]}, BUDGET, make_base, make_scratch, probe=features,
                          keep=lambda r: r["method"] == "LP-FT")  # fmt: skip
    assert [(r["method"], r["seed"]) for r in rows] == [("linear probe", 0), ("LP-FT", 0), ("linear probe", 1),
                                                         ("LP-FT", 1)]  # fmt: skip
    assert rows[0] == {**row, "seconds": rows[0]["seconds"]}
    assert set(kept) == {("LP-FT", 50, 0), ("LP-FT", 50, 1)} and rows[1]["best_step"] >= 0
    with pytest.raises(ValueError, match="probe=probe_features"):
        lt.sweep([PROBE], task, {50: [0]}, BUDGET, make_base, make_scratch)


def test_costs_follow_what_is_trained(base):
    make_base, make_scratch = make(base)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    models = {m.name: lt.build(m, 0, make_base, make_scratch) for m in (PROBE, LORA, FULL)}
    saved = {name: lt.saved_tensor_bytes(m, x, y) for name, m in models.items()}
    assert 0 < saved["linear probe"] < saved["LoRA r=2"] <= saved["full fine-tuning"]
    files = {m.name: lt.file_bytes(models[m.name], m) for m in (PROBE, LORA, FULL)}
    assert files["linear probe"] < files["LoRA r=2"] < files["full fine-tuning"]
    assert files["linear probe"] >= 4 * (32 * 10 + 10)
    seconds = lt.step_seconds(models, x, y, steps=1, rounds=2)
    assert set(seconds) == set(models) and all(s > 0 for s in seconds.values())
