"""Metrics against hand-computed values, and parameter accounting by real state-dict diff."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from steuops import modeling
from steuops.data import Notes
from steuops.metrics import evaluate, f1_scores, param_diff, scores
from steuops.tiny import classifier, wordpiece_tokenizer

LABELS = ["sepsis", "pneumonia", "copd"]


def test_f1_by_hand():
    y_true = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    y_pred = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]])
    # col0: tp=1 fp=1 fn=1 -> 2/4; col1: tp=2 fp=1 fn=0 -> 4/5; col2: nothing true or predicted -> 0
    assert f1_scores(y_true, y_pred) == pytest.approx([0.5, 0.8, 0.0])
    s = scores(y_true, y_pred, LABELS, ["sepsis"])
    assert s.forget_f1 == pytest.approx(0.5) and s.forget_f1_per_class == {"sepsis": pytest.approx(0.5)}
    assert s.retain_macro_f1 == pytest.approx(0.4)
    assert s.macro_f1 == pytest.approx(1.3 / 3)
    two = scores(y_true, y_pred, LABELS, ["sepsis", "pneumonia"])
    assert two.forget_f1 == pytest.approx(0.8) and two.retain_macro_f1 == 0.0


def test_never_predicting_forget_class_gives_zero():
    y_true = np.array([[1, 0], [1, 0], [0, 1]])
    y_pred = np.array([[0, 0], [0, 1], [0, 1]])
    assert f1_scores(y_true, y_pred)[0] == 0.0
    with pytest.raises(ValueError):
        f1_scores(y_true, y_pred[:, :1])


def test_param_diff_counts_elements():
    base = classifier(LABELS, 40)
    edited = copy.deepcopy(base)
    assert param_diff(base, edited) == (0, modeling.count_parameters(base), 0.0)
    with torch.no_grad():
        modeling.embedding(edited).weight[5, :3] += torch.tensor([3.0, 0.0, 4.0])  # one of three unchanged
        edited.classifier.bias[1] += 2.0
    modified, total, l2 = param_diff(base, edited)
    assert modified == 3 and total == modeling.count_parameters(base)
    assert l2 == pytest.approx(np.sqrt(9 + 16 + 4), rel=1e-6)


def _notes():
    texts = ["fever lactate hypotension sepsis", "cough infiltrate pneumonia fever", "wheeze copd inhaler",
             "lactate sepsis cultures", "infiltrate consolidation cough", "wheeze inhaler steroids copd"] * 3
    labels = [["sepsis"], ["pneumonia", "sepsis"], ["copd"], ["sepsis"], ["pneumonia"], ["copd"]] * 3
    return Notes(texts, labels)


@pytest.mark.parametrize("multi", [True, False])
def test_evaluate_hand_checked(multi):
    notes = _notes()
    if not multi:
        notes = Notes(notes.texts, [lab[:1] for lab in notes.labels])
    tok = wordpiece_tokenizer(notes.texts, vocab_size=80)
    base = classifier(LABELS, len(tok), multi_label=multi)
    edited = copy.deepcopy(base)
    with torch.no_grad():
        edited.classifier.bias[0] = -1e4  # sepsis can never be predicted again
    before_fp = modeling.fingerprint(base)
    ev = evaluate(base, edited, tok, notes, ["sepsis"], device="cpu", batch_size=4, max_length=16)
    assert modeling.fingerprint(base) == before_fp

    y_true = notes.multi_hot(LABELS)
    raw = modeling.logits(base, tok, notes.texts, max_length=16)
    pred = modeling.predict(raw, multi)
    for j, name in enumerate(LABELS):  # F1 by hand, from counts
        tp = sum(1 for i in range(len(notes)) if y_true[i, j] and pred[i, j])
        fp = sum(1 for i in range(len(notes)) if not y_true[i, j] and pred[i, j])
        fn = sum(1 for i in range(len(notes)) if y_true[i, j] and not pred[i, j])
        expected = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 0.0
        assert ev.before.per_class_f1[name] == pytest.approx(expected)
    assert ev.after.forget_f1 == 0.0
    if multi:  # the other columns' logits are untouched in multi-label
        assert ev.after.retain_macro_f1 == pytest.approx(ev.before.retain_macro_f1)
    assert ev.params_modified == 1 and ev.params_total == modeling.count_parameters(base)
    assert ev.params_fraction == pytest.approx(1 / ev.params_total)
    assert ev.support == {"sepsis": 9 if multi else 6, "pneumonia": 6, "copd": 6}
    d = ev.to_dict()
    assert d["after"]["forget_f1"] == 0.0 and d["n_test"] == len(notes) and d["forget"] == ["sepsis"]
