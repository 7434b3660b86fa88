"""HDSU on tiny real models: it forgets, changes at most its element budget, projects the forget gradient
away from the retain gradients, honours the hierarchy, and its edit applies and reverts like STEU's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from engine_data import LABELS, keyword_notes, trained_classifier

from steuops import modeling
from steuops.edit import SparseEdit, TokenEdit, load_edit
from steuops.errors import ConfigError
from steuops.hierarchy import Hierarchy
from steuops.methods import available, unlearn
from steuops.methods.hdsu import HDSUConfig, ProjectedGradients, blocked_rows, select_elements
from steuops.metrics import evaluate, param_diff

CFG = {"max_length": 16, "epochs": 8, "lr": 1e-2, "param_fraction": 0.01, "hierarchy": "none"}  # a 27k-param toy


@pytest.fixture(scope="module")
def multi():
    notes = keyword_notes(200, seed=0)
    model, tok = trained_classifier(notes)
    return model, tok, notes, keyword_notes(80, seed=1)


@pytest.fixture(scope="module")
def result(multi):
    model, tok, notes, _ = multi
    return unlearn("hdsu", model, tok, ["sepsis"], notes, CFG, device="cpu")


def test_registered_with_a_typed_config():
    assert "hdsu" in available()
    for bad in ({"fisher": "hessian"}, {"level_weights": [1, 1]}, {"param_fraction": 0}, {"projection_rank": -1}):
        with pytest.raises(ConfigError):
            HDSUConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="param_fraction"):
        HDSUConfig.from_dict({"param_fraction": "a lot"})


def test_hdsu_forgets_keeps_and_changes_at_most_its_budget(multi, result):
    model, tok, notes, test = multi
    ev = evaluate(model, result.model, tok, test, ["sepsis"], device="cpu", max_length=16)
    assert ev.before.forget_f1 >= 0.5 and ev.after.forget_f1 <= 0.05
    assert ev.after.retain_macro_f1 >= ev.before.retain_macro_f1 - 0.1
    total = sum(p.numel() for p in model.parameters())
    changed, counted, _ = param_diff(model, result.model)
    assert counted == total and 0 < changed <= int(CFG["param_fraction"] * total)
    assert result.edit.num_changed_values() == result.info["selection"]["elements"] >= changed
    # any tensor, not only embedding rows: the budget went where the Fisher score was
    assert len(result.info["selection"]["per_tensor"]) >= 2
    assert result.info["losses"][-1]["forget"] < result.info["losses"][0]["forget"]


def test_the_edit_is_a_sparse_edit_that_applies_reverts_and_round_trips(multi, result, tmp_path):
    model, *_ = multi
    edit = result.edit
    assert isinstance(edit, SparseEdit) and not isinstance(edit, TokenEdit)
    replay = edit.apply(copy.deepcopy(model))
    assert modeling.fingerprint(replay) == modeling.fingerprint(result.model)
    assert modeling.fingerprint(edit.revert(replay)) == modeling.fingerprint(model)
    loaded = load_edit(edit.save(tmp_path / "edit"))
    assert type(loaded) is SparseEdit and loaded.method == "hdsu"
    assert modeling.fingerprint(loaded.apply(copy.deepcopy(model))) == modeling.fingerprint(result.model)
    rows = {t["id"] for t in result.info["tokens"]}
    assert set(loaded.token_ids) == rows  # the embedding rows it touches are the report's tokens


def test_the_forget_gradient_is_orthogonal_to_the_retain_gradients(multi):
    """With the retain term off, the gradient written is the projected forget gradient alone: orthogonal to
    every retain-batch gradient in the basis, and restricted to the mask."""
    model, tok, notes, _ = multi
    from steuops.methods.hdsu import WholeForward
    from steuops.methods.loop import Batches, Task, frozen_copy, teacher_logits

    edited = frozen_copy(model, torch.device("cpu"))
    batches = Batches(tok, notes, 16, torch.device("cpu"))
    task = Task.build(edited, ["sepsis"], notes, teacher_logits(edited, batches, 32))
    params = dict(edited.named_parameters())
    names = ["classifier.weight", modeling.embedding_param_name(edited)]
    masks = {n: torch.rand(params[n].shape, generator=torch.Generator().manual_seed(0)) < 0.2 for n in names}
    for n in names:
        params[n].requires_grad_(True)
    config = HDSUConfig(retain_weight=0.0, projection_rank=3)
    step = ProjectedGradients(WholeForward(edited, batches), params, masks, task, torch.ones(len(notes)),
                              torch.ones(len(notes)), config)
    forget = np.flatnonzero(notes.has_any(["sepsis"]))
    retain = np.flatnonzero(~notes.has_any(["sepsis"]))
    for b in range(3):
        step(torch.tensor(np.r_[forget[b * 4 : b * 4 + 4], retain[b * 12 : b * 12 + 12]]))
    flat = torch.cat([params[n].grad[masks[n]] for n in names])
    off = torch.cat([params[n].grad[~masks[n]] for n in names])
    assert len(step.basis) == 3 and flat.norm() > 0 and off.abs().max() == 0
    for g in step.basis:
        assert abs(float(flat @ g)) <= 1e-5 * float(flat.norm() * g.norm())
    assert 0 < step.projected_share[-1] < 1


def test_select_elements_takes_the_top_of_every_tensor_together():
    scores = {"a": torch.tensor([[0.1, 5.0], [0.0, 2.0]]), "b": torch.tensor([3.0, 0.2, 0.0])}
    masks = select_elements(scores, 3)
    assert masks["a"].tolist() == [[False, True], [False, True]] and masks["b"].tolist() == [True, False, False]
    assert set(select_elements(scores, 100)) == {"a", "b"}  # never an element with score 0
    assert int(sum(m.sum() for m in select_elements(scores, 100).values())) == 5


def test_preservation_critical_and_rare_token_rows_are_never_editable(multi):
    model, tok, notes, _ = multi
    from steuops.methods.loop import Batches

    batches = Batches(tok, notes, 16, torch.device("cpu"))
    forget = np.flatnonzero(notes.has_any(["sepsis"])).tolist()
    lactate = tok.convert_tokens_to_ids("lactate")
    patient = tok.convert_tokens_to_ids("patient")
    open_rows = ~blocked_rows(batches, forget, notes, {}, min_patients=5, vocab=len(tok))
    assert open_rows[lactate] and open_rows[patient]
    blocked = blocked_rows(batches, forget, notes, {patient: 1, lactate: 4}, min_patients=5, vocab=len(tok))
    assert blocked[patient] and not blocked[lactate]  # L1 blocked, L4 editable
    assert blocked_rows(batches, forget, notes, {}, min_patients=10**6, vocab=len(tok)).all()  # too few patients


def test_a_hierarchy_weights_the_forget_notes_and_blocks_its_foundational_rows(multi, tmp_path):
    model, tok, notes, test = multi
    path = tmp_path / "h.yaml"
    path.write_text("format: steuops.hierarchy/v1\nclasses:\n  sepsis:\n    L4: [bacteremia, lactate]\n"
                    "    L3: [cultures]\n    L1: [patient, pressors]\n")
    assert Hierarchy.load(path).classes["sepsis"][4] == ["bacteremia", "lactate"]
    out = unlearn("hdsu", model, tok, ["sepsis"], notes, {**CFG, "hierarchy": str(path)}, device="cpu")
    levels = {t["token"]: t["level"] for t in out.info["tokens"]}
    assert "pressors" not in levels and "patient" not in levels  # L1 rows are never edited
    assert out.info["hierarchy"]["classes"] == ["sepsis"]
    ev = evaluate(model, out.model, tok, test, ["sepsis"], device="cpu", max_length=16)
    assert ev.after.forget_f1 <= 0.05
    with pytest.raises(ConfigError, match="pneumonia"):
        unlearn("hdsu", model, tok, ["pneumonia"], notes, {**CFG, "hierarchy": str(path)}, device="cpu")


def test_single_label_head(tmp_path):
    notes = keyword_notes(160, seed=2, multi_label=False)
    model, tok = trained_classifier(notes, multi_label=False)
    out = unlearn("hdsu", model, tok, ["copd"], notes, CFG, device="cpu")
    ev = evaluate(model, out.model, tok, keyword_notes(60, seed=3, multi_label=False), ["copd"], device="cpu",
                  max_length=16)
    assert ev.before.forget_f1 >= 0.5 and ev.after.forget_f1 <= 0.05
    assert set(modeling.label_names(out.model)) == set(LABELS)


def test_token_scale_weights_the_forget_gradient_of_each_edited_row_by_its_level():
    from steuops.methods.hdsu import token_scale

    masks = {"head": torch.tensor([True, False, True]),
             "emb": torch.tensor([[True, True], [False, True], [False, False], [True, False]])}
    config = HDSUConfig(level_weights=[0.0, 0.25, 0.5, 1.0], unmatched_weight=0.3, token_weighting=True)
    scale = token_scale(masks, "emb", {0: 4, 1: 3}, config)
    # head elements 1; emb elements in row order: row 0 (L4) twice, row 1 (L3), row 3 (outside the hierarchy)
    assert scale.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.3])
    assert token_scale(masks, "emb", {}, config) is None  # no hierarchy: nothing to weight
    assert token_scale(masks, "emb", {0: 4}, HDSUConfig(token_weighting=False)) is None
