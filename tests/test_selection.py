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
