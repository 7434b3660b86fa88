"""The forgetting audit on tiny real models: a keyword classifier that genuinely knows the forget
class, STEU applied to it, and a reference retrained without the class. Seconds on a CPU."""

from __future__ import annotations

import copy
import json

import engine_data
import numpy as np
import pytest
from engine_data import LABELS

from steuops import bypass
from steuops.audit import AuditConfig, audit_methods, depth_of, linear_cka, roc_auc, run_audit
from steuops.data import Notes, split_notes
from steuops.errors import ConfigError

FORGET = ["sepsis"]
# seeds=1 and a short sweep / retain fine-tune: the tests that pin other things stay quick
FAST = dict(max_length=16, batch_size=32, relearn_steps=[0, 5, 25, 60], relearn_lr_head=5e-2, relearn_lr_rows=5e-2,
            seeds=1, relearn_sizes=[4], retain_relearn_steps=2, retain_relearn_notes=16)
# the module's report: two seeds, an attacker size larger than the split, a few retain-relearn steps on every model
REPORT = {**FAST, "seeds": 2, "relearn_sizes": [4, 16, 1000], "retain_relearn_steps": 3, "retain_relearn_notes": 32,
          "retain_relearn_lr": 1e-3, "gradient_seeds": 2, "retain_relearn_controls": True}


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
    return run_audit(original, steu.model, tok, FORGET, train, test, reference=reference, config=AuditConfig(**REPORT),
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
    for key in ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1", "relearn_curves", "config", "seeds", "spread",
                "relearn_sizes", "retain_relearn_f1", "cka"):
        assert key in data
    assert data["schema"] == "steuops.audit/v2"
    assert set(data["probe_f1"]) == {"original", "edited", "reference"}
    assert set(data["relearn_f1"]) >= {"edited", "reference"}
    assert set(data["retain_relearn_f1"]) == {"original", "edited", "reference"}
    assert set(data["cka"]) == {"edited_vs_original", "edited_vs_reference", "reference_vs_original"}
    assert data["config"]["relearn_steps"] == [0, 5, 25, 60]
    assert data["seeds"] == [0, 1]
    assert set(data["seconds"]) >= {"probe", "relearn", "relearn_sizes", "membership", "retain_relearn", "cka", "bypass"}


def test_probe_is_perfect_on_separable_features_and_chance_on_shuffled_ones():
    from steuops.audit.stats import probe_f1

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.int8)
    x = rng.normal(0, 0.1, (300, 8))
    x[:, 2] += 3.0 * y  # one feature separates the class with a wide margin
    cfg = AuditConfig()
    assert probe_f1(x[:200], y[:200], x[200:], y[200:], cfg) == 1.0
    # rows shuffled against the labels: nothing to read; no better than calling every note positive
    p = y[200:].mean()
    shuffled = [probe_f1(x[:200][rng.permutation(200)], y[:200], x[200:], y[200:], cfg) for _ in range(8)]
    assert np.mean(shuffled) < 2 * p / (1 + p)
    assert probe_f1(x[:200], np.zeros(200), x[200:], y[200:], cfg) is None  # no positive: nothing to probe


def test_a_probe_stopped_at_probe_steps_is_counted_not_printed():
    """lbfgs short of its tolerance: the fit says so (counted into the report), and sklearn's ConvergenceWarning
    never reaches the user's terminal or CI log."""
    import warnings

    from steuops.audit.stats import probe_fit

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.int8)
    x = rng.normal(0, 1.0, (300, 16))
    x[:, 2] += 1.5 * y
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        short = probe_fit(x[:200], y[:200], x[200:], y[200:], AuditConfig(probe_steps=2))
        full = probe_fit(x[:200], y[:200], x[200:], y[200:], AuditConfig())
    assert short[1] is True and full[1] is False
    assert full[0] is not None and full[0] > 0.5
    assert not [w for w in seen if "converge" in str(w.message).lower()]


def test_report_names_the_capped_probe_fits():
    from steuops.report import _capped_note

    audit = {"probe": {"original": {"capped": 3}, "edited": {"capped": 0}, "reference": {"capped": 1}},
             "config": {"probe_steps": 300}}
    assert _capped_note(audit) == " Fits that stopped at 300 iterations short of the tolerance: original 3, retrained 1."
    assert _capped_note({"probe": {"edited": {"capped": 0}}}) == ""


def test_probe_figures_come_from_each_models_features(world, report):
    """The report's probe figure equals a probe on features taken by a separate forward pass; it is high
    where the class is readable (the keyword original; the STEU model, whose encoder is frozen) and falls
    below the all-positive F1 once the train features are shuffled against their labels."""
    import torch

    from steuops.audit.passes import forward_pass
    from steuops.audit.stats import probe_f1
    from steuops.modeling import label_names

    original, steu, reference, tok, train, test = world
    cfg = AuditConfig(**FAST)
    col = label_names(original).index("sepsis")
    y_train, y_test = train.multi_hot(LABELS)[:, col], test.multi_hot(LABELS)[:, col]
    for role, model in (("original", original), ("edited", steu.model), ("reference", reference)):
        x_train, x_test = (forward_pass(model, tok, notes.texts, batch_size=32, max_length=16,
                                        device=torch.device("cpu")).features for notes in (train, test))
        assert report["probe_f1"][role] == report["probe"][role]["per_class"]["sepsis"]
        assert report["probe_f1"][role] == pytest.approx(probe_f1(x_train, y_train, x_test, y_test, cfg), abs=1e-6)
        if role == "original":
            rng = np.random.default_rng(1)
            shuffled = [probe_f1(x_train[rng.permutation(len(x_train))], y_train, x_test, y_test, cfg)
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
    # the rows re-fit (it trains through the encoder) stops at relearn_rows_steps (default 25): steps 0, 5, 25
    assert len(curves["rows"]["edited"]) == 3 and report["config"]["relearn_rows_steps"] == 25
    assert report["relearn_f1"]["edited_rows"] == curves["rows"]["edited"][-1]
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
    from steuops.audit.stats import auc_error, auc_resamples, gap_error

    original, steu, reference, tok, train, test = world
    col = LABELS.index("sepsis")
    resamples = {}
    for role, model in (("original", original), ("edited", steu.model), ("reference", reference)):
        scores = [-np.logaddexp(0.0, -modeling.logits(model, tok, notes.texts, max_length=16)[:, col].astype(float))
                  for notes in (train, test)]
        members, held_out = scores[0][train.has_any(FORGET)], scores[1][test.has_any(FORGET)]
        pairs = np.mean([(a > b) + 0.5 * (a == b) for a in members for b in held_out])
        assert report["membership_auc"][role] == pytest.approx(pairs, abs=1e-9), role
        # uncapped samples: every seed has the whole cohort, so one count per seed, all equal
        assert report["membership"][role]["members"] == [len(members)] * 2 == report["sizes"]["forget_train"]
        assert report["membership"][role]["non_members"] == [len(held_out)] * 2 == report["sizes"]["forget_test"]
        # its sampling error: the bootstrap over these same scores; with every note in every seed's sample, the
        # seeds agree (std 0) and the sampling error is the only error bar the figure has
        spread = report["spread"]["membership_auc"][role]
        assert spread["std"] == 0.0 and spread["error"] > 0
        assert spread["error"] == pytest.approx(auc_error(members, held_out), abs=1e-6)
        probe = report["spread"]["probe_f1"][role]
        assert probe["error"] == report["probe"][role]["error"] and 0 <= probe["error"] < 0.5
        resamples[role] = auc_resamples(members, held_out)
    # the edited model's gap to the reference has its own error: both resampled on the same notes (paired)
    gap = report["spread"]["membership_auc"]["edited"]["gap_error"]
    assert gap == pytest.approx(gap_error(resamples["edited"], resamples["reference"]), abs=1e-5)
    assert "gap_error" in report["spread"]["probe_f1"]["edited"]
    assert "gap_error" not in report["spread"]["membership_auc"]["reference"]
    # the resamples that gave it stay out of audit.json
    assert all("resamples" not in cell for one in report["per_seed"] for section in ("probe", "membership")
               for cell in one[section].values())


def test_no_reference_gives_nulls_and_no_edit_skips_the_rows_attack(world):
    original, steu, _, tok, train, test = world
    cfg = AuditConfig(**{**FAST, "relearn_sizes": [], "retain_relearn_steps": 0})
    data = run_audit(original, steu.model, tok, FORGET, train, test, config=cfg, device="cpu").to_dict()
    assert data["probe_f1"]["reference"] is None
    assert data["membership_auc"]["reference"] is None
    assert data["relearn_f1"]["reference"] is None
    assert data["relearn_f1"]["edited_rows"] is None
    assert data["cka"]["edited_vs_reference"] is None and data["cka"]["reference_vs_original"] is None
    assert data["cka"]["edited_vs_original"] is not None
    assert data["spread"]["probe_f1"]["reference"] == {"mean": None, "std": None, "values": [None], "error": None}
    assert "relearn_rows" in data["skipped"] and "reference" in data["skipped"]
    assert data["probe_f1"]["edited"] is not None
    # the sweep and the retain relearn switched off: recorded as skipped, nothing measured
    assert data["relearn_sizes"] == {} and "relearn_sizes" in data["skipped"]
    assert data["retain_relearn_f1"] == {"original": None, "edited": None, "reference": None}
    assert "retain_relearn" in data["skipped"]


def test_every_encoder_pass_and_attack_evaluation_tells_its_progress(world):
    """A first audit runs long encoder passes (a new reference over every note): each is a progress phase named by
    the model's role, batch by batch from 0 to the end, so a CI log is not silent through them."""
    original, steu, reference, tok, train, test = world
    calls: list[tuple[str, int, int]] = []
    data = run_audit(original, steu.model, tok, FORGET, train, test, reference=reference, config=AuditConfig(**FAST),
                     device="cpu", edit=steu.edit, progress=lambda *call: calls.append(call)).to_dict()
    passes = [c for c in calls if c[0].endswith(" pass") or c[0] == "attack evaluation"]
    assert {c[0] for c in passes} >= {"original pass", "reference pass", "attack evaluation"}
    runs: list[list[tuple[str, int, int]]] = []
    for call in passes:  # each pass: (phase, 0, n), (phase, 1, n), ..., (phase, n, n)
        if call[1] == 0:
            runs.append([])
        runs[-1].append(call)
    for run in runs:
        total = run[0][2]
        assert [c[1] for c in run] == list(range(total + 1)) and {c[2] for c in run} == {total}
    batches = FAST["batch_size"]
    for role in ("original", "reference"):
        told = sum(run[0][2] for run in runs if run[0][0] == f"{role} pass")
        notes = data["sizes"]["encoder_notes"][role]
        assert -(-notes // batches) <= told <= notes  # every note counted, in batches of at most batch_size


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
                        config=AuditConfig(**{**FAST, "relearn_steps": [0, 10], "retain_relearn_controls": True}),
                        device="cpu")
    assert set(out) == {"steu", "retrain"}
    assert out["steu"]["probe_f1"]["reference"] == out["retrain"]["probe_f1"]["edited"]
    assert out["retrain"]["relearn_f1"]["edited_rows"] is None  # a bare model: no rows to re-fit
    assert out["steu"]["relearn_f1"]["edited_rows"] is not None
    # the costly retain relearn of the shared models ran once per seed and serves every method
    assert out["steu"]["retain_relearn_f1"]["reference"] == out["retrain"]["retain_relearn_f1"]["edited"]
    assert out["steu"]["retain_relearn_f1"]["original"] == out["retrain"]["retain_relearn_f1"]["original"]


def test_bad_config_is_a_usage_error():
    with pytest.raises(ConfigError, match="unknown audit option"):
        AuditConfig.from_dict({"probe_stepz": 3})
    with pytest.raises(ConfigError, match="relearn_steps"):
        AuditConfig(relearn_steps=[-1]).validate()
    for bad, field in ((dict(seeds=0), "seeds"), (dict(seeds=1.5), "seeds"), (dict(relearn_sizes=[16, 0]), "relearn_sizes"),
                       (dict(retain_relearn_steps=-1), "retain_relearn_steps"),
                       (dict(retain_relearn_notes=0), "retain_relearn_notes"),
                       (dict(retain_relearn_lr=0.0), "retain_relearn_lr"),
                       (dict(relearn_rows_steps=0), "relearn_rows_steps")):
        with pytest.raises(ConfigError, match=field) as err:
            AuditConfig(**bad).validate()
        assert err.value.hint, bad
    # the new fields' edges that are allowed: one seed, no sweep, no retain relearn; sizes sorted, deduplicated
    cfg = AuditConfig(seeds=1, relearn_sizes=[64, 16, 64], retain_relearn_steps=0).validate()
    assert cfg.relearn_sizes == [16, 64] and cfg.seeds == 1
    assert AuditConfig(relearn_sizes=[]).validate().relearn_sizes == []
    assert AuditConfig(relearn_rows_steps=None).validate().rows_steps() == [0, 5, 10, 25, 50]
    assert AuditConfig(relearn_rows_steps=7).validate().rows_steps() == [0, 5]


def test_audit_depths():
    """thorough = the gradient attacks' earlier budget on every seed, with controls; standard = the defaults."""
    standard, thorough = AuditConfig.at_depth("standard"), AuditConfig.at_depth("thorough", seed=4)
    assert standard == AuditConfig()
    assert thorough.seed == 4 and thorough.gradient_seeds == thorough.seeds and thorough.retain_relearn_controls
    # as far a move per parameter (steps x rate), in twice the steps
    assert thorough.retain_relearn_steps >= 2 * standard.retain_relearn_steps
    assert thorough.retain_relearn_steps * thorough.retain_relearn_lr == pytest.approx(
        standard.retain_relearn_steps * standard.retain_relearn_lr, rel=0.05)
    assert thorough.rows_steps() == thorough.relearn_steps and len(standard.rows_steps()) < len(standard.relearn_steps)
    assert thorough.relearn_lr_rows == standard.relearn_lr_rows / 2
    assert depth_of(standard.to_dict()) == "standard" and depth_of(thorough.to_dict()) == "thorough"
    assert depth_of(AuditConfig(gradient_seeds=2).to_dict()) is None  # a budget set option by option
    assert depth_of(AuditConfig(seeds=5, max_test=100).to_dict()) == "standard"  # other options are not the depth
    with pytest.raises(ConfigError, match="unknown audit depth 'deep'") as err:
        AuditConfig.at_depth("deep")
    assert "standard, thorough" in err.value.hint


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
    config = AuditConfig(**{**FAST, "relearn_steps": [0, 5], "retain_relearn_controls": True})
    data = run_audit(original, twin, tok, FORGET, train, test, config=config, device="cpu", edit=[5, 6, 7]).to_dict()
    assert data["probe_f1"]["edited"] == data["probe_f1"]["original"]
    assert data["membership_auc"]["edited"] == pytest.approx(data["membership_auc"]["original"])
    assert data["bypass_f1"]["edited"] == data["bypass_f1"]["original"]
    # Step 0 of the head replay equals a full forward pass of the unchanged model.
    assert data["relearn_curves"]["head"]["edited"][0] == pytest.approx(data["relearn_curves"]["original_f1"])
    assert len(data["relearn_curves"]["rows"]["edited"]) == 2
    # the same representation; the same retain-only fine-tune (same seed) of the same weights
    assert data["cka"]["edited_vs_original"] == pytest.approx(1.0)
    assert data["retain_relearn_f1"]["edited"] == data["retain_relearn_f1"]["original"] is not None


def test_edited_model_reuses_the_originals_encoder_outputs_exactly(world):
    """With the edit known, the edited model's passes run the encoder only on texts with an edited token;
    the rest take the original's encoder outputs. Logits and probe features equal full passes."""
    import torch

    from steuops.audit import _auditor
    from steuops.audit.passes import forward_pass

    original, steu, reference, tok, train, test = world
    auditor = _auditor(tok, FORGET, train, test, AuditConfig(**FAST), "cpu", None)
    auditor.store.share_encoder(original, steu.model, steu.edit.token_ids)
    auditor.store.share_encoder(original, reference, steu.edit.token_ids)  # retrained encoder: must not share
    assert id(steu.model) in auditor.store._twins and id(reference) not in auditor.store._twins
    draw = auditor.draws[0]
    for which, texts in (("train", draw.train.texts), ("test", draw.test.texts), ("pool", draw.pool.texts)):
        shared = auditor.passes(steu.model, which, draw)
        full = forward_pass(steu.model, tok, texts, batch_size=32, max_length=16, device=torch.device("cpu"))
        np.testing.assert_allclose(shared.logits, full.logits, atol=1e-5, rtol=0)
        np.testing.assert_allclose(shared.features, full.features, atol=1e-5, rtol=0)
    assert 0 < auditor.store.shortcut_notes < len(draw.train) + len(draw.test) + len(draw.pool)  # some, not all, shared


def test_row_relearn_runs_the_encoder_only_on_notes_with_an_edited_token_and_matches_full_passes(world):
    """The row re-fit's shortcut: untouched notes keep the model's cached logits (encoder and head frozen).
    Each step's logits and gradient, and the whole curve, equal the full-pass attack's."""
    import torch

    from steuops.audit import _auditor
    from steuops.modeling import embedding

    original, steu, reference, tok, train, test = world
    auditor = _auditor(tok, FORGET, train, test, AuditConfig(**FAST), "cpu", None)
    auditor.bind(original)
    draw, ids = auditor.draws[0], steu.edit.token_ids
    hit = auditor.store.touched(draw.attack.texts, ids)
    assert 0 < hit.sum() < len(hit)  # some notes skip the encoder, not all
    work = copy.deepcopy(steu.model)
    weight = embedding(work).weight.requires_grad_(True)
    short = auditor._touched_logits(work, draw.attack, auditor.passes(steu.model, "attack", draw).logits, ids)
    full = auditor._full_logits(work, draw.attack)
    work.eval()
    rows = list(range(min(16, len(draw.attack))))
    grads = []
    for step in (short, full):
        weight.grad = None
        z = step(rows)
        auditor._loss(z, torch.tensor(draw.attack.multi_hot(auditor.labels))[rows]).backward()
        grads.append((z.detach().clone(), weight.grad[sorted(set(ids))].clone()))  # the rows the attack moves
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=0)
    curves = [auditor.relearn_rows(steu.model, draw, ids, shortcut=flag) for flag in (True, False)]
    assert curves[0] == pytest.approx(curves[1], abs=1e-6)


def test_a_head_re_fit_copies_the_head_alone_and_leaves_the_model_as_it_was(world, monkeypatch):
    """A head re-fit on cached encoder outputs trains a copy whose base model is the model's own (an audit re-fits 24
    heads, and copying MiniLM's base each time took 1.3 s): the same curve as on a whole copy, and the model comes
    back with its weights and its requires_grad flags as they were."""
    from steuops.audit import _auditor
    from steuops.audit import auditor as auditing
    from steuops.modeling import fingerprint, head_param_names

    original, steu, reference, tok, train, test = world
    auditor = _auditor(tok, FORGET, train, test, AuditConfig(**FAST), "cpu", None)
    auditor.bind(original)
    draw, model = auditor.draws[0], steu.model
    head = set(head_param_names(model))
    with auditing._head_copy(model, "cpu") as work:
        pairs = list(zip(model.named_parameters(), work.parameters(), strict=True))
        assert all((mine is copied) == (name not in head) for (name, mine), copied in pairs)
    kept = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for i, p in enumerate(model.parameters()):  # a mix, so that restoring them is seen
            p.requires_grad_(i % 2 == 0)
        flags, before = {n: p.requires_grad for n, p in model.named_parameters()}, fingerprint(model)
        assert auditor.passes(model, "attack", draw).exact and auditor.passes(model, "test", draw).exact
        curve = auditor._relearn_head(model, draw, None, [0, 5, 25], "relearn head")
        assert fingerprint(model) == before
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
        monkeypatch.setattr(auditing, "_head_copy", auditing._whole_copy)
        assert auditor._relearn_head(model, draw, None, [0, 5, 25], "relearn head") == curve
        assert curve[-1] != curve[0]  # the re-fit moved the head
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(kept[n])


def test_the_rows_attack_trains_the_edited_rows_exactly_as_a_masked_update_of_the_whole_matrix(world):
    """The rows re-fit trains a parameter of the edited rows only (a forward hook puts them in place); the same Adam
    steps on the whole embedding matrix with every other row's gradient masked to zero move those rows to the same
    values, give the same logits and leave every other row where it was."""
    import torch

    from steuops.audit import _auditor
    from steuops.audit.auditor import _rows_only
    from steuops.modeling import adam, embedding, tokenize

    original, steu, reference, tok, train, test = world
    auditor = _auditor(tok, FORGET, train, test, AuditConfig(**FAST), "cpu", None)
    auditor.bind(original)
    ids = sorted(set(steu.edit.token_ids))
    masked, hooked = copy.deepcopy(steu.model).eval(), copy.deepcopy(steu.model).eval()
    for p in [*masked.parameters(), *hooked.parameters()]:
        p.requires_grad_(False)
    weight = embedding(masked).weight.requires_grad_(True)
    mask = torch.zeros(weight.shape[0], 1)
    mask[ids] = 1.0
    weight.register_hook(lambda grad: grad * mask)
    rows = _rows_only(hooked, ids)
    optimisers = [adam([weight], lr=5e-2), adam([rows], lr=5e-2)]
    y = torch.tensor(train.multi_hot(auditor.labels))
    for start in range(0, 64, 16):  # four steps on four batches
        enc = tokenize(tok, train.texts[start : start + 16], 16)
        for model, optimiser in zip((masked, hooked), optimisers, strict=True):
            optimiser.zero_grad(set_to_none=True)
            auditor._loss(model(**enc).logits, y[start : start + 16]).backward()
            optimiser.step()
    before = embedding(steu.model).weight
    torch.testing.assert_close(rows.detach(), weight.detach()[ids], atol=1e-6, rtol=0)
    assert not torch.equal(rows.detach(), before[ids])  # the attack did move them
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[ids] = False
    assert torch.equal(weight.detach()[others], before[others]) and torch.equal(embedding(hooked).weight, before)
    enc = tokenize(tok, test.texts[:32], 16)
    with torch.no_grad():
        torch.testing.assert_close(hooked(**enc).logits, masked(**enc).logits, atol=1e-5, rtol=0)


def test_audit_with_and_without_the_shared_encoder_agree(world, report):
    original, steu, reference, tok, train, test = world
    assert report["sizes"]["shortcut_notes"] > 0
    # the same audit, with the shortcut impossible (the edit's rows unknown -> full passes everywhere)
    plain = run_audit(original, steu.model, tok, FORGET, train, test, reference=reference,
                      config=AuditConfig(**REPORT), device="cpu").to_dict()
    assert plain["sizes"]["shortcut_notes"] == 0
    for key in ("probe_f1", "membership_auc", "bypass_f1", "retain_relearn_f1"):
        assert plain[key]["edited"] == pytest.approx(report[key]["edited"], abs=1e-4)
    assert plain["cka"] == pytest.approx(report["cka"], abs=1e-4)
    for n, entry in report["relearn_sizes"].items():
        assert plain["relearn_sizes"][n]["edited"]["values"] == pytest.approx(entry["edited"]["values"], abs=1e-4)
    assert plain["relearn_curves"]["head"]["edited"] == pytest.approx(report["relearn_curves"]["head"]["edited"],
                                                                      abs=1e-4)


# ---- seeds: means and spread, fresh draws per seed, seeds=1 is the single-seed audit -------------------
def test_figures_are_the_means_of_the_per_seed_values(report):
    """Every headline figure is the mean of its per-seed values (None = not measured that seed); the std is
    numpy's population std of the same values; the mean relearn curve ends at relearn_f1."""
    figures = {"probe_f1": ("original", "edited", "reference"), "relearn_f1": ("edited", "reference", "edited_rows"),
               "membership_auc": ("original", "edited", "reference"),
               "retain_relearn_f1": ("original", "edited", "reference"),
               "cka": ("edited_vs_original", "edited_vs_reference", "reference_vs_original")}
    assert {f: set(keys) for f, keys in figures.items()} == {f: set(v) for f, v in report["spread"].items()}
    for figure, keys in figures.items():
        for key in keys:
            stat = report["spread"][figure][key]
            values = np.array(stat["values"], dtype=float)
            assert len(values) == 2 and not np.isnan(values).any(), (figure, key)
            assert stat["mean"] == pytest.approx(values.mean(), abs=1e-12) and stat["std"] == pytest.approx(values.std())
            assert report[figure][key] == stat["mean"]
    curves = report["relearn_curves"]
    per_seed = [one["relearn_curves"]["head"]["edited"] for one in report["per_seed"]]
    assert curves["head"]["edited"] == pytest.approx(np.mean(per_seed, axis=0), abs=1e-12)
    assert report["relearn_f1"]["edited"] == curves["head"]["edited"][-1]
    assert report["spread"]["relearn_f1"]["edited"]["values"] == [c[-1] for c in per_seed]
    assert [one["seed"] for one in report["per_seed"]] == report["seeds"] == [0, 1]
    for entry in report["relearn_sizes"].values():
        for role in ("edited", "reference"):
            assert entry[role]["mean"] == pytest.approx(np.mean(entry[role]["values"]), abs=1e-12)
    assert "seeds" in report["bypass"]  # bypass says it was computed once, not per seed


def test_the_encoder_gradient_attacks_run_on_the_first_gradient_seeds_only(world, report):
    """gradient_seeds=1: the rows re-fit and the retain-only fine-tune run on seed 0 only (their figures are that
    seed's, the later seed says None); every other figure is still over both seeds, and equal to the full run's."""
    original, steu, reference, tok, train, test = world
    one = run_audit(original, steu.model, tok, FORGET, train, test, reference=reference,
                    config=AuditConfig(**{**REPORT, "gradient_seeds": 1}), device="cpu", edit=steu.edit).to_dict()
    for figure, key in (("relearn_f1", "edited_rows"), ("retain_relearn_f1", "edited"), ("retain_relearn_f1", "original")):
        values = one["spread"][figure][key]["values"]
        assert values[1] is None and values[0] == report["spread"][figure][key]["values"][0]
        assert one[figure][key] == values[0]
    assert "edited" not in one["per_seed"][1]["relearn_curves"]["rows"]
    assert one["relearn_curves"]["rows"]["edited"] == report["per_seed"][0]["relearn_curves"]["rows"]["edited"]
    for figure in ("probe_f1", "membership_auc", "cka"):
        assert one[figure] == pytest.approx(report[figure], abs=1e-9)
    assert one["relearn_f1"]["edited"] == pytest.approx(report["relearn_f1"]["edited"], abs=1e-9)


def _v1_sample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """The single-seed audit's subsample: `cap` indices without replacement, sorted."""
    return np.sort(rng.choice(n, size=cap, replace=False))


def test_one_seed_is_the_single_seed_audit_and_more_seeds_redraw(world):
    """seeds=1 at seed 3 gives the figures of a direct computation on the single-seed audit's subsample
    (rng(3): train cap, then test cap); seeds=3 from the same seed starts with exactly those and redraws the
    train-side notes for seeds 4 and 5 (the test sample is seed 3's for all), so their values differ."""
    import torch

    from steuops import modeling
    from steuops.audit.passes import forward_pass
    from steuops.audit.stats import probe_f1
    from steuops.metrics import f1_scores

    original, steu, reference, tok, train, test = world
    cfg = {**FAST, "relearn_steps": [0, 5], "seed": 3, "max_train": 120, "max_test": 50}
    one = run_audit(original, steu.model, tok, FORGET, train, test, reference=reference, device="cpu",
                    edit=steu.edit, config=AuditConfig(**cfg)).to_dict()
    rng = np.random.default_rng(3)
    sub_train = train.subset(_v1_sample(len(train), 120, rng))
    sub_test = test.subset(_v1_sample(len(test), 50, rng))
    col = LABELS.index("sepsis")
    y_train, y_test = sub_train.multi_hot(LABELS)[:, col], sub_test.multi_hot(LABELS)[:, col]
    for role, model in (("original", original), ("edited", steu.model), ("reference", reference)):
        x_train, x_test = (forward_pass(model, tok, notes.texts, batch_size=32, max_length=16,
                                        device=torch.device("cpu")).features for notes in (sub_train, sub_test))
        assert one["probe_f1"][role] == pytest.approx(probe_f1(x_train, y_train, x_test, y_test, AuditConfig()),
                                                      abs=1e-6)
        scores = [-np.logaddexp(0.0, -modeling.logits(model, tok, n.texts, max_length=16)[:, col].astype(float))
                  for n in (sub_train, sub_test)]
        members, held_out = scores[0][sub_train.has_any(FORGET)], scores[1][sub_test.has_any(FORGET)]
        pairs = np.mean([(a > b) + 0.5 * (a == b) for a in members for b in held_out])
        assert one["membership_auc"][role] == pytest.approx(pairs, abs=1e-9), role
    pred = modeling.predict(modeling.logits(steu.model, tok, sub_test.texts, max_length=16), True)
    assert one["relearn_curves"]["head"]["edited"][0] == pytest.approx(
        f1_scores(sub_test.multi_hot(LABELS), pred)[col], abs=1e-6)
    assert one["seeds"] == [3] and one["spread"]["probe_f1"]["edited"]["std"] == 0.0

    three = run_audit(original, steu.model, tok, FORGET, train, test, reference=reference, device="cpu",
                      edit=steu.edit, config=AuditConfig(**{**cfg, "seeds": 3})).to_dict()
    assert three["seeds"] == [3, 4, 5]
    for figure in ("probe_f1", "relearn_f1", "membership_auc", "retain_relearn_f1", "cka"):
        for key, stat in three["spread"][figure].items():
            assert stat["values"][0] == one[figure][key], (figure, key)  # the first seed is the one-seed audit
    membership = three["spread"]["membership_auc"]["original"]["values"]
    assert len(set(membership)) > 1  # other notes, other figures
    assert len(set(three["sizes"]["forget_train"])) > 1 or len(set(three["sizes"]["forget_test"])) > 1


def test_each_seed_draws_its_own_notes_and_a_seed_draws_the_same_ones_again(world):
    from steuops.audit.draw import draw_notes

    _original, _steu, _reference, _tok, train, test = world
    cfg = AuditConfig(**{**FAST, "max_train": 100, "max_test": 40, "relearn_sizes": [8, 32],
                         "retain_relearn_notes": 24}).validate()
    a, b, again = draw_notes(train, test, FORGET, cfg, 0), draw_notes(train, test, FORGET, cfg, 1), draw_notes(train, test, FORGET, cfg, 0)
    for part in ("train", "test", "attack", "pool", "retain"):
        assert getattr(a, part).texts != getattr(b, part).texts, part
        assert getattr(a, part).texts == getattr(again, part).texts, part
    assert len(a.train) == 100 and len(a.test) == 40 and len(a.retain) == 24
    assert not a.retain.has_any(FORGET).any()  # retain-only: no note carries the class
    # the batch order differs too: the same sample, mixed by each seed's own permutation
    assert a.size_rows(8).tolist() != b.size_rows(8).tolist()


def test_every_seed_is_measured_on_the_first_seeds_test_sample(world):
    """The seeds vary the attacks (train-side samples), not the yardstick: one test sample, the first seed's,
    so every model runs over max_test test notes once, however many seeds."""
    from steuops.audit.auditor import Auditor
    from steuops.audit.draw import draw_notes

    _original, _steu, _reference, tok, train, test = world
    cfg = AuditConfig(**{**FAST, "seeds": 3, "seed": 2, "max_train": 100, "max_test": 40}).validate()
    draws = Auditor(tok, FORGET, train, test, cfg, "cpu", None).draws
    first = draw_notes(train, test, FORGET, cfg, 2)
    assert [d.seed for d in draws] == [2, 3, 4]
    assert all(d.test.texts == first.test.texts for d in draws) and len(first.test) == 40
    assert draws[0].train.texts == first.train.texts and draws[1].train.texts != first.train.texts
    assert draws[1].attack.texts == draw_notes(train, test, FORGET, cfg, 3).attack.texts  # the rest as drawn alone


def test_the_retain_only_fine_tune_attacks_the_edited_model_and_the_controls_only_when_asked(world, report):
    original, steu, reference, tok, train, test = world
    config = {k: v for k, v in REPORT.items() if k != "retain_relearn_controls"}
    out = run_audit(original, steu.model, tok, FORGET, train, test, reference=reference, device="cpu",
                    edit=steu.edit, config=AuditConfig(**config)).to_dict()
    assert AuditConfig().retain_relearn_controls is False
    assert out["retain_relearn_f1"]["edited"] == report["retain_relearn_f1"]["edited"]
    assert out["retain_relearn_f1"]["original"] is None and out["retain_relearn_f1"]["reference"] is None
    assert report["retain_relearn_f1"]["original"] is not None and report["retain_relearn_f1"]["reference"] is not None
    assert "retain_relearn_controls" in out["skipped"] and "retain_relearn_controls" not in report["skipped"]


def test_relearn_sizes_take_n_per_side_capped_by_the_train_split(world, report):
    from steuops.audit.draw import draw_notes

    _original, _steu, _reference, _tok, train, test = world
    forget_notes = int(train.has_any(FORGET).sum())
    retain_notes = len(train) - forget_notes
    assert 16 < forget_notes < 1000 and 16 < retain_notes < 1000
    sizes = report["relearn_sizes"]
    assert list(sizes) == ["4", "16", "1000"]
    assert (sizes["4"]["forget_notes"], sizes["4"]["retain_notes"]) == (4, 4)
    assert (sizes["16"]["forget_notes"], sizes["16"]["retain_notes"]) == (16, 16)
    assert (sizes["1000"]["forget_notes"], sizes["1000"]["retain_notes"]) == (forget_notes, retain_notes)
    for entry in sizes.values():
        assert len(entry["edited"]["values"]) == len(entry["reference"]["values"]) == 2
        assert all(0.0 <= v <= 1.0 for v in entry["edited"]["values"])
    # a smaller attacker holds a subset of a larger one's notes; each side has the right class
    draw = draw_notes(train, test, FORGET, AuditConfig(**REPORT).validate(), 0)
    small, large = draw.size_rows(4), draw.size_rows(16)
    assert set(small) < set(large)
    picked = draw.pool.subset(large)
    assert int(picked.has_any(FORGET).sum()) == 16 == len(picked) - 16


# ---- retain-only relearn: the forget column is never trained ------------------------------------------
@pytest.mark.parametrize("multi_label", [True, False])
def test_the_retain_relearn_loss_has_no_gradient_on_the_forget_row(world, multi_label):
    """The masked loss leaves the forget logit out: the head's forget row gets exactly zero gradient, every
    other row and the encoder get some. Without the mask the forget row would be pushed (down)."""
    import torch

    from steuops.audit import _auditor
    from steuops.modeling import tokenize
    from steuops.tiny import classifier

    _original, _steu, _reference, tok, train, test = world
    notes = train if multi_label else Notes(train.texts, [ls[:1] for ls in train.labels])
    model = classifier(LABELS, len(tok), multi_label=multi_label, hidden=32, seed=4)
    auditor = _auditor(tok, FORGET, notes, test, AuditConfig(**FAST), "cpu", None)
    auditor.bind(model)
    col = LABELS.index("sepsis")
    assert auditor.keep == [j for j in range(len(LABELS)) if j != col]
    retain = auditor.draws[0].retain
    enc = tokenize(tok, retain.texts, 16)
    targets = torch.tensor(retain.multi_hot(LABELS))
    for keep, forget_row_moves in ((auditor.keep, False), (None, True)):
        model.zero_grad(set_to_none=True)
        auditor._loss(model(**enc).logits, targets, keep).backward()
        grad = model.classifier.weight.grad
        assert bool(grad[col].abs().sum() > 0) == forget_row_moves
        assert bool(model.classifier.bias.grad[col] != 0) == forget_row_moves
        assert all(grad[j].abs().sum() > 0 for j in auditor.keep)
        assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # the encoder is trained too


def test_retain_relearn_moves_everything_but_the_forget_column(world):
    """After the all-parameter fine-tune on retain-only notes the copy's encoder and the head's other rows
    have moved; the forget row is bit-identical (zero gradient -> zero Adam step); the model given is untouched."""
    import torch

    from steuops.audit import _auditor

    original, steu, _reference, tok, train, test = world
    cfg = AuditConfig(**{**FAST, "retain_relearn_steps": 4, "retain_relearn_lr": 1e-3})
    auditor = _auditor(tok, FORGET, train, test, cfg, "cpu", None)
    auditor.bind(original)
    before = {k: v.clone() for k, v in steu.model.state_dict().items()}
    work = auditor.retain_relearned(steu.model, auditor.draws[0])
    col = LABELS.index("sepsis")
    w0, w1 = steu.model.classifier.weight, work.classifier.weight
    assert torch.equal(w1[col], w0[col]) and torch.equal(work.classifier.bias[col], steu.model.classifier.bias[col])
    assert all(not torch.equal(w1[j], w0[j]) for j in auditor.keep)
    assert not torch.equal(work.bert.encoder.layer[0].attention.self.query.weight,
                           steu.model.bert.encoder.layer[0].attention.self.query.weight)
    assert all(torch.equal(v, before[k]) for k, v in steu.model.state_dict().items())


# ---- CKA -------------------------------------------------------------------------------------------
def _brute_force_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC with linear kernels, written out: K = XX^T, L = YY^T, H = I - 11^T/n,
    HSIC(K, L) = tr(KHLH) / (n-1)^2, CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    kx, ky = x @ x.T, y @ y.T
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_linear_cka_facts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16))
    y = x @ rng.normal(size=(16, 24)) + 0.5 * rng.normal(size=(120, 24))  # related to x, another width
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(24, 24)))  # an orthogonal map
    base = linear_cka(x, y)
    assert 0.3 < base < 1.0
    assert linear_cka(x, y @ q) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, 3.7 * y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, 3.7 * y @ q + 5.0) == pytest.approx(base, abs=1e-12)  # a shift is centred away
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, y) == pytest.approx(_brute_force_cka(x, y), abs=1e-10)
    z = rng.normal(size=(120, 24))
    assert linear_cka(x, z) == pytest.approx(_brute_force_cka(x, z), abs=1e-10)
    assert linear_cka(rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))) < 0.05  # independent: small
    assert np.isnan(linear_cka(x, np.ones((120, 3))))  # no variance: undefined
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(x, y[:10])


def test_cka_compares_each_models_head_features_on_the_test_notes(world, report):
    import torch

    from steuops.audit.passes import forward_pass

    original, steu, reference, tok, _train, test = world
    feats = {role: forward_pass(m, tok, test.texts, batch_size=32, max_length=16, device=torch.device("cpu")).features
             for role, m in (("original", original), ("edited", steu.model), ("reference", reference))}
    assert report["cka"]["edited_vs_original"] == pytest.approx(linear_cka(feats["edited"], feats["original"]), abs=1e-5)
    assert report["cka"]["edited_vs_reference"] == pytest.approx(linear_cka(feats["edited"], feats["reference"]),
                                                                 abs=1e-5)
    assert report["cka"]["reference_vs_original"] == pytest.approx(
        linear_cka(feats["reference"], feats["original"]), abs=1e-5)
    # no subsampling here: every seed compares the same features (CKA draws nothing of its own)
    assert report["spread"]["cka"]["edited_vs_original"]["std"] == 0.0
    # STEU moved the keyword rows, so its features are not the original's (an unchanged copy scores 1.0:
    # test_single_label_and_other_architectures_...), yet they stay related
    assert 0.5 < report["cka"]["edited_vs_original"] < 0.999
