"""PMI token selection on a hand-checked example with a fixed, readable vocabulary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from transformers import BertTokenizerFast

from steuops.errors import ConfigError
from steuops.methods.steu.selection import scorable_ids, select_tokens

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "fever", "cough", "lactate", "the", "wheeze"]
FEVER, COUGH, LACTATE, THE, WHEEZE = 5, 6, 7, 8, 9


@pytest.fixture(scope="module")
def tok():
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)


# "qsofa" is not in the vocabulary: it becomes [UNK], a special token that must never be chosen
TEXTS = ["lactate fever fever qsofa qsofa", "lactate the", "cough fever", "the cough wheeze"]
FORGET = np.array([True, True, False, False])


def test_scores_match_hand_computation(tok):
    sel = select_tokens(tok, TEXTS, FORGET, k=5)
    # Scorable V = 5 (fever..wheeze). Forget docs: lactate 2, fever 2, the 1 -> N_f = 5.
    # All docs: lactate 2, fever 3, the 2, cough 2, wheeze 1 -> N = 10. alpha = 1:
    # P(t|forget) = (c_f + 1) / (5 + 5), P(t|all) = (c + 1) / (10 + 5).
    expected = {
        LACTATE: math.log2((3 / 10) / (3 / 15)) * math.log(1 + 2),  # in both forget docs
        FEVER: math.log2((3 / 10) / (4 / 15)) * math.log(1 + 1),  # in one forget doc
        THE: math.log2((2 / 10) / (3 / 15)) * math.log(1 + 1),  # ratio 1 -> 0
        COUGH: math.log2((1 / 10) / (3 / 15)) * math.log(1 + 0),  # in no forget doc -> 0
        WHEEZE: math.log2((1 / 10) / (2 / 15)) * math.log(1 + 0),
    }
    for token_id, value in expected.items():
        assert sel.all_scores[token_id] == pytest.approx(value, abs=1e-12)
    assert sel.ids[:2] == [LACTATE, FEVER]
    assert sel.tokens[:2] == ["lactate", "fever"]
    assert sel.scores[0] == pytest.approx(math.log2(1.5) * math.log(3))
    assert all(np.isneginf(sel.all_scores[i]) for i in range(5))  # specials, [UNK] included
    assert set(sel.ids) == {FEVER, COUGH, LACTATE, THE, WHEEZE}
    assert sel.to_info()[0] == {"id": LACTATE, "token": "lactate", "score": sel.scores[0]}


def test_smoothing_alpha_changes_scores(tok):
    a = select_tokens(tok, TEXTS, FORGET, k=2, alpha=1.0).all_scores[LACTATE]
    b = select_tokens(tok, TEXTS, FORGET, k=2, alpha=0.5).all_scores[LACTATE]
    # alpha = 0.5: P_f = 2.5 / 7.5, P_a = 2.5 / 12.5
    assert b == pytest.approx(math.log2((2.5 / 7.5) / (2.5 / 12.5)) * math.log(3))
    assert a != b


def test_k_bounds_and_errors(tok):
    assert list(scorable_ids(tok)) == [FEVER, COUGH, LACTATE, THE, WHEEZE]
    with pytest.raises(ConfigError, match="k=6") as info:
        select_tokens(tok, TEXTS, FORGET, k=6)
    assert "5" in info.value.hint
    with pytest.raises(ConfigError):
        select_tokens(tok, TEXTS, FORGET, k=0)
    with pytest.raises(ConfigError, match="forget document"):
        select_tokens(tok, TEXTS, np.zeros(4, dtype=bool), k=2)
    # an embedding matrix smaller than the tokenizer limits what can be chosen
    assert list(scorable_ids(tok, vocab_size=7)) == [FEVER, COUGH]


def test_truncation_to_max_length(tok):
    # with max_length=3 only one wordpiece per doc is kept (two positions go to [CLS]/[SEP])
    sel = select_tokens(tok, ["fever lactate", "cough lactate"], np.array([True, False]), k=1, max_length=3)
    assert sel.ids == [FEVER]


# ---- the min-patients rule and the class-specific scorer ------------------------------------------
RULE_VOCAB = VOCAB + ["pigeons", "attic", "lung", "sepsis", "51", "##ors", ",", "we", "days"]
PIGEONS, ATTIC, LUNG, SEPSIS, FIFTY_ONE, ORS, COMMA, WE, DAYS = range(len(VOCAB), len(RULE_VOCAB))


@pytest.fixture(scope="module")
def rule_tok():
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(RULE_VOCAB)}, do_lower_case=True)


def rule_cohort() -> tuple[list[str], np.ndarray, list[str]]:
    """8 forget notes of 6 patients (P1 has three notes), 8 retain notes. "pigeons attic" is in P1's notes
    only; "lactate sepsis" in every forget note; "lung" in 4 forget and 1 retain note."""
    forget = ["pigeons attic lactate sepsis 51 , we days"] * 3 + ["lactate sepsis lung 51 , we days"] * 4 + \
             ["lactate sepsis 51 , we days"]
    retain = ["cough fever lung 51 , we days"] + ["cough wheeze 51 , we days"] * 7
    patients = ["P1", "P1", "P1", "P2", "P3", "P4", "P5", "P6"] + [f"R{i}" for i in range(8)]
    return forget + retain, np.array([True] * 8 + [False] * 8), patients


def test_min_patients_counts_patients_not_notes(rule_tok):
    texts, forget, patients = rule_cohort()
    # without the rule PMI ranks the one patient's words among the best tokens: the rule is what stops them
    free = select_tokens(rule_tok, texts, forget, k=3)
    assert {PIGEONS, ATTIC} & set(free.ids)
    sel = select_tokens(rule_tok, texts, forget, k=10, min_patients=2, groups=patients)
    assert PIGEONS not in sel.ids and ATTIC not in sel.ids
    assert np.isneginf(sel.all_scores[[PIGEONS, ATTIC]]).all()  # not even scored
    assert "pigeons" not in sel.tokens and "attic" not in sel.tokens
    assert LACTATE in sel.ids and SEPSIS in sel.ids and LUNG in sel.ids  # 6, 6 and 4 patients
    # counted, never listed: pigeons and attic occur in one patient's notes (below 2)
    assert sel.stats["tokens_below_min_patients"] == 2
    assert sel.stats["min_patients"] == 2 and "pigeons" not in str(sel.stats)
    # without patient ids each note counts as its own patient: three notes clear a threshold of 2
    by_note = select_tokens(rule_tok, texts, forget, k=10, min_patients=2)
    assert PIGEONS in by_note.ids and ATTIC in by_note.ids
    # a threshold above every token's patient count leaves nothing to select: no rows rather than a rare token
    none = select_tokens(rule_tok, texts, forget, k=3, min_patients=7, groups=patients)
    assert none.ids == [] and none.stats["selected"] == 0 and np.isneginf(none.all_scores).all()


def test_specific_scorer_prefers_forget_only_content_tokens(rule_tok):
    texts, forget, patients = rule_cohort()
    pmi = select_tokens(rule_tok, texts, forget, k=6, min_patients=2, groups=patients)
    spec = select_tokens(rule_tok, texts, forget, k=6, scorer="specific", min_patients=2, groups=patients,
                         max_retain_fraction=0.2)
    # numbers, punctuation and stop words are never chosen; lung (1 of 8 retain notes) is allowed at 0.2
    assert set(spec.ids) == {LACTATE, SEPSIS, LUNG} and spec.ids[:2] == [LACTATE, SEPSIS]
    assert spec.stats["selected"] == 3 < 6  # fewer than k qualify: only those are edited
    assert spec.stats["retain_touched_fraction"] == pytest.approx(1 / 8)
    assert spec.stats["forget_covered_fraction"] == 1.0
    # PMI fills k with whatever remains: tokens present in every retain note
    assert pmi.stats["retain_touched_fraction"] == 1.0 and {FIFTY_ONE, COMMA, WE, DAYS} & set(pmi.ids)
    strict = select_tokens(rule_tok, texts, forget, k=6, scorer="specific", min_patients=2, groups=patients,
                           max_retain_fraction=0.05)
    assert set(strict.ids) == {LACTATE, SEPSIS} and strict.stats["retain_touched_fraction"] == 0.0
    fewer = select_tokens(rule_tok, texts, forget, k=6, scorer="specific", min_patients=2, groups=patients,
                          max_retain_fraction=0.2, min_forget_notes=5)
    assert LUNG not in fewer.ids  # in 4 forget notes only
    with pytest.raises(ConfigError, match="scorer"):
        select_tokens(rule_tok, texts, forget, k=2, scorer="tfidf")


def test_specific_scorer_caps_each_retained_class_share(rule_tok):
    """A token rare among all retain notes but common in one retained class's notes is a token the edit would
    take from that class: with the retained labels given, the cap applies per class (classes with at least
    MIN_CLASS_NOTES retain notes) as well as overall."""
    from steuops.methods.steu.selection import MIN_CLASS_NOTES

    n_class = MIN_CLASS_NOTES + 5
    forget = ["lactate sepsis lung"] * 10
    # "lung" is in 4 of the 25 notes of the first retained class: 16% of that class, 8% of all retain notes
    first = ["cough lung"] * 4 + ["cough"] * (n_class - 4)
    second = ["wheeze"] * n_class
    texts = forget + first + second
    is_forget = np.array([True] * 10 + [False] * (2 * n_class))
    classes = np.zeros((len(texts), 2), dtype=bool)
    classes[10 : 10 + n_class, 0] = True
    classes[10 + n_class :, 1] = True
    kwargs = {"k": 6, "scorer": "specific", "max_retain_fraction": 0.1}
    overall = select_tokens(rule_tok, texts, is_forget, **kwargs)
    assert LUNG in overall.ids  # 8% <= 10% of the retain notes
    per_class = select_tokens(rule_tok, texts, is_forget, classes=classes, **kwargs)
    assert LUNG not in per_class.ids and np.isneginf(per_class.all_scores[LUNG])  # 16% > 10% of the first class
    assert set(per_class.ids) == {LACTATE, SEPSIS}
    # a class with fewer retain notes than MIN_CLASS_NOTES is too small to cap on: only the overall rule applies
    small = classes.copy()
    small[10 + 4 : 10 + n_class, 0] = False
    assert LUNG in select_tokens(rule_tok, texts, is_forget, classes=small, **kwargs).ids
    # the same rule on a seeded retain sample (shares within the sample)
    sampled = select_tokens(rule_tok, texts, is_forget, classes=classes, retain_sample=2 * n_class - 1, **kwargs)
    assert LUNG not in sampled.ids


def test_content_pieces():
    from steuops.methods.steu.selection import is_content_piece

    assert [is_content_piece(t) for t in ["lactate", "##psis", "51", "##51", "1.5", ",", "--", "we", "The", "##s"]] == \
        [True, True, False, False, False, False, False, False, False, False]


def test_hidden_tokens_keep_ids_and_scores(tok):
    sel = select_tokens(tok, TEXTS, FORGET, k=2)
    hidden = sel.to_info(show_tokens=False)
    assert [t["id"] for t in hidden] == sel.ids and [t["score"] for t in hidden] == sel.scores
    assert {t["token"] for t in hidden} == {"[hidden]"}


def test_retain_sample_counts_a_seeded_sample_of_retain_notes(tok, monkeypatch):
    """retain_sample = m: every forget note and m retain notes are tokenized; retain counts are scaled up, so
    where every retain note is alike the scores are the exact ones; forget counts (min_patients) stay exact."""
    from steuops.methods.steu import selection

    texts = ["lactate fever", "lactate fever cough", "lactate", "fever lactate"] + ["the cough wheeze"] * 30
    forget = np.array([True] * 4 + [False] * 30)
    seen: list[str] = []
    encode = selection.encode

    def counting(tokenizer, texts, max_length=None):
        seen.extend(texts)
        return encode(tokenizer, texts, max_length)

    monkeypatch.setattr(selection, "encode", counting)
    for scorer in ("pmi", "specific"):
        exact = select_tokens(tok, texts, forget, k=3, scorer=scorer, min_patients=2, max_retain_fraction=0.5)
        seen.clear()
        sampled = select_tokens(tok, texts, forget, k=3, scorer=scorer, min_patients=2, max_retain_fraction=0.5,
                                retain_sample=5, seed=1)
        assert len(seen) == 4 + 5 and seen[:4] == texts[:4]  # all forget notes + 5 retain notes
        np.testing.assert_allclose(sampled.all_scores, exact.all_scores, rtol=1e-12)
        assert sampled.ids == exact.ids
        assert sampled.stats["retain_notes"] == 30 and sampled.stats["retain_notes_counted"] == 5
        assert sampled.stats["forget_notes"] == 4 and sampled.stats["retain_touched_fraction"] == \
            exact.stats["retain_touched_fraction"]
        assert sampled.stats["tokens_below_min_patients"] == exact.stats["tokens_below_min_patients"]
        assert "retain_notes_counted" not in exact.stats
    # as many or more than there are: every retain note, the exact selection
    seen.clear()
    whole = select_tokens(tok, texts, forget, k=3, retain_sample=30)
    assert len(seen) == 34 and "retain_notes_counted" not in whole.stats
    np.testing.assert_array_equal(whole.all_scores, select_tokens(tok, texts, forget, k=3).all_scores)
    with pytest.raises(ConfigError, match="retain_sample"):
        select_tokens(tok, texts, forget, k=3, retain_sample=-1)


def test_retain_sample_estimates_the_retain_share(tok):
    """Retain notes that differ: the sample's share stands in for the true share (seeded: same seed, same pick)."""
    texts = ["lactate fever"] * 4 + ["cough"] * 40 + ["wheeze"] * 60
    forget = np.array([True] * 4 + [False] * 100)
    one = select_tokens(tok, texts, forget, k=3, scorer="specific", min_patients=0, max_retain_fraction=1.0,
                        retain_sample=50, seed=0)
    assert one.ids == select_tokens(tok, texts, forget, k=3, scorer="specific", min_patients=0,
                                    max_retain_fraction=1.0, retain_sample=50, seed=0).ids
    assert set(one.ids) == {LACTATE, FEVER}
    touched = one.stats["retain_touched_fraction"]
    assert touched == 0.0 and one.stats["retain_notes_counted"] == 50
