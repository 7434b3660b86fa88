"""The forgetting audit on tiny real models: a keyword classifier that genuinely knows the forget
class, STEU applied to it, and a reference retrained without the class. Seconds on a CPU."""

from __future__ import annotations

import json

import engine_data
import numpy as np
import pytest
from engine_data import LABELS

from steuops import bypass
from steuops.audit import AuditConfig, audit_methods, roc_auc, run_audit
from steuops.data import Notes, split_notes
from steuops.errors import ConfigError

FORGET = ["sepsis"]
FAST = dict(max_length=16, batch_size=32, relearn_steps=[0, 5, 25, 60], relearn_lr_head=5e-2, relearn_lr_rows=5e-2)


def keyword_notes(n: int, seed: int) -> Notes:
    return engine_data.keyword_notes(n, seed, filler_words=5)


def _fit(notes: Notes, tok, seed: int = 0):
    from steuops.tiny import classifier
    from steuops.training import TrainConfig, fine_tune

    # hidden=64 and a faster head: the smallest recipe that reliably learns every class in seconds.
    model = classifier(LABELS, len(tok), seed=seed, hidden=64)
    return fine_tune(model, tok, notes, TrainConfig(epochs=8, lr=3e-3, head_lr=1e-2, max_length=16, batch_size=16,
                                                    warmup=0.0, seed=seed), device="cpu")


def steu_world(n_notes: int, seed: int):
    """(original, steu result, tokenizer, train, test): a tiny keyword classifier and STEU on it."""
    from steuops.methods import unlearn
    from steuops.tiny import wordpiece_tokenizer

    notes = keyword_notes(n_notes, seed=seed)
    train, test = split_notes(notes, 0.3, seed=0)
    tok = wordpiece_tokenizer(notes.texts, vocab_size=120)
    original = _fit(train, tok)
    steu = unlearn("steu", original, tok, FORGET, train, {"k": 8, "epochs": 5, "max_length": 16}, device="cpu")
    return original, steu, tok, train, test


@pytest.fixture(scope="module")
def world():
    """(original, steu result, reference, tokenizer, train, test)."""
    original, steu, tok, train, test = steu_world(320, seed=0)
    # The gold reference: the same recipe on the same notes with the class removed from the labels.
    without = Notes(train.texts, [[c for c in ls if c not in FORGET] for ls in train.labels])
    reference = _fit(without, tok, seed=1)
    return original, steu, reference, tok, train, test


@pytest.fixture(scope="module")
def report(world):
    original, steu, reference, tok, train, test = world
    return run_audit(original, steu.model, tok, FORGET, train, test, reference=reference, config=AuditConfig(**FAST),
                     device="cpu", edit=steu.edit).to_dict()


def test_auc_matches_hand_computed_examples():
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 3], [2, 4]) == 0.25  # pairs won: (3>2) only, of 4
    assert roc_auc([2, 2], [2, 2]) == 0.5  # all ties count one half
    assert roc_auc([1, 2, 3], [2]) == pytest.approx((0 + 0.5 + 1) / 3)
    assert roc_auc([], [1.0]) is None
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 200), rng.normal(0, 1, 300)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(pos, neg) == pytest.approx(brute)


def test_report_is_json_with_the_keys_the_gate_reads(report):
    data = json.loads(json.dumps(report))
    for key in ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1", "relearn_curves", "config"):
        assert key in data
    assert set(data["probe_f1"]) == {"original", "edited", "reference"}
    assert set(data["relearn_f1"]) >= {"edited", "reference"}
    assert data["config"]["relearn_steps"] == [0, 5, 25, 60]


def test_probe_is_perfect_on_separable_features_and_chance_on_shuffled_ones():
    from steuops.audit import _probe_f1

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.int8)
    x = rng.normal(0, 0.1, (300, 8))
    x[:, 2] += 3.0 * y  # one feature separates the class with a wide margin
    cfg = AuditConfig()
    assert _probe_f1(x[:200], y[:200], x[200:], y[200:], cfg) == 1.0
    # rows shuffled against the labels: nothing to read; no better than calling every note positive
    p = y[200:].mean()
    shuffled = [_probe_f1(x[:200][rng.permutation(200)], y[:200], x[200:], y[200:], cfg) for _ in range(8)]
    assert np.mean(shuffled) < 2 * p / (1 + p)
    assert _probe_f1(x[:200], np.zeros(200), x[200:], y[200:], cfg) is None  # no positive: nothing to probe


def test_probe_figures_come_from_each_models_features(world, report):
    """The report's probe figure equals a probe on features taken by a separate forward pass; it is high
    where the class is readable (the keyword original; the STEU model, whose encoder is frozen) and falls
    below the all-positive F1 once the train features are shuffled against their labels."""
    import torch

    from steuops.audit import _forward_pass, _probe_f1
    from steuops.modeling import label_names

    original, steu, reference, tok, train, test = world
    cfg = AuditConfig(**FAST)
    col = label_names(original).index("sepsis")
    y_train, y_test = train.multi_hot(LABELS)[:, col], test.multi_hot(LABELS)[:, col]
    for role, model in (("original", original), ("edited", steu.model), ("reference", reference)):
        x_train, x_test = (_forward_pass(model, tok, notes.texts, batch_size=32, max_length=16,
                                         device=torch.device("cpu")).features for notes in (train, test))
        assert report["probe_f1"][role] == report["probe"][role]["per_class"]["sepsis"]
        assert report["probe_f1"][role] == pytest.approx(_probe_f1(x_train, y_train, x_test, y_test, cfg), abs=1e-6)
        if role == "original":
            rng = np.random.default_rng(1)
            shuffled = [_probe_f1(x_train[rng.permutation(len(x_train))], y_train, x_test, y_test, cfg)
                        for _ in range(8)]
            p = y_test.mean()
            assert np.mean(shuffled) < 2 * p / (1 + p) < report["probe_f1"]["original"] - 0.3
    # The class is learnable from the keywords: a probe on the trained original's features finds it.
    assert report["probe_f1"]["original"] >= 0.8
    # STEU leaves the encoder frozen: the class stays linearly readable from the edited features.
    assert report["probe_f1"]["edited"] >= 0.6


def test_relearn_curve_rises_from_the_unlearned_start(world, report):
    curves = report["relearn_curves"]
    head = curves["head"]["edited"]
    assert len(head) == len(curves["steps"]) == 4
    assert head[0] <= 0.2  # STEU did forget behaviourally
    assert head[-1] > head[0] + 0.3  # ...but re-fitting the head alone brings the class back
    assert report["relearn_f1"]["edited"] == head[-1]
    assert curves["original_f1"] >= 0.8
    assert len(curves["rows"]["edited"]) == 4
    assert len(curves["head"]["reference"]) == 4
    # The relearn attack works on copies: after it, the edited model itself still forgets, and its forget F1
    # from a plain forward pass is the curve's step 0.
    from steuops import modeling
    from steuops.metrics import f1_scores

    _original, steu, _reference, tok, _train, test = world
    pred = modeling.predict(modeling.logits(steu.model, tok, test.texts, max_length=16), True)
    col = LABELS.index("sepsis")
    assert f1_scores(test.multi_hot(LABELS), pred)[col] == pytest.approx(head[0], abs=1e-6)


def test_membership_auc_equals_a_pairwise_count_on_the_sepsis_log_likelihood(world, report):
    """Members: train notes with sepsis; non-members: test notes with it; score: log sigmoid of the sepsis
    logit. The AUC is the share of (member, non-member) pairs the member wins, ties one half."""
    from steuops import modeling

    original, steu, reference, tok, train, test = world
    col = LABELS.index("sepsis")
    for role, model in (("original", original), ("edited", steu.model), ("reference", reference)):
        scores = [-np.logaddexp(0.0, -modeling.logits(model, tok, notes.texts, max_length=16)[:, col].astype(float))
                  for notes in (train, test)]
        members, held_out = scores[0][train.has_any(FORGET)], scores[1][test.has_any(FORGET)]
        pairs = np.mean([(a > b) + 0.5 * (a == b) for a in members for b in held_out])
        assert report["membership_auc"][role] == pytest.approx(pairs, abs=1e-9), role
        assert report["membership"][role]["members"] == len(members) == report["sizes"]["forget_train"]
        assert report["membership"][role]["non_members"] == len(held_out) == report["sizes"]["forget_test"]


def test_no_reference_gives_nulls_and_no_edit_skips_the_rows_attack(world):
    original, steu, _, tok, train, test = world
    data = run_audit(original, steu.model, tok, FORGET, train, test, config=AuditConfig(**FAST), device="cpu").to_dict()
    assert data["probe_f1"]["reference"] is None
    assert data["membership_auc"]["reference"] is None
    assert data["relearn_f1"]["reference"] is None
    assert data["relearn_f1"]["edited_rows"] is None
    assert "relearn_rows" in data["skipped"] and "reference" in data["skipped"]
    assert data["probe_f1"]["edited"] is not None


def test_audit_leaves_the_models_untouched(world):
    from steuops.modeling import fingerprint

    original, steu, reference, tok, train, test = world
    before = [fingerprint(m) for m in (original, steu.model, reference)]
    run_audit(original, steu.model, tok, FORGET, train, test, reference=reference,
              config=AuditConfig(**{**FAST, "relearn_steps": [0, 3]}), device="cpu", edit=steu.edit)
    assert [fingerprint(m) for m in (original, steu.model, reference)] == before


def test_bypass_composes_notes_and_uses_user_phrases(world):
    notes = bypass.compose(["urosepsis", "SIRS"])
    assert len(notes) == 2 * len(bypass.TEMPLATES) and all(("urosepsis" in t) or ("SIRS" in t) for t in notes)
    sets = bypass.bypass_sets(LABELS, FORGET, ["lactate bacteremia"])
    assert any("lactate bacteremia" in t for t in sets["sepsis"]["positive"])
    assert not any("urosepsis" in t for t in sets["sepsis"]["negative"])  # the forget class is never a negative
    assert any("CHF exacerbation" in t for t in sets["sepsis"]["negative"])
    assert bypass.bypass_sets(["x", "y"], ["x"]) == {}

    original, steu, reference, tok, train, test = world
    cfg = {**FAST, "relearn_steps": [0]}
    plain = run_audit(original, steu.model, tok, FORGET, train, test, config=AuditConfig(**cfg), device="cpu")
    user = run_audit(original, steu.model, tok, FORGET, train, test, device="cpu",
                     config=AuditConfig(**cfg, bypass_phrases=["lactate bacteremia pressors", "cultures lactate"]))
    plain, user = plain.to_dict(), user.to_dict()
    assert user["bypass"]["positives"]["sepsis"] == plain["bypass"]["positives"]["sepsis"] + 2 * len(bypass.TEMPLATES)
    # The keyword model knows nothing of "urosepsis" but the user's keyword phrases are sepsis to it.
    assert user["bypass_recall"]["original"] > plain["bypass_recall"]["original"]
    rows = [r for r in user["bypass"]["phrases"] if r["phrase"] == "cultures lactate"]
    assert rows and 0.0 <= rows[0]["edited"] <= 1.0


def test_load_phrases_from_a_file(tmp_path):
    path = tmp_path / "phrases.txt"
    path.write_text("# my rewordings\nblood stream infection\n\n  sepsis NOS  \n")
    assert bypass.load_phrases(path) == ["blood stream infection", "sepsis NOS"]
    assert bypass.load_phrases(["a", " ", "b"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="no such bypass phrase file"):
        bypass.load_phrases(tmp_path / "missing.txt")


def test_audit_methods_compares_each_method_with_the_retrain_reference(world):
    original, steu, reference, tok, train, test = world
    out = audit_methods(original, tok, FORGET, train, test, {"steu": steu, "retrain": reference},
                        config=AuditConfig(**{**FAST, "relearn_steps": [0, 10]}), device="cpu")
    assert set(out) == {"steu", "retrain"}
    assert out["steu"]["probe_f1"]["reference"] == out["retrain"]["probe_f1"]["edited"]
    assert out["retrain"]["relearn_f1"]["edited_rows"] is None  # a bare model: no rows to re-fit
    assert out["steu"]["relearn_f1"]["edited_rows"] is not None


def test_bad_config_is_a_usage_error():
    with pytest.raises(ConfigError, match="unknown audit option"):
        AuditConfig.from_dict({"probe_stepz": 3})
    with pytest.raises(ConfigError, match="relearn_steps"):
        AuditConfig(relearn_steps=[-1]).validate()


@pytest.mark.parametrize("arch", ["distilbert", "bert"])
def test_single_label_and_other_architectures_audit_an_unchanged_copy_as_the_original(arch):
    """The head-input tap and the encoder replay are generic: DistilBERT's pre_classifier head and a
    single-label (softmax) model work too. An unchanged copy must score exactly like the original."""
    import copy

    from steuops.tiny import classifier, wordpiece_tokenizer

    notes = keyword_notes(96, seed=5)
    single = Notes(notes.texts, [ls[:1] for ls in notes.labels])
    train, test = split_notes(single, 0.3, seed=0)
    tok = wordpiece_tokenizer(notes.texts, vocab_size=120)
    original = classifier(LABELS, len(tok), arch=arch, multi_label=False, hidden=32, seed=2)
    twin = copy.deepcopy(original)
    data = run_audit(original, twin, tok, FORGET, train, test, config=AuditConfig(**{**FAST, "relearn_steps": [0, 5]}),
                     device="cpu", edit=[5, 6, 7]).to_dict()
    assert data["probe_f1"]["edited"] == data["probe_f1"]["original"]
    assert data["membership_auc"]["edited"] == pytest.approx(data["membership_auc"]["original"])
    assert data["bypass_f1"]["edited"] == data["bypass_f1"]["original"]
    # Step 0 of the head replay equals a full forward pass of the unchanged model.
    assert data["relearn_curves"]["head"]["edited"][0] == pytest.approx(data["relearn_curves"]["original_f1"])
    assert len(data["relearn_curves"]["rows"]["edited"]) == 2


def test_edited_model_reuses_the_originals_encoder_outputs_exactly(world):
    """With the edit known, the edited model's passes run the encoder only on texts with an edited token;
    the rest take the original's encoder outputs. Logits and probe features equal full passes."""
    import torch

    from steuops.audit import _auditor, _forward_pass

    original, steu, reference, tok, train, test = world
    auditor = _auditor(tok, FORGET, train, test, AuditConfig(**FAST), "cpu", None)
    auditor.share_encoder(original, steu.model, steu.edit.token_ids)
    auditor.share_encoder(original, reference, steu.edit.token_ids)  # retrained encoder: must not share
    assert id(steu.model) in auditor._twins and id(reference) not in auditor._twins
    for which, texts in (("train", auditor.train.texts), ("test", auditor.test.texts)):
        shared = auditor.passes(steu.model, which)
        full = _forward_pass(steu.model, tok, texts, batch_size=32, max_length=16, device=torch.device("cpu"))
        np.testing.assert_allclose(shared.logits, full.logits, atol=1e-5, rtol=0)
        np.testing.assert_allclose(shared.features, full.features, atol=1e-5, rtol=0)
    assert 0 < auditor.shortcut_notes < len(auditor.train) + len(auditor.test)  # some, not all, were shared


def test_audit_with_and_without_the_shared_encoder_agree(world, report):
    original, steu, reference, tok, train, test = world
    assert report["sizes"]["shortcut_notes"] > 0
    # the same audit, with the shortcut impossible (the edit's rows unknown -> full passes everywhere)
    plain = run_audit(original, steu.model, tok, FORGET, train, test, reference=reference,
                      config=AuditConfig(**FAST), device="cpu").to_dict()
    assert plain["sizes"]["shortcut_notes"] == 0
    for key in ("probe_f1", "membership_auc", "bypass_f1"):
        assert plain[key]["edited"] == pytest.approx(report[key]["edited"], abs=1e-4)
    assert plain["relearn_curves"]["head"]["edited"] == pytest.approx(report["relearn_curves"]["head"]["edited"],
                                                                       abs=1e-4)
