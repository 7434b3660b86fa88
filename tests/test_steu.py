"""STEU on tiny real models: it forgets, it touches only k rows + the head, it is reproducible."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_data import LABELS, keyword_notes, trained_classifier

from steuops import modeling
from steuops.errors import CohortError, ConfigError, ForgetClassError, ModelError
from steuops.methods import available, unlearn
from steuops.metrics import evaluate
from steuops.tiny import classifier

CFG = {"k": 8, "epochs": 8, "max_length": 16, "lr": 1e-2, "head_lr": 1e-2}  # rates for a 32-wide toy model


@pytest.fixture(scope="module")
def multi():
    notes = keyword_notes(200, seed=0)
    model, tok = trained_classifier(notes)
    return model, tok, notes, keyword_notes(80, seed=1)


def changed_keys(before: torch.nn.Module, after: torch.nn.Module) -> dict[str, torch.Tensor]:
    """name -> boolean mask of changed elements, for every state-dict entry that changed."""
    a, b = before.state_dict(), after.state_dict()
    assert a.keys() == b.keys()
    return {n: a[n] != b[n] for n in a if not torch.equal(a[n], b[n])}


def assert_only_rows_and_head(original, result):
    emb = modeling.embedding_param_name(original)
    head = set(modeling.head_param_names(original))
    changed = changed_keys(original, result.model)
    assert set(changed) <= head | {emb}, f"unexpected changes in {set(changed) - head - {emb}}"
    if emb in changed:
        rows = changed[emb].any(dim=1).nonzero().flatten().tolist()
        assert set(rows) <= set(result.edit.token_ids)
    return changed


def test_registered():
    assert {"steu", "head_only", "embedding_only", "random_tokens", "grad_ascent", "retrain"} <= set(available())


def test_steu_forgets_and_keeps(multi):
    model, tok, notes, test = multi
    fp = modeling.fingerprint(model)
    result = unlearn("steu", model, tok, ["sepsis"], notes, CFG, device="cpu")
    assert modeling.fingerprint(model) == fp  # the input model is never modified
    ev_train = evaluate(model, result.model, tok, notes, ["sepsis"], device="cpu", max_length=16)
    ev = evaluate(model, result.model, tok, test, ["sepsis"], device="cpu", max_length=16)
    assert ev.before.forget_f1 >= 0.5 and ev_train.before.forget_f1 >= 0.5  # it knew the class
    # held-out: within one note of 0 (early stopping, the default, stops once its own held-out slice of the cohort
    # meets the threshold; which epoch that is depends on float rounding: 5 of 8 and 1 note of 13 on the 2-core EPYC)
    assert ev.after.forget_f1 <= 0.1 and ev_train.after.forget_f1 <= 0.05
    # loose on purpose: this toy model's weakest class sits on the decision boundary (F1 ~0.65) and can
    # flip; the MiniLM benchmark holds retain macro-F1 within 0.02 (bench/results/unlearn-cpu-*.json)
    assert ev.after.retain_macro_f1 >= ev.before.retain_macro_f1 - 0.25
    # the selected rows are the sepsis keywords (whole words in this vocabulary)
    top = {t["token"] for t in result.info["tokens"][:4]}
    assert top == {"lactate", "bacteremia", "pressors", "cultures"}
    epochs = [h["epoch"] for h in result.info["losses"]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) <= CFG["epochs"]
    assert result.info["early_stop"]["stopped"] or len(epochs) == CFG["epochs"]  # early stopping (default) may end it
    assert result.info["losses"][-1]["forget"] < result.info["losses"][0]["forget"]

    changed = assert_only_rows_and_head(model, result)
    emb = modeling.embedding_param_name(model)
    assert result.info["selection"]["scorer"] == "specific"  # the default: only the 4 forget-only keywords qualify
    assert emb in changed and changed[emb].any(dim=1).sum() == len(result.edit.token_ids) == 4
    assert ev.params_modified <= CFG["k"] * model.config.hidden_size + sum(
        p.numel() for n, p in model.named_parameters() if n in set(modeling.head_param_names(model)))

    # the edit re-creates the unlearned model exactly from the original
    replay = result.edit.apply(copy.deepcopy(model))
    assert modeling.fingerprint(replay) == modeling.fingerprint(result.model)


def test_reproducible(multi):
    model, tok, notes, _ = multi
    cfg = {**CFG, "epochs": 1}
    a = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    b = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    assert modeling.fingerprint(a.model) == modeling.fingerprint(b.model)
    c = unlearn("steu", model, tok, ["sepsis"], notes, {**cfg, "seed": 1}, device="cpu")
    assert modeling.fingerprint(c.model) != modeling.fingerprint(a.model)


def test_the_result_says_what_its_steps_ran_in(multi, monkeypatch):
    """bf16 where asked and the CPU has it natively, else fp32; with STEUOPS_CPU_BF16=0, fp32 and the same edit
    as a run that never asked (on a CPU without bf16 all three are one fp32 run)."""
    model, tok, notes, _ = multi
    monkeypatch.delenv("STEUOPS_CPU_BF16", raising=False)
    cfg = {**CFG, "epochs": 1}
    plain = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    asked = unlearn("steu", model, tok, ["sepsis"], notes, {**cfg, "cpu_bf16": True}, device="cpu")
    native = modeling.cpu_has_bf16()
    monkeypatch.setenv("STEUOPS_CPU_BF16", "0")
    off = unlearn("steu", model, tok, ["sepsis"], notes, {**cfg, "cpu_bf16": True}, device="cpu")
    assert plain.info["precision"] == off.info["precision"] == "fp32"
    assert asked.info["precision"] == ("bf16" if native else "fp32")
    assert modeling.fingerprint(off.model) == modeling.fingerprint(plain.model)


def test_single_label():
    notes = keyword_notes(200, seed=0, multi_label=False)
    model, tok = trained_classifier(notes, multi_label=False)
    result = unlearn("steu", model, tok, ["pneumonia"], notes, {**CFG, "lr": 1e-2}, device="cpu")
    ev = evaluate(model, result.model, tok, notes, ["pneumonia"], device="cpu", max_length=16)
    assert ev.before.forget_f1 >= 0.5
    assert ev.after.forget_f1 <= 0.05
    assert ev.after.retain_macro_f1 >= ev.before.retain_macro_f1 - 0.15
    assert_only_rows_and_head(model, result)


def test_distilbert(multi):
    _, tok, notes, _ = multi
    model = classifier(LABELS, len(tok), arch="distilbert")
    result = unlearn("steu", model, tok, ["copd"], notes, {**CFG, "epochs": 1}, device="cpu")
    changed = assert_only_rows_and_head(model, result)
    heads = set(modeling.head_param_names(model))
    assert any(n.startswith("pre_classifier") for n in heads) and heads & set(changed)
    assert modeling.embedding_param_name(model) in changed


def test_typed_errors(multi):
    model, tok, notes, _ = multi
    with pytest.raises(ForgetClassError, match="'flu'"):
        unlearn("steu", model, tok, ["flu"], notes, CFG, device="cpu")
    with pytest.raises(CohortError, match="sepsis"):
        unlearn("steu", model, tok, ["sepsis"], notes.subset(~notes.has_any(["sepsis"])), CFG, device="cpu")
    with pytest.raises(ConfigError, match="k=100000"):
        unlearn("steu", model, tok, ["sepsis"], notes, {"k": 100000}, device="cpu")
    with pytest.raises(ConfigError, match="unknown option"):
        unlearn("steu", model, tok, ["sepsis"], notes, {"kk": 3}, device="cpu")
    with pytest.raises(ConfigError, match="epochs"):
        unlearn("steu", model, tok, ["sepsis"], notes, {"epochs": 0}, device="cpu")


def test_model_errors(multi):
    _, tok, notes, _ = multi
    no_embedding = classifier(LABELS, len(tok))
    no_embedding.bert.embeddings.word_embeddings = torch.nn.Linear(4, 4)
    with pytest.raises(ModelError, match="embedding"):
        unlearn("steu", no_embedding, tok, ["sepsis"], notes, CFG, device="cpu")
    no_head = classifier(LABELS, len(tok)).bert  # a bare encoder: no classification head
    no_head.config.problem_type = "multi_label_classification"
    with pytest.raises(ModelError, match="head"):
        unlearn("steu", no_head, tok, ["sepsis"], notes, CFG, device="cpu")


def test_epoch_order_samples_retain_notes():
    from steuops.methods.loop import epoch_order

    forget = torch.tensor([True, False, False, True, False, False, False, False])
    g = torch.Generator().manual_seed(0)
    assert sorted(epoch_order(forget, 0.0, g).tolist()) == list(range(8))
    order = epoch_order(forget, 1.0, g)
    assert len(order) == 4 and {0, 3} <= set(order.tolist())  # every forget note + 2 retain notes
    assert len(epoch_order(forget, 10.0, g)) == 8  # capped at the retain notes there are


# ---- selection that names no patient, the class-specific scorer, the exact shortcut ----------------
MARKER = "pigeons attic foundry quifeath"


@pytest.fixture(scope="module")
def marked():
    """The keyword notes with an invented marker sentence in two sepsis notes (two patients): words that
    would identify those patients, and that PMI loves (they occur in forget notes only)."""
    from steuops.data import Notes

    notes = keyword_notes(200, seed=0)
    rows = [i for i, labels in enumerate(notes.labels) if "sepsis" in labels][:2]
    texts = [f"{t} {MARKER}" if i in rows else t for i, t in enumerate(notes.texts)]
    marked = Notes(texts, notes.labels, note_ids=notes.note_ids, patient_ids=notes.patient_ids)
    model, tok = trained_classifier(marked)
    return model, tok, marked


@pytest.mark.parametrize("scorer", ["pmi", "specific"])
def test_marker_words_never_reach_the_edit(marked, tmp_path, scorer):
    import json

    model, tok, notes = marked
    marker_ids = set(tok.convert_tokens_to_ids(MARKER.split()))
    assert tok.unk_token_id not in marker_ids  # whole words of this vocabulary, so selectable
    cfg = {**CFG, "k": 30, "epochs": 1, "scorer": scorer}
    # with thresholds the two patients clear, both scorers pick the markers: the rule is what keeps them out
    loose = unlearn("steu", model, tok, ["sepsis"], notes, {**cfg, "min_patients": 2, "min_forget_notes": 2},
                    device="cpu")
    assert marker_ids <= set(loose.edit.token_ids)
    result = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")  # default min_patients = 5
    assert result.config["min_patients"] == 5
    assert not marker_ids & set(result.edit.token_ids)
    assert 0 < len(result.edit.token_ids) <= 30
    assert result.info["tokens_below_min_patients"] >= len(marker_ids)  # counted...
    result.edit.save(tmp_path / "edit")
    saved = (tmp_path / "edit" / "edit.json").read_text()
    text = json.dumps(result.info) + saved
    for word in MARKER.split():
        assert word not in text  # ...never listed: not in the info, not in the saved edit
    assert "lactate" in saved  # the edit does name the tokens that passed the rule


def test_hidden_tokens(marked, tmp_path):
    model, tok, notes = marked
    result = unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1, "show_tokens": False}, device="cpu")
    assert {t["token"] for t in result.info["tokens"]} == {"[hidden]"}
    assert [t["id"] for t in result.info["tokens"]] == result.edit.token_ids
    result.edit.save(tmp_path / "edit")
    saved = (tmp_path / "edit" / "edit.json").read_text()
    assert "lactate" not in saved and "bacteremia" not in saved


def test_specific_scorer_touches_fewer_retain_notes_and_forgets(multi):
    model, tok, notes, test = multi
    pmi = unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "scorer": "pmi"}, device="cpu")
    spec = unlearn("steu", model, tok, ["sepsis"], notes, CFG, device="cpu")
    assert spec.info["selection"]["scorer"] == "specific"
    assert spec.info["retain_touched_fraction"] < pmi.info["retain_touched_fraction"]
    assert {t["token"] for t in spec.info["tokens"]} == {"lactate", "bacteremia", "pressors", "cultures"}
    ev = evaluate(model, spec.model, tok, test, ["sepsis"], device="cpu", max_length=16)
    assert ev.before.forget_f1 >= 0.5 and ev.after.forget_f1 <= 0.1  # within one note: see test_steu_forgets_and_keeps
    assert_only_rows_and_head(model, spec)
    with pytest.raises(ConfigError, match="scorer"):
        unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "scorer": "tfidf"}, device="cpu")


def assert_same_training(a, b, atol: float = 1e-5) -> None:
    for x, y in zip(a.info["losses"], b.info["losses"], strict=True):
        assert x["forget"] == pytest.approx(y["forget"], abs=atol)
        assert x["retain"] == pytest.approx(y["retain"], abs=atol)
    assert a.edit.token_ids == b.edit.token_ids
    torch.testing.assert_close(a.edit.rows, b.edit.rows, atol=atol, rtol=0)
    for name in a.edit.head:
        torch.testing.assert_close(a.edit.head[name], b.edit.head[name], atol=atol, rtol=0)


@pytest.mark.parametrize(("method", "arch", "scorer"), [("steu", "bert", "pmi"), ("steu", "bert", "specific"),
                                                         ("steu", "distilbert", "pmi"), ("head_only", "bert", "pmi")])
def test_shortcut_matches_the_full_path(multi, method, arch, scorer):
    """Notes without an edited token go through the head only, on features cached by the teacher pass;
    losses and the final edit must equal the path that runs every note through the encoder."""
    trained, tok, notes, _ = multi
    model = trained if arch == "bert" else classifier(LABELS, len(tok), arch=arch)  # random init works as well
    # float64: float32 rounds a row by the batch around it on some CPUs, and Adam scales that up to past 1e-5 (the
    # 2-core EPYC; see test_architectures.py's shortcut test); in float64 the paths agree to rounding
    model = copy.deepcopy(model).double()
    # every note every epoch, as before retain sampling and early stopping were the defaults: a stop decided on a
    # held-out F1 at the edge would let float noise pick another epoch count (sampling: tests/test_retain_sampling.py)
    cfg = {**CFG, "epochs": 3, "scorer": scorer, "early_stop": False, "retain_per_forget": 0}
    fast = unlearn(method, model, tok, ["sepsis"], notes, cfg, device="cpu")
    slow = unlearn(method, model, tok, ["sepsis"], notes, {**cfg, "shortcut": False}, device="cpu")
    assert fast.info["shortcut"]["used"] and not slow.info["shortcut"]["used"]
    assert fast.info["shortcut"]["head_only_notes"] > 0
    if method == "head_only":
        assert fast.info["shortcut"]["head_only_notes"] == len(notes)  # no encoder step at all
    assert_same_training(fast, slow)


def test_early_stopping_makes_epochs_an_upper_bound(multi):
    model, tok, notes, test = multi
    result = unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "epochs": 30, "early_stop": True}, device="cpu")
    record = result.info["early_stop"]
    assert record["used"] and record["stopped"]
    assert record["holdout_notes"] == round(0.1 * notes.has_any(["sepsis"]).sum())  # one note per patient here
    assert 2 <= record["epochs_run"] == len(result.info["losses"]) < 30
    assert record["holdout_forget_f1"][-1] <= 0.01 and len(record["holdout_forget_f1"]) == record["epochs_run"]
    ev = evaluate(model, result.model, tok, test, ["sepsis"], device="cpu", max_length=16)
    # held-out notes forgotten with a margin: unseen test notes nearly all are too (0.08 on this toy world, against
    # <= 0.05 for all 8 epochs on every note; on the demo's MiniLM, 0 over 3 seeds: README). The gate still reads
    # the held-out notes, so a stop that came too early is a rejected candidate, never a promoted one.
    assert ev.before.forget_f1 >= 0.9 and ev.after.forget_f1 <= 0.1
    # too few forget notes to hold any out: every epoch runs, and the record says why
    sepsis = notes.has_any(["sepsis"])
    small = notes.subset(sorted(list(sepsis.nonzero()[0][:6]) + list((~sepsis).nonzero()[0][:30])))
    short = unlearn("steu", model, tok, ["sepsis"], small, {**CFG, "k": 4, "epochs": 2, "early_stop": True,
                                                            "min_patients": 1}, device="cpu")
    assert not short.info["early_stop"]["used"] and "fewer than" in short.info["early_stop"]["reason"]
    assert len(short.info["losses"]) == 2


def test_epoch_order_never_uses_held_out_notes():
    from steuops.methods.loop import epoch_order

    forget = torch.tensor([True, False, False, True, False, False, False, True])
    held = torch.tensor([True, False, True, False, False, False, False, False])
    g = torch.Generator().manual_seed(0)
    assert sorted(epoch_order(forget, 0.0, g, held).tolist()) == [1, 3, 4, 5, 6, 7]
    sampled = epoch_order(forget, 1.0, g, held).tolist()
    assert {3, 7} <= set(sampled) and not {0, 2} & set(sampled) and len(sampled) == 4


def test_the_row_gradient_is_the_same_every_time_on_a_multi_core_cpu():
    """Indexing the trained rows (`rows[slot]`) has a backward that adds into them with atomics when torch
    runs it on several threads, in another order each time: two runs of the same apply gave two edits. The
    lookup STEU uses sums in one order. A batch large enough for torch's threaded path, ten times."""
    from steuops.methods.steu.method import RowSubstitution

    torch.manual_seed(0)
    model = classifier(LABELS, vocab_size=200, hidden=32, layers=1)
    sub = RowSubstitution(model, list(range(5, 60)), torch.device("cpu"))
    ids = torch.randint(0, 200, (32, 64))  # 32 x 64 x 32 embedding values: past torch's grain size (32,768)
    mask = torch.ones_like(ids)
    grads = set()
    for _ in range(10):
        sub.rows.grad = None
        sub(ids, mask).square().sum().backward()
        grads.add(sub.rows.grad.numpy().tobytes())
    assert len(grads) == 1


def _without(model, label: str):
    """A copy of `model` that never predicts `label` (its head bias far below every other logit): what a
    version that forgot the class looks like to the next deletion."""
    gone = copy.deepcopy(model)
    with torch.no_grad():
        gone.classifier.bias[modeling.label_names(gone).index(label)] = -30.0
    return gone


@pytest.mark.parametrize("multi_label", [True, False], ids=["multi", "single"])
def test_rows_are_selected_only_for_the_classes_the_model_still_predicts(multi, multi_label):
    """Forgetting pneumonia from a model that already forgot sepsis (the parent's forgotten class is forgotten
    again, as apply does): the rows are the ones a deletion of pneumonia alone selects, and sepsis stays gone.
    With both classes still predicted, the rows are selected for both, as before; with every class named
    already forgotten, for all of them."""
    from steuops.methods.steu.method import STEUConfig, token_selection

    if multi_label:
        model, tok, notes, test = multi
    else:
        notes, test = keyword_notes(200, seed=0, multi_label=False), keyword_notes(80, seed=1, multi_label=False)
        model, tok = trained_classifier(notes, multi_label=False)
    cfg = {**CFG, "epochs": 2}
    both = ["pneumonia", "sepsis"]
    gone = _without(model, "sepsis")
    result = unlearn("steu", gone, tok, both, notes, cfg, device="cpu")
    chosen = result.info["selection"]
    assert chosen["already_forgotten"] == ["sepsis"] and chosen["classes"] == ["pneumonia"]
    alone = token_selection(gone, tok, notes, ["pneumonia"], STEUConfig(**cfg))
    assert alone.ids and sorted(result.edit.token_ids) == sorted(alone.ids)
    ev = evaluate(gone, result.model, tok, test, both, device="cpu", max_length=16)
    assert ev.before.per_class_f1["sepsis"] == 0.0 and ev.after.per_class_f1["sepsis"] == 0.0
    assert ev.before.per_class_f1["pneumonia"] >= 0.5
    # every class named already forgotten: the selection is for all of them, and none is reported left out
    # (the CLI said "68 rows for sepsis; none for sepsis" when it was)
    again = unlearn("steu", gone, tok, ["sepsis"], notes, {**cfg, "epochs": 1}, device="cpu")
    assert again.info["selection"]["classes"] == ["sepsis"] and again.info["selection"]["already_forgotten"] == []
    assert again.edit.token_ids

    fresh = unlearn("steu", model, tok, both, notes, {**cfg, "epochs": 1}, device="cpu")
    assert fresh.info["selection"]["already_forgotten"] == [] and fresh.info["selection"]["classes"] == both
    assert sorted(fresh.edit.token_ids) == sorted(token_selection(model, tok, notes, both, STEUConfig(**cfg)).ids)
