"""The shared fine-tuning loop on tiny in-code models: it learns, is reproducible, handles both heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steuops import modeling
from steuops.data import Notes, split_notes
from steuops.errors import ConfigError
from steuops.tiny import classifier
from steuops.training import TrainConfig, fine_tune, targets

LABELS = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation", "diabetic ketoacidosis"]
FAST = TrainConfig(epochs=3, lr=3e-3, batch_size=16, max_length=96, seed=0, warmup=0.1)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def mean_loss(model, tokenizer, notes: Notes, *, max_length: int, device: str = "cpu", batch_size: int = 32) -> float:
    """The training objective (unweighted) of `model` over `notes`, in eval mode: BCE on the multi-hot targets
    or cross-entropy on each note's first known label, as fine_tune trains (a check that training helped)."""
    rows, y = targets(model, notes)
    logits = torch.from_numpy(modeling.logits(model, tokenizer, [notes.texts[i] for i in rows], batch_size=batch_size,
                                              max_length=max_length, device=torch.device(device)))
    loss = torch.nn.BCEWithLogitsLoss() if modeling.is_multi_label(model) else torch.nn.CrossEntropyLoss()
    return float(loss(logits, torch.from_numpy(y)))


def test_fine_tune_lowers_the_loss(tiny_notes, tiny_tokenizer, tiny_model):
    before = mean_loss(tiny_model, tiny_tokenizer, tiny_notes, max_length=96, device="cpu")
    steps: list[tuple[str, int, int]] = []
    model = fine_tune(tiny_model, tiny_tokenizer, tiny_notes, FAST, device="cpu",
                      progress=lambda *a: steps.append(a))
    after = mean_loss(model, tiny_tokenizer, tiny_notes, max_length=96, device="cpu")
    # 45 steps take a 32-wide model from random (0.665) to about the label-prior loss (0.557); a loop that does
    # not learn stays at the start.
    assert after < 0.9 * before, (before, after)
    assert steps[-1] == ("train", 45, 45) and len(steps) == 45  # 240 notes / 16 x 3 epochs
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_fine_tune_is_reproducible_on_cpu(tiny_notes, tiny_tokenizer):
    cfg = TrainConfig(epochs=1, lr=3e-3, batch_size=32, max_length=64, seed=5)
    runs = []
    for _ in range(2):
        model = classifier(LABELS, vocab_size=len(tiny_tokenizer), seed=1)
        runs.append(modeling.fingerprint(fine_tune(model, tiny_tokenizer, tiny_notes, cfg, device="cpu")))
    other = classifier(LABELS, vocab_size=len(tiny_tokenizer), seed=1)
    other_fp = modeling.fingerprint(fine_tune(other, tiny_tokenizer, tiny_notes,
                                              TrainConfig(epochs=1, lr=3e-3, batch_size=32, max_length=64, seed=6),
                                              device="cpu"))
    assert runs[0] == runs[1] != other_fp


def test_single_label_fine_tune(tiny_notes, tiny_tokenizer):
    # One label per note (the first), a softmax head: cross-entropy must fit it.
    single = Notes(texts=tiny_notes.texts, labels=[[x[0]] for x in tiny_notes.labels])
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), multi_label=False, seed=0)
    assert not modeling.is_multi_label(model)
    before = mean_loss(model, tiny_tokenizer, single, max_length=64, device="cpu")
    fine_tune(model, tiny_tokenizer, single, TrainConfig(epochs=8, lr=5e-3, max_length=64), device="cpu")
    after = mean_loss(model, tiny_tokenizer, single, max_length=64, device="cpu")
    # 45 steps take a 32-wide model from random (0.665) to about the label-prior loss (0.557); a loop that does
    # not learn stays at the start.
    assert after < 0.9 * before, (before, after)
    pred = modeling.logits(model, tiny_tokenizer, single.texts, max_length=64).argmax(axis=1)
    gold = np.array([LABELS.index(x[0]) for x in single.labels])
    assert (pred == gold).mean() > 1.5 / len(LABELS)  # well above chance


def test_labels_the_model_lacks_are_ignored(tiny_tokenizer):
    notes = Notes(texts=["fever", "cough", "rash"], labels=[["sepsis", "mystery"], ["pneumonia"], ["mystery"]])
    multi = classifier(LABELS, vocab_size=len(tiny_tokenizer))
    rows, y = targets(multi, notes)
    assert rows.tolist() == [0, 1, 2] and y.shape == (3, 6) and y[2].sum() == 0 and y[0, 0] == 1
    single = classifier(LABELS, vocab_size=len(tiny_tokenizer), multi_label=False)
    rows, y = targets(single, notes)
    assert rows.tolist() == [0, 1] and y.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="model's labels"):
        fine_tune(single, tiny_tokenizer, notes.subset([2]), FAST, device="cpu")


def test_freeze_embeddings_keeps_them_fixed(tiny_notes, tiny_tokenizer):
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), arch="distilbert", seed=2)
    before = _weights(model)
    cfg = TrainConfig(epochs=1, lr=3e-3, batch_size=32, max_length=64, freeze_embeddings=True)
    fine_tune(model, tiny_tokenizer, split_notes(tiny_notes)[0], cfg, device="cpu")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("distilbert.embeddings.") for k in changed)
    assert any(k.startswith("distilbert.transformer.") for k in changed)
    assert all(p.requires_grad for p in model.parameters())  # freezing is undone afterwards


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_freeze_layers_keeps_the_embeddings_and_the_lowest_layers_fixed(tiny_notes, tiny_tokenizer, arch):
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), arch=arch, layers=2, seed=2)
    layers = modeling.encoder_layers(model)
    lower, upper = ({id(p) for p in layer.parameters()} for layer in layers)
    names = {id(p): n for n, p in model.named_parameters()}
    before = _weights(model)
    cfg = TrainConfig(epochs=1, lr=3e-3, batch_size=32, max_length=64, freeze_layers=1)
    fine_tune(model, tiny_tokenizer, split_notes(tiny_notes)[0], cfg, device="cpu")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(".embeddings." in k for k in changed)
    assert not changed & {names[i] for i in lower}
    assert changed & {names[i] for i in upper} and changed & set(modeling.head_param_names(model))
    assert all(p.requires_grad for p in model.parameters())  # freezing is undone afterwards


def test_freeze_layers_must_leave_a_layer_to_train(tiny_notes, tiny_tokenizer):
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), layers=2)
    with pytest.raises(ConfigError, match="freeze_layers 2 leaves none of the model's 2"):
        fine_tune(model, tiny_tokenizer, tiny_notes, TrainConfig(max_length=32, freeze_layers=2), device="cpu")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="freeze_layers"):
        TrainConfig(freeze_layers=-1)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta", "mpnet", "xlm-roberta", "electra", "deberta-v2"])
def test_encoder_layers_are_found_in_every_family(arch):
    model = classifier(LABELS, vocab_size=100, arch=arch, layers=3)
    layers = modeling.encoder_layers(model)
    assert len(layers) == 3 and len({id(layer) for layer in layers}) == 3


def test_shared_layers_cannot_be_frozen_one_by_one():
    from steuops.errors import ModelError

    with pytest.raises(ModelError, match="separate encoder layers"):
        modeling.encoder_layers(classifier(LABELS, vocab_size=100, arch="albert", layers=3))


def test_head_lr_and_bad_config():
    assert TrainConfig(head_lr=1e-3).to_dict()["head_lr"] == 1e-3
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="warmup"):
        TrainConfig(warmup=1.5)


def test_balance_raises_recall_of_rare_classes(tiny_notes, tiny_tokenizer):
    # Short runs with plain BCE sit at "always negative"; weighting positives by neg/pos must lift recall.
    y = tiny_notes.multi_hot(LABELS)
    recalls = []
    for balance in (False, True):
        model = classifier(LABELS, vocab_size=len(tiny_tokenizer), seed=0)
        cfg = TrainConfig(epochs=2, lr=3e-3, batch_size=16, max_length=64, balance=balance)
        fine_tune(model, tiny_tokenizer, tiny_notes, cfg, device="cpu")
        pred = modeling.predict(modeling.logits(model, tiny_tokenizer, tiny_notes.texts, max_length=64), True)
        recalls.append((pred * y).sum() / y.sum())
    assert recalls[1] > recalls[0] + 0.2, recalls


def test_cpu_bf16_autocast_only_when_asked_and_supported(monkeypatch):
    """autocast casts on CUDA always, on a CPU only when asked and the CPU has native bf16 (and STEUOPS_CPU_BF16 is
    not 0); training_precision, which a version records, names what it does."""
    from steuops import env

    monkeypatch.delenv(env.CPU_BF16_ENV, raising=False)
    model, x, cpu = torch.nn.Linear(4, 2), torch.randn(3, 4), torch.device("cpu")
    native = modeling.cpu_has_bf16()
    assert modeling.training_precision(torch.device("cuda")) == "bf16"
    # (asked, STEUOPS_CPU_BF16, casts): the default stays exact; the switch off is fp32 on a bf16 CPU too
    for asked, switch, casts in ((False, None, False), (True, None, native), (True, "0", False)):
        if switch is not None:
            monkeypatch.setenv(env.CPU_BF16_ENV, switch)
        with modeling.autocast(cpu, cpu_bf16=asked):
            assert model(x).dtype == (torch.bfloat16 if casts else torch.float32)
        assert modeling.training_precision(cpu, cpu_bf16=asked) == ("bf16" if casts else "fp32")
    assert TrainConfig(cpu_bf16=True).to_dict()["cpu_bf16"] is True


@pytest.mark.parametrize(("value", "allowed"), [(None, True), ("1", True), ("on", True), ("0", False),
                                                ("off", False), (" False ", False)])
def test_cpu_bf16_setting_reads_on_and_off(monkeypatch, value, allowed):
    from steuops import env

    if value is None:
        monkeypatch.delenv(env.CPU_BF16_ENV, raising=False)
    else:
        monkeypatch.setenv(env.CPU_BF16_ENV, value)
    assert env.cpu_bf16_allowed() is allowed
    if not allowed:
        assert modeling.cpu_has_bf16() is False


def test_a_bad_cpu_bf16_setting_is_exit_2_before_any_command_runs(monkeypatch, tmp_path, capsys):
    from steuops.cli import main

    monkeypatch.setenv("STEUOPS_CPU_BF16", "maybe")
    assert main(["demo", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "STEUOPS_CPU_BF16: expected 0 or 1, got 'maybe'" in err and "Traceback" not in err
    assert not (tmp_path / "home").exists()  # the demo never started: no home, no notes, no training
