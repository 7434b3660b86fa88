"""Baselines on tiny real models: each changes exactly what it claims, and is evaluated like STEU."""

from __future__ import annotations

import pytest
import torch
from engine_data import LABELS, keyword_notes, trained_classifier
from test_steu import changed_keys

from steuops import modeling
from steuops.errors import ConfigError
from steuops.methods import unlearn
from steuops.methods.baselines import base_dir, top_blocks, without
from steuops.metrics import evaluate
from steuops.tiny import classifier

CFG = {"k": 8, "epochs": 3, "max_length": 16}


def sepsis_logit(model, tok, notes) -> float:
    """Mean sepsis logit over the notes that carry sepsis: what every method pushes down."""
    rows = notes.has_any(["sepsis"])
    return float(modeling.logits(model, tok, notes.subset(rows).texts, max_length=16)[:, 0].mean())


@pytest.fixture(scope="module")
def multi():
    notes = keyword_notes(200, seed=0)
    model, tok = trained_classifier(notes)
    return model, tok, notes


def test_head_only_changes_only_the_head(multi):
    model, tok, notes = multi
    result = unlearn("head_only", model, tok, ["sepsis"], notes, CFG, device="cpu")
    changed = changed_keys(model, result.model)
    assert changed and set(changed) <= set(modeling.head_param_names(model))
    assert result.edit.k == 0
    assert sepsis_logit(result.model, tok, notes) < sepsis_logit(model, tok, notes) - 0.5


def test_embedding_only_keeps_the_head(multi):
    model, tok, notes = multi
    result = unlearn("embedding_only", model, tok, ["sepsis"], notes, CFG, device="cpu")
    emb = modeling.embedding_param_name(model)
    changed = changed_keys(model, result.model)
    assert set(changed) == {emb}
    assert set(changed[emb].any(dim=1).nonzero().flatten().tolist()) <= set(result.edit.token_ids)
    assert [t["token"] for t in result.info["tokens"]][:1] != []


def test_random_tokens_is_seeded_and_not_pmi(multi):
    model, tok, notes = multi
    a = unlearn("random_tokens", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1}, device="cpu")
    steu = unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1}, device="cpu")
    assert len(a.edit.token_ids) == CFG["k"] and a.edit.token_ids != sorted(steu.edit.token_ids)
    assert not set(a.edit.token_ids) & set(tok.all_special_ids)
    b = unlearn("random_tokens", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1}, device="cpu")
    assert a.edit.token_ids == b.edit.token_ids
    changed = changed_keys(model, a.model)
    assert set(changed) <= set(modeling.head_param_names(model)) | {modeling.embedding_param_name(model)}


def test_grad_ascent_touches_top_blocks_and_head():
    notes = keyword_notes(200, seed=0)
    tok_model = classifier(LABELS, 10)  # only to probe block discovery on a 2-layer stack
    assert top_blocks(tok_model, 1)[0] is tok_model.bert.encoder.layer[-1]
    distil = classifier(LABELS, 10, arch="distilbert", layers=3)
    assert top_blocks(distil, 2) == list(distil.distilbert.transformer.layer)[-2:]
    with pytest.raises(ConfigError, match="layers=5"):
        top_blocks(tok_model, 5)

    model, tok = trained_classifier(notes)
    result = unlearn("grad_ascent", model, tok, ["sepsis"], notes,
                     {"layers": 1, "epochs": 3, "lr": 1e-3, "max_length": 16}, device="cpu")
    changed = changed_keys(model, result.model)
    allowed = set(modeling.head_param_names(model)) | {f"bert.encoder.layer.0.{n}" for n, _ in
                                                       model.bert.encoder.layer[0].named_parameters()}
    assert changed and set(changed) <= allowed
    assert any(n.startswith("bert.encoder.layer.0.") for n in changed)
    assert sepsis_logit(result.model, tok, notes) < sepsis_logit(model, tok, notes) - 0.5
    assert result.edit is None and result.info["losses"]


def test_retrain_from_base_dir(multi, tmp_path):
    model, tok, notes = multi
    base = tmp_path / "base"
    classifier(LABELS, len(tok), layers=1, seed=3).bert.save_pretrained(base)  # a bare "pretrained" encoder
    result = unlearn("retrain", model, tok, ["sepsis"], notes,
                     {"base": str(base), "epochs": 8, "lr": 1e-2, "head_lr": None, "warmup": 0.0,
                      "max_length": 16}, device="cpu")
    ev = evaluate(model, result.model, tok, notes, ["sepsis"], device="cpu", max_length=16)
    assert ev.after.forget_f1 == 0.0  # the sepsis column was trained to 0 everywhere
    assert ev.after.retain_macro_f1 >= 0.5
    assert ev.params_fraction > 0.5  # a retrained model differs almost everywhere
    assert result.info["base"] == str(base)


def test_retrain_base_resolution(multi, tmp_path):
    model, tok, notes = multi
    with pytest.raises(ConfigError, match="base"):
        unlearn("retrain", model, tok, ["sepsis"], notes, {"epochs": 1}, device="cpu")
    with pytest.raises(ConfigError, match="config.json"):
        base_dir(model, tmp_path)
    model.save_pretrained(tmp_path / "saved")
    reloaded = type(model).from_pretrained(tmp_path / "saved")
    assert base_dir(reloaded, None) == tmp_path / "saved"


def test_without_drops_forget_labels(multi):
    _, _, notes = multi
    stripped = without(notes, ["sepsis"])
    assert not stripped.has_any(["sepsis"]).any() and len(stripped) == len(notes)
    assert notes.has_any(["sepsis"]).any()  # the input is not modified
    assert torch.tensor(stripped.multi_hot(LABELS)[:, 1:]).equal(torch.tensor(notes.multi_hot(LABELS)[:, 1:]))


def test_token_methods_report_their_selection_and_hide_tokens_on_request(multi):
    model, tok, notes = multi
    emb = unlearn("embedding_only", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1}, device="cpu")
    assert emb.info["selection"]["scorer"] == "specific" and emb.info["selection"]["min_patients"] == 5
    assert emb.edit.info["selection"] == emb.info["selection"]  # the saved edit carries the same counts
    assert 0.0 <= emb.info["retain_touched_fraction"] <= 1.0
    rnd = unlearn("random_tokens", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1, "show_tokens": False},
                  device="cpu")
    assert {t["token"] for t in rnd.info["tokens"]} == {"[hidden]"} and len(rnd.info["tokens"]) == CFG["k"]
    head = unlearn("head_only", model, tok, ["sepsis"], notes, {**CFG, "epochs": 1}, device="cpu")
    assert head.info["retain_touched_fraction"] == 0.0 and head.info["shortcut"]["head_only_notes"] == len(notes)
