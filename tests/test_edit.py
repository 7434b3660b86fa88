"""TokenEdit: save/load/apply/revert on real tiny models, and refusal of a different base."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from steuops import modeling
from steuops.edit import TokenEdit
from steuops.errors import ConfigError, EditMismatchError
from steuops.tiny import classifier

LABELS = ["a", "b", "c"]
VOCAB = 50


def _edited(base, ids):
    """A copy of `base` with rows `ids` and the head changed (what a sparse method produces)."""
    edited = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        modeling.embedding(edited).weight[ids] += torch.randn(len(ids), modeling.embedding(edited).weight.shape[1])
        params = dict(edited.named_parameters())
        for name in modeling.head_param_names(edited):
            params[name].add_(0.5)
    return edited


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_save_load_apply_revert(tmp_path, arch):
    base = classifier(LABELS, VOCAB, arch=arch)
    base_fp = modeling.fingerprint(base)
    ids = [7, 11, 30]
    edited = _edited(base, ids)
    edit = TokenEdit.capture(base, edited, ids, method="test", config={"k": 3}, forget=["a"])
    assert modeling.fingerprint(base) == base_fp  # capture reads, never writes

    out = edit.save(tmp_path / "edit")
    assert sorted(p.name for p in out.iterdir()) == ["edit.json", "edit.safetensors"]
    meta = json.loads((out / "edit.json").read_text())
    assert meta["token_ids"] == ids and meta["forget"] == ["a"] and meta["labels"] == LABELS
    assert (out / "edit.safetensors").stat().st_size < 100_000

    loaded = TokenEdit.load(out)
    target = copy.deepcopy(base)
    loaded.apply(target)
    x = torch.tensor([[2, 7, 11, 30, 12, 3], [2, 5, 6, 8, 9, 3]])
    assert torch.equal(_logits(target, x), _logits(edited, x))
    assert modeling.fingerprint(target) == modeling.fingerprint(edited) == loaded.edited_fingerprint

    loaded.revert(target)
    assert modeling.fingerprint(target) == base_fp
    for (n1, t1), (n2, t2) in zip(target.state_dict().items(), base.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2)


def test_apply_refuses_other_base(tmp_path):
    base = classifier(LABELS, VOCAB)
    edit = TokenEdit.capture(base, _edited(base, [4]), [4], method="test")
    other = classifier(LABELS, VOCAB, seed=5)
    with pytest.raises(EditMismatchError) as info:
        edit.apply(other)
    assert edit.base_fingerprint[:12] in str(info.value) and modeling.fingerprint(other)[:12] in str(info.value)
    assert info.value.hint
    target = copy.deepcopy(base)
    edit.apply(target)
    with pytest.raises(EditMismatchError, match="already applied"):
        edit.apply(target)
    with pytest.raises(EditMismatchError):
        edit.revert(copy.deepcopy(base))  # revert refuses a model the edit is not applied to


def test_head_only_edit_has_no_rows(tmp_path):
    base = classifier(LABELS, VOCAB)
    edited = _edited(base, [])
    edit = TokenEdit.capture(base, edited, [], method="head_only")
    loaded = TokenEdit.load(edit.save(tmp_path / "e"))
    assert loaded.k == 0 and loaded.rows.shape[0] == 0
    target = loaded.apply(copy.deepcopy(base))
    assert modeling.fingerprint(target) == modeling.fingerprint(edited)


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="edit.json"):
        TokenEdit.load(tmp_path)
    base = classifier(LABELS, VOCAB)
    out = TokenEdit.capture(base, _edited(base, [3]), [3], method="t").save(tmp_path / "e")
    meta = json.loads((out / "edit.json").read_text())
    meta["format_version"] = 99
    (out / "edit.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="format"):
        TokenEdit.load(out)
