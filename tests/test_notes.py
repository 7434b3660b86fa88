"""Synthetic notes and the patient-grouped split: seeded, plausible, hard enough, well supported."""

from __future__ import annotations

import re

import numpy as np
import pytest

from steuops.data import Notes, split_indices, split_notes
from steuops.demo.notes import CLASSES, generate, to_frame
from steuops.errors import ConfigError


@pytest.fixture(scope="module")
def notes() -> Notes:
    return generate(n=1200, seed=3)


def test_generate_is_seeded_and_reproducible():
    a, b = generate(n=120, seed=11), generate(n=120, seed=11)
    assert a.texts == b.texts and a.labels == b.labels and a.patient_ids == b.patient_ids
    c = generate(n=120, seed=12)
    assert a.texts != c.texts


def test_ids_and_sizes(notes):
    assert len(notes) == 1200
    assert notes.note_ids[0] == "N000001" and notes.note_ids[-1] == "N001200"
    assert len(set(notes.note_ids)) == len(notes)
    per_patient = np.unique(notes.patient_ids, return_counts=True)[1]
    assert per_patient.max() >= 3 and (per_patient > 1).sum() > 50  # readmissions exist
    assert all(labels and set(labels) <= set(CLASSES) for labels in notes.labels)


def test_every_class_is_well_supported(notes):
    counts = notes.class_counts()
    for c in CLASSES:
        assert counts.get(c, 0) >= 0.08 * len(notes), (c, counts)


def test_clinically_plausible_cooccurrence(notes):
    y = notes.multi_hot(CLASSES)
    together = (y[:, :, None] * y[:, None, :]).sum(axis=0)
    idx = {c: j for j, c in enumerate(CLASSES)}
    plausible = [("sepsis", "pneumonia"), ("sepsis", "acute kidney injury"), ("copd exacerbation", "pneumonia"),
                 ("diabetic ketoacidosis", "acute kidney injury")]
    implausible = ("copd exacerbation", "diabetic ketoacidosis")
    for a, b in plausible:
        assert together[idx[a], idx[b]] > 3 * together[idx[implausible[0]], idx[implausible[1]]] + 10, (a, b)
    assert (y.sum(axis=1) > 1).mean() > 0.2  # a real multi-label problem


def test_notes_carry_negations_abbreviations_numbers_and_sections(notes):
    text = "\n".join(notes.texts)
    for needle in ["no evidence of sepsis", "pneumonia ruled out", "dka", "chf", "copd", "aki", "bnp", "wbc"]:
        assert needle in text.lower(), needle
    first = notes.texts[0]
    for section in ["Chief complaint:", "HPI:", "Medications:", "Vitals:", "Labs:", "Assessment and plan:"]:
        assert section in first
    assert re.search(r"HR \d+, BP \d+/\d+", first)


def test_negated_mentions_appear_in_notes_without_that_label(notes):
    negated = [i for i, t in enumerate(notes.texts) if "No evidence of sepsis" in t or "Sepsis was ruled out" in t]
    assert len(negated) > 10
    assert np.mean(["sepsis" not in notes.labels[i] for i in negated]) > 0.9


def test_class_name_does_not_always_appear(notes):
    # The classifier must read findings: many positive notes never name their diagnosis.
    y = notes.multi_hot(CLASSES)
    for j, name in enumerate(["sepsis", "pneumonia", "heart failure"]):
        positive = [notes.texts[i].lower() for i in np.flatnonzero(y[:, j])]
        named = np.mean([name in t for t in positive])
        assert 0.2 < named < 0.85, (name, named)


def test_label_noise_is_a_parameter():
    clean, noisy = generate(n=400, seed=5, label_noise=0.0), generate(n=400, seed=5, label_noise=0.5)
    assert clean.texts == noisy.texts
    changed = np.mean([a != b for a, b in zip(clean.labels, noisy.labels, strict=True)])
    assert 0.3 < changed < 0.6


def test_note_length_follows_sentence_bounds():
    short = generate(n=100, seed=1, min_sentences=2, max_sentences=3)
    long = generate(n=100, seed=1, min_sentences=12, max_sentences=14)
    assert np.mean([len(t) for t in long.texts]) > 1.3 * np.mean([len(t) for t in short.texts])
    with pytest.raises(ValueError):
        generate(n=10, min_sentences=5, max_sentences=2)


def test_split_groups_by_patient_and_is_reproducible(notes):
    train, test = split_notes(notes, test_fraction=0.2, seed=0)
    assert len(train) + len(test) == len(notes)
    assert not set(train.patient_ids) & set(test.patient_ids)
    assert 0.17 < len(test) / len(notes) < 0.23
    again = split_notes(notes, test_fraction=0.2, seed=0)[1]
    assert again.note_ids == test.note_ids
    other = split_notes(notes, test_fraction=0.2, seed=1)[1]
    assert other.note_ids != test.note_ids
    assert test.note_ids == sorted(test.note_ids)  # original order kept


def test_split_is_approximately_stratified(notes):
    train, test = split_notes(notes, test_fraction=0.25, seed=4)
    whole, held = notes.class_counts(), test.class_counts()
    for c in CLASSES:
        assert abs(held[c] / whole[c] - 0.25) < 0.07, (c, held[c], whole[c])


def test_split_without_patients_and_bad_fraction():
    plain = Notes(texts=[f"t{i}" for i in range(50)], labels=[["a"] if i % 2 else ["b"] for i in range(50)])
    train_idx, test_idx = split_indices(plain, test_fraction=0.3, seed=0)
    assert len(test_idx) == 15 and not set(train_idx) & set(test_idx)
    tiny = Notes(texts=["x", "y"], labels=[["a"], ["a"]])
    assert len(split_notes(tiny, 0.1)[1]) == 1  # something is always held out
    with pytest.raises(ConfigError):
        split_notes(plain, test_fraction=1.0)


def test_to_frame_matches_split(notes):
    df = to_frame(notes, test_fraction=0.2, seed=0)
    assert list(df.columns) == ["note_id", "patient_id", "text", "labels", "split"]
    assert len(df) == len(notes) and isinstance(df.labels.iloc[0], list)
    _, test = split_notes(notes, test_fraction=0.2, seed=0)
    assert sorted(df.loc[df.split == "test", "note_id"]) == test.note_ids
    assert set(df.split) == {"train", "test"}


def test_notes_and_tiny_tokenizer_do_not_depend_on_the_hash_seed():
    # CI once failed because a set's iteration order (PYTHONHASHSEED) changed the notes and the vocabulary.
    import os
    import subprocess
    import sys

    code = ("import hashlib; from steuops.demo.notes import generate; from steuops.tiny import wordpiece_tokenizer; "
            "n = generate(n=120, seed=3); t = wordpiece_tokenizer(n.texts, vocab_size=300); "
            "print(hashlib.sha256(repr((n.texts, n.labels, sorted(t.get_vocab().items()))).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True).stdout.strip() for seed in ("1", "2", "3")}
    assert len(digests) == 1, digests
