"""Synthetic notes and the patient-grouped split: seeded, plausible, hard enough, well supported."""

from __future__ import annotations

import re

import numpy as np
import pytest

from steuops.data import Notes, split_indices, split_notes
from steuops.demo.notes import _TYPOS, CLASSES, _bank, _generate, generate, to_frame
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
    lower = text.lower()
    for needle in ["no evidence of", "ruled out", "dka", "chf", "copd", "aki", "bnp", "wbc", "lactate", "cxr",
                   "norepinephrine", "levophed", "vanc/zosyn", "mL/kg", "bicarb", "duonebs", "furosemide"]:
        assert needle.lower() in lower, needle
    # Several note styles, each ending with an assessment and plan.
    for opener in ["Chief complaint:", "CC:", "Brief hospital course:", "ED sign-out:", "A/P:", "Assessment and plan:"]:
        assert sum(t.startswith(opener) for t in notes.texts) > 10, opener
    assert sum(bool(re.search(r"HR \d+ BP \d+/\d+", t)) for t in notes.texts) > 30  # vitals lines
    assert sum(bool(re.search(r"^(# |- |1[.)] )", t, re.M)) for t in notes.texts) > 0.5 * len(notes)  # bullets


def test_notes_are_moderately_short():
    # The classifier keeps a note's last 128 word pieces: notes stay short and end with the plan.
    words = np.array([len(t.split()) for t in generate(n=600, seed=2).texts])
    assert 80 <= np.median(words) <= 170 and np.percentile(words, 95) < 260 and words.min() > 25


# Words that point at each class (names, findings, drugs), to see where in a note its diagnosis shows.
_EVIDENCE = {
    "sepsis": r"lactate|lactic|pressor|norepi|levo|culture|bcx|seps|septic|bacteremia|hypotens|\bmap\b|shock|source",
    "pneumonia": r"pneumonia|\bpna\b|\bcap\b|consolidation|infiltrate|opacit|cough|sputum|crackles|rales|cxr|azithro",
    "heart failure": r"heart failure|\bchf\b|adhf|hfref|bnp|edema|jv[dp]|diures|lasix|furosemide|\bef\b|weight|gdmt",
    "acute kidney injury": r"kidney|renal|\baki\b|\batn\b|\bcr\b|creat|scr|bun|uop|urine output|fena|nephro|hydro",
    "copd exacerbation": r"copd|wheez|nebs|albuterol|predni|steroid|bipap|nippv|\bniv\b|pco2|hypercap|bronch|inhaler",
    "diabetic ketoacidosis": r"\bdka\b|keto|insulin|\bag\b|gap|bicarb|hco3|glucose|\bbg\b|bhb|hyperglyc|acidosis",
}


def test_the_end_of_a_note_carries_its_diagnosis(notes):
    # The demo classifier keeps a note's last 128 word pieces (about 70 words): the plan comes last.
    for c, pattern in _EVIDENCE.items():
        rows = [i for i, labels in enumerate(notes.labels) if labels == [c]]
        ends = [" ".join(notes.texts[i].split()[-70:]) for i in rows]
        assert np.mean([bool(re.search(pattern, end, re.I)) for end in ends]) > 0.9, c


def test_negated_mentions_appear_in_notes_without_that_label(notes):
    negated = [i for i, t in enumerate(notes.texts)
               if re.search(r"(no (evidence|signs) of|low concern for|no concern for) (sepsis|septic shock)|"
                            r"sepsis (was )?ruled out", t, re.I)]
    assert len(negated) > 10
    assert np.mean(["sepsis" not in notes.labels[i] for i in negated]) > 0.9
    for word in ["pneumonia", "heart failure", "AKI", "COPD", "DKA"]:  # every class is negated somewhere
        assert re.search(rf"(no evidence of|ruled out|not|no) [^.]{{0,30}}{word}|{word}[^.]{{0,20}}(ruled out|unlikely|excluded)",
                         "\n".join(notes.texts), re.I), word


def test_class_name_does_not_always_appear(notes):
    # The classifier must read findings: many positive notes never name their diagnosis.
    y = notes.multi_hot(CLASSES)
    names = {"sepsis": r"sepsis|septic", "pneumonia": r"pneumonia|\bpna\b|\bcap\b",
             "diabetic ketoacidosis": r"\bdka\b|ketoacidosis"}
    for name, pattern in names.items():
        positive = [notes.texts[i] for i in np.flatnonzero(y[:, CLASSES.index(name)])]
        named = np.mean([bool(re.search(pattern, t, re.I)) for t in positive])
        assert 0.2 < named < 0.85, (name, named)
    never = generate(n=400, seed=3, mention_rate=0.0, label_noise=0.0)
    sepsis = [t for t, labels in zip(never.texts, never.labels, strict=True) if "sepsis" in labels]
    assert np.mean([bool(re.search(names["sepsis"], t, re.I)) for t in sepsis]) < 0.15  # only history names it


def test_label_noise_is_a_parameter():
    clean, noisy = generate(n=400, seed=5, label_noise=0.0), generate(n=400, seed=5, label_noise=0.5)
    assert clean.texts == noisy.texts
    changed = np.mean([a != b for a, b in zip(clean.labels, noisy.labels, strict=True)])
    assert 0.3 < changed < 0.6
    some = np.mean([a != b for a, b in zip(clean.labels, generate(n=400, seed=5).labels, strict=True)])
    assert 0.005 < some < 0.07  # the default 3%


def test_label_noise_rate_is_roughly_as_set():
    clean = generate(n=2000, seed=6, label_noise=0.0)
    noisy = generate(n=2000, seed=6, label_noise=0.1)
    changed = np.mean([a != b for a, b in zip(clean.labels, noisy.labels, strict=True)])
    assert 0.075 < changed < 0.125, changed
    assert all(noisy.labels)  # noise never leaves a note unlabelled


def test_prefix_property_and_ids():
    # Notes are made one after another: fewer notes are the first ones of more.
    short, long = generate(n=50, seed=8), generate(n=130, seed=8)
    assert long.texts[:50] == short.texts and long.labels[:50] == short.labels
    assert long.patient_ids[:50] == short.patient_ids and long.patient_ids[0] == "P00001"
    assert long.meta == {"source": "steuops.demo.notes", "seed": 8, "classes": CLASSES}


def _sentences(text: str) -> list[str]:
    """A note's sentences and plan items with numbers masked: phrasings, not values."""
    parts = re.split(r"(?<=[.;])\s+|\n", text)
    return [re.sub(r"\d+(\.\d+)?", "#", p.strip().lower()) for p in parts if len(p.split()) >= 3]


def test_each_class_is_described_in_hundreds_of_ways():
    # A phrasing counts for a class when every note that carries it has the class (so no filler, shared or
    # negated sentence). The old generator had about 8 fixed finding sentences per class.
    notes = generate(n=2000, seed=3, label_noise=0.0, typo_rate=0.0)
    where: dict[str, set[int]] = {}
    for i, text in enumerate(notes.texts):
        for sentence in _sentences(text):
            where.setdefault(sentence, set()).add(i)
    labels = [set(x) for x in notes.labels]
    for c in CLASSES:
        own = [s for s, rows in where.items() if all(c in labels[i] for i in rows)]
        assert len(own) > 1000, (c, len(own))
    # No single sentence dominates: the most frequent class-specific phrasing is in under 5% of notes.
    top = max(len(rows) for s, rows in where.items() if len({frozenset(labels[i]) for i in rows}) == 1)
    assert top < 0.05 * len(notes), top


def test_misspellings_follow_typo_rate_on_their_own_stream():
    clean = generate(n=300, seed=4, typo_rate=0.0)
    typos = generate(n=300, seed=4, typo_rate=0.05)
    assert clean.labels == typos.labels
    clean_words = [t.split(" ") for t in clean.texts]
    typo_words = [t.split(" ") for t in typos.texts]
    assert [len(w) for w in clean_words] == [len(w) for w in typo_words]  # same notes, words changed in place
    changed = np.mean([a != b for x, y in zip(clean_words, typo_words, strict=True) for a, b in zip(x, y, strict=True)])
    assert 0.01 < changed < 0.05, changed  # short words and numbers are left alone
    known = set(_TYPOS.values())
    found = sum(w.strip(".,;:").lower() in known for words in typo_words for w in words)
    assert found > 20 and not any(w.strip(".,;:").lower() in known for words in clean_words for w in words)
    default = generate(n=300, seed=4)
    assert 0.005 < np.mean([a != b for x, y in zip(clean.texts, default.texts, strict=True)
                            for a, b in zip(x.split(" "), y.split(" "), strict=True)]) < 0.02


def test_every_slot_and_value_the_grammar_names_exists():
    from steuops.demo import notes as module

    known_values = set(module._VALUES) | {"age", "sexw", "sexl", "sexword", "Pron", "obj", "poss"}
    missing: set[str] = set()

    def walk(parts) -> None:
        if isinstance(parts, str):
            return
        for part in parts:
            if isinstance(part, str):
                continue
            kind, what = part
            if kind == 0 and what not in known_values:
                missing.add("{" + what + "}")
            elif kind == 1 and what not in module._COMPILED:
                missing.add("<" + what + ">")
            elif kind == 2:
                for alt in what:
                    walk(alt)

    for alts in module._COMPILED.values():
        for alt in alts:
            walk(alt)
    for parts, _ in module._SHARED_COMPILED:
        walk(parts)
    assert not missing, missing
    for c in CLASSES:  # every class has each kind of phrase
        key = module._KEY[c]
        for kind in ("ment", "find", "brief", "head", "plan", "neg", "cc", "hist", "chron"):
            assert len(module._COMPILED[f"{kind}:{key}"]) >= 4, (c, kind)


def test_bank_halves_are_disjoint_and_cover_the_bank():
    full, a, b = _bank(None), _bank("a"), _bank("b")
    split = [name for name in full if (":" in name or name[:2] in {"s_", "p_", "h_", "k_", "c_", "d_"})]
    assert len(split) > 60
    for name in split:
        if len(full[name]) > 1:
            assert not set(a[name]) & set(b[name]) and len(a[name]) + len(b[name]) == len(full[name]), name
    assert all(a[name] == full[name] for name in full if name.startswith("g_"))  # shared words stay shared
    half = _generate(300, 1, bank="a")
    assert half.texts != generate(n=300, seed=1).texts and len(half) == 300
    with pytest.raises(ValueError):
        _generate(10, 0, bank="c")




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
