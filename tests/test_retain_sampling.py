"""Retain sampling (retain_per_forget > 0) runs the teacher pass on the cohort, not the corpus.

With r x n_forget retain notes drawn per epoch, sparse_unlearn tokenizes and runs through the frozen original
only the forget notes (held-out ones included) and, as each epoch starts, the retain notes it drew
(loop.SampledTeacher). The old path ran every note of the split up front; it is kept behind the private flag
method._SAMPLED_TEACHER = False, and the two must train identically: same losses, same rows and head.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from engine_data import keyword_notes, trained_classifier

from steuops.methods import loop, unlearn
from steuops.methods.steu import method

# early stopping off unless a case turns it on: these tests compare teacher passes, not when training ends
CFG = {"k": 8, "epochs": 4, "max_length": 16, "lr": 1e-2, "head_lr": 1e-2, "early_stop": False}


@pytest.fixture(scope="module")
def multi():
    notes = keyword_notes(200, seed=0)
    model, tok = trained_classifier(notes)
    return model, tok, notes


@pytest.fixture(scope="module")
def single():
    notes = keyword_notes(200, seed=0, multi_label=False)
    model, tok = trained_classifier(notes, arch="distilbert", multi_label=False)
    return model, tok, notes


def whole_split(monkeypatch, *args, **kwargs):
    """The old path: every note tokenized and run by the teacher pass before training."""
    with monkeypatch.context() as m:
        m.setattr(method, "_SAMPLED_TEACHER", False)
        return unlearn(*args, **kwargs)


def assert_same_training(a, b, atol: float = 1e-5) -> None:
    """The same losses, rows and head. Callers train in float64: the two paths batch notes differently, float32
    rounds a row by the batch around it on some CPUs (MKL's AVX2 kernels, the 2-core EPYC), and Adam scales that up
    past 1e-5 where a gradient is near zero (test_architectures.py's shortcut test has the figures)."""
    assert len(a.info["losses"]) == len(b.info["losses"])
    for x, y in zip(a.info["losses"], b.info["losses"], strict=True):
        assert x["forget"] == pytest.approx(y["forget"], abs=atol)
        assert x["retain"] == pytest.approx(y["retain"], abs=atol)
    assert a.edit.token_ids == b.edit.token_ids
    torch.testing.assert_close(a.edit.rows, b.edit.rows, atol=atol, rtol=0)
    assert a.edit.head.keys() == b.edit.head.keys()
    for name in a.edit.head:
        torch.testing.assert_close(a.edit.head[name], b.edit.head[name], atol=atol, rtol=0)
    assert a.info["early_stop"] == b.info["early_stop"]
    assert a.info["retain_touched_fraction"] == b.info["retain_touched_fraction"]


@pytest.mark.parametrize(("name", "method_name", "options"), [
    # a quarter of the forget notes' count drawn per epoch: most retain notes are never run
    ("steu, r=0.25", "steu", {"retain_per_forget": 0.25, "epochs": 3}),
    ("steu, r=1", "steu", {"retain_per_forget": 1.0}),
    ("steu, early stopping", "steu", {"retain_per_forget": 0.5, "epochs": 12, "early_stop": True, "holdout": 0.2,
                                      "stop_forget_f1": 0.1, "stop_retain_delta": 0.2}),
    ("steu, no shortcut", "steu", {"retain_per_forget": 0.5, "shortcut": False}),
    ("head_only", "head_only", {"retain_per_forget": 0.5}),
    ("embedding_only", "embedding_only", {"retain_per_forget": 0.5}),
    ("random_tokens", "random_tokens", {"retain_per_forget": 0.5, "k": 16}),
])
def test_sampled_teacher_trains_like_the_whole_split(multi, monkeypatch, name, method_name, options):
    model, tok, notes = multi
    model = copy.deepcopy(model).double()  # float64: see assert_same_training
    cfg = {**CFG, **options}
    fast = unlearn(method_name, model, tok, ["sepsis"], notes, cfg, device="cpu")
    slow = whole_split(monkeypatch, method_name, model, tok, ["sepsis"], notes, cfg, device="cpu")
    assert_same_training(fast, slow)
    assert slow.info["shortcut"]["notes"] == len(notes) and "split_notes" not in slow.info["shortcut"]
    assert fast.info["shortcut"]["split_notes"] == len(notes)
    assert notes.has_any(["sepsis"]).sum() <= fast.info["shortcut"]["notes"] <= len(notes)
    assert fast.info["shortcut"]["used"] == slow.info["shortcut"]["used"] == cfg.get("shortcut", True)
    if cfg["retain_per_forget"] < 0.5:
        assert fast.info["shortcut"]["notes"] < 0.7 * len(notes)


def test_sampled_teacher_single_label(single, monkeypatch):
    model, tok, notes = single
    model = copy.deepcopy(model).double()  # float64: see assert_same_training
    cfg = {**CFG, "retain_per_forget": 0.3, "scorer": "pmi"}
    fast = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    slow = whole_split(monkeypatch, "steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    assert_same_training(fast, slow)
    assert fast.info["shortcut"]["notes"] < len(notes)


def drawn_notes(notes, ratio: float, epochs: int, seed: int) -> set[int]:
    """Every forget note plus the retain notes the epochs draw (train's calls of epoch_order, replayed)."""
    forget = torch.from_numpy(notes.has_any(["sepsis"]))
    generator = torch.Generator().manual_seed(seed)
    drawn = set(np.flatnonzero(forget.numpy()).tolist())
    for _ in range(epochs):
        drawn |= set(loop.epoch_order(forget, ratio, generator).tolist())
    return drawn


def test_teacher_runs_only_forget_and_drawn_retain_notes(multi, monkeypatch):
    model, tok, notes = multi
    ran: list[int] = []
    tokenized: list[str] = []
    teacher_pass, encode = loop.teacher_pass, loop.Batches._encode

    def counting_pass(model, batches, batch_size, *, features=True, rows=None):
        ran.extend(range(len(batches)) if rows is None else rows)
        return teacher_pass(model, batches, batch_size, features=features, rows=rows)

    def counting_encode(self, texts):
        tokenized.extend(texts)
        return encode(self, texts)

    monkeypatch.setattr(loop, "teacher_pass", counting_pass)  # SampledTeacher's passes
    monkeypatch.setattr(method, "teacher_pass", counting_pass)  # sparse_unlearn's up-front pass (r = 0)
    monkeypatch.setattr(loop.Batches, "_encode", counting_encode)
    cfg = {**CFG, "retain_per_forget": 0.25, "epochs": 3, "seed": 3}
    result = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")

    expected = drawn_notes(notes, 0.25, 3, seed=3)
    assert len(ran) == len(set(ran))  # each note runs once
    assert set(ran) == expected  # the forget notes and the drawn retain notes, nothing else
    assert len(tokenized) == len(expected)  # for training; token selection tokenizes on its own
    assert len(expected) < 0.6 * len(notes)  # so the whole split would have failed the line above
    assert result.info["shortcut"]["notes"] == len(expected)

    # the default (every retain note every epoch) still runs the whole split, once
    ran.clear()
    tokenized.clear()
    unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "epochs": 2}, device="cpu")
    assert sorted(ran) == list(range(len(notes))) and len(tokenized) == len(notes)


def test_held_out_notes_are_run_before_training(multi, monkeypatch):
    """Early stopping scores the held-out forget notes after the first epoch: they were run with the forget
    notes, by the ORIGINAL head (swapped in: the head has trained by the time later notes are run)."""
    model, tok, notes = multi
    model = copy.deepcopy(model).double()  # float64: see assert_same_training
    cfg = {**CFG, "retain_per_forget": 0.25, "epochs": 6, "early_stop": True, "holdout": 0.2,
           "stop_forget_f1": 0.1, "stop_retain_delta": 1.0}
    result = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    record = result.info["early_stop"]
    assert record["used"] and record["holdout_notes"] > 0
    slow = whole_split(monkeypatch, "steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    assert_same_training(result, slow)


def test_sampled_teacher_keeps_the_original_head(multi):
    """Notes first run after an epoch get the original model's logits, not the partly trained head's."""
    model, tok, notes = multi
    from steuops import modeling

    edited = loop.frozen_copy(model, torch.device("cpu"))
    batches = loop.Batches(tok, notes, 16, torch.device("cpu"), lazy=True)
    teach = loop.SampledTeacher(edited, batches, 8, features=True)
    assert teach.run([5, 1, 5]) == [1, 5] and teach.run([1]) == []
    head = [p for n, p in edited.named_parameters() if n in set(modeling.head_param_names(edited))]
    with torch.no_grad():
        for p in head:
            p.add_(1.0)  # as if trained
    moved = [p.detach().clone() for p in head]
    teach.run(range(10))
    for p, m in zip(head, moved, strict=True):
        assert torch.equal(p, m)  # the trained head is back, bit for bit
    full = loop.Batches(tok, notes, 16, torch.device("cpu"))
    reference, cache = loop.teacher_pass(loop.frozen_copy(model, torch.device("cpu")), full, 8)
    torch.testing.assert_close(teach.logits[:10], reference[:10], atol=1e-5, rtol=0)
    assert teach.done[:10].all() and not teach.done[10:].any()
    assert (teach.logits[10:] == 0).all() and all(batches.ids[i] is None for i in range(10, len(notes)))
    first = teach.cache.take(list(range(10)))
    for key, value in cache.fields.items():
        if value is not None:
            torch.testing.assert_close(first.fields[key], value[:10], atol=1e-5, rtol=0)
    # the teacher's cache holds the notes run, not the split: memory follows the sampled cohort
    assert teach.cache.stored == 10 and len(teach.cache) == len(notes)
    assert all(v is None or len(v) < len(notes) for v in teach.cache.fields.values())


def test_selection_retain_notes_is_an_explicit_option(multi):
    """STEUConfig.selection_retain_notes (default 0: every retain note) bounds what token selection tokenizes."""
    from steuops.errors import ConfigError
    from steuops.methods.steu.method import STEUConfig

    model, tok, notes = multi
    assert STEUConfig().selection_retain_notes == 0
    with pytest.raises(ConfigError, match="selection_retain_notes"):
        STEUConfig(selection_retain_notes=-1)
    exact = unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1, "retain_per_forget": 1.0},
                    device="cpu")
    sampled = unlearn("steu", model, tok, ["sepsis"], notes,
                      {**CFG, "epochs": 1, "retain_per_forget": 1.0, "selection_retain_notes": 40}, device="cpu")
    assert "retain_notes_counted" not in exact.info["selection"]
    assert sampled.info["selection"]["retain_notes_counted"] == 40
    assert sampled.info["selection"]["retain_notes"] == exact.info["selection"]["retain_notes"] > 40
    assert {t["token"] for t in sampled.info["tokens"]} == {t["token"] for t in exact.info["tokens"]} == \
        {"lactate", "bacteremia", "pressors", "cultures"}
    assert sampled.config["selection_retain_notes"] == 40
    assert exact.info["retain_touched_notes"] == exact.info["selection"]["retain_notes"]
    assert sampled.info["retain_touched_notes"] == 40
