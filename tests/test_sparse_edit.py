"""SparseEdit: element-wise edits of any tensor, TokenEdit as its special case, both on-disk formats."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from steuops import metrics, modeling
from steuops.edit import FORMAT, LEGACY_FORMAT, SparseEdit, TokenEdit, load_edit
from steuops.errors import ConfigError, EditMismatchError
from steuops.tiny import classifier

LABELS = ["a", "b", "c"]
VOCAB = 50
EMB = "bert.embeddings.word_embeddings.weight"
QUERY = "bert.encoder.layer.0.attention.self.query.weight"
LN_BIAS = "bert.embeddings.LayerNorm.bias"
HEAD_W, HEAD_B = "classifier.weight", "classifier.bias"


def _edited(base):
    """A copy of `base` with scattered elements changed in five tensors (what a Fisher-masked method makes)."""
    edited = copy.deepcopy(base)
    p = dict(edited.named_parameters())
    with torch.no_grad():
        p[QUERY][3, 5] += 0.25
        p[QUERY][10, 2] -= 1.0
        p[LN_BIAS][[0, 7]] += 0.5
        p[EMB][7, [0, 3]] += 1.0
        p[EMB][11, 31] = 2.0
        p[HEAD_W][1, 4] *= -1
        p[HEAD_B].add_(0.1)
    return edited


def _same_state(a, b):
    for (n1, t1), (n2, t2) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2), n1


@pytest.fixture
def base():
    return classifier(LABELS, VOCAB)


def test_capture_apply_revert(base):
    base_fp = modeling.fingerprint(base)
    edited = _edited(base)
    edit = SparseEdit.capture(base, edited, method="fisher", config={"fraction": 0.001}, forget=["a"])
    assert modeling.fingerprint(base) == base_fp  # capture reads, never writes
    assert set(edit.entries) == {QUERY, LN_BIAS, EMB, HEAD_W, HEAD_B}
    assert edit.entries[LN_BIAS].indices.tolist() == [0, 7]
    assert edit.entries[EMB].indices.tolist() == [7 * 32, 7 * 32 + 3, 11 * 32 + 31]
    assert edit.entries[QUERY].values.dtype == torch.float32 and edit.entries[QUERY].shape == (32, 32)
    assert edit.token_ids == [7, 11] and edit.k == 2 and edit.embedding_name == EMB
    assert edit.num_changed_values() == metrics.param_diff(base, edited)[0] == 2 + 2 + 3 + 1 + 3
    assert edit.labels == LABELS and edit.forget == ["a"] and edit.base_fingerprint == base_fp

    target = edit.apply(copy.deepcopy(base))
    assert modeling.fingerprint(target) == modeling.fingerprint(edited) == edit.edited_fingerprint
    _same_state(target, edited)
    edit.revert(target)
    assert modeling.fingerprint(target) == base_fp
    _same_state(target, base)


def test_apply_refuses_other_base_and_double_apply(base):
    edit = SparseEdit.capture(base, _edited(base), method="fisher")
    other = classifier(LABELS, VOCAB, seed=5)
    with pytest.raises(EditMismatchError) as info:
        edit.apply(other)
    assert edit.base_fingerprint[:12] in str(info.value) and modeling.fingerprint(other)[:12] in str(info.value)
    assert info.value.hint
    target = edit.apply(copy.deepcopy(base))
    with pytest.raises(EditMismatchError, match="already applied"):
        edit.apply(target)
    with pytest.raises(EditMismatchError):
        edit.revert(copy.deepcopy(base))  # revert refuses a model the edit is not applied to


def test_capture_refuses_other_architecture_and_unrecorded_changes(base):
    with pytest.raises(EditMismatchError, match="differ in their parameters"):
        SparseEdit.capture(base, classifier(LABELS, VOCAB + 1), method="x")
    edited = _edited(base)
    only = SparseEdit.capture(base, edited, names=[QUERY, LN_BIAS, EMB, HEAD_W, HEAD_B], method="x")
    assert only.num_changed_values() == 11
    with pytest.raises(EditMismatchError, match=HEAD_B):  # changed but not among `names`: apply could not rebuild it
        SparseEdit.capture(base, edited, names=[QUERY, LN_BIAS, EMB, HEAD_W], method="x")
    with pytest.raises(ConfigError, match="nope"):
        SparseEdit.capture(base, edited, names=["nope"], method="x")


def test_bitwise_changes_are_recorded(base):
    """LayerNorm bias starts at +0.0: -0.0 compares equal but is another model (another fingerprint)."""
    edited = copy.deepcopy(base)
    with torch.no_grad():
        dict(edited.named_parameters())[LN_BIAS][3] = -0.0
    edit = SparseEdit.capture(base, edited, method="x")
    assert edit.entries[LN_BIAS].indices.tolist() == [3]
    assert modeling.fingerprint(edit.apply(copy.deepcopy(base))) == modeling.fingerprint(edited)


def test_from_masks_records_exactly_the_mask(base):
    edited = _edited(base)
    params = dict(base.named_parameters())
    masks = {n: torch.zeros_like(params[n], dtype=torch.bool) for n in (QUERY, LN_BIAS, EMB, HEAD_W, HEAD_B)}
    masks[QUERY][3, 5] = masks[QUERY][10, 2] = masks[QUERY][0, 0] = True  # (0, 0) allowed but unchanged
    masks[LN_BIAS][[0, 7, 9]] = True
    masks[EMB][7, :] = True  # the whole row was trainable; only two elements moved
    masks[EMB][11, 31] = True
    masks[HEAD_W][:] = True
    masks[HEAD_B][:] = True
    edit = SparseEdit.from_masks(base, edited, masks, method="fisher")
    for name, mask in masks.items():
        assert edit.entries[name].indices.tolist() == mask.reshape(-1).nonzero().flatten().tolist()
    assert edit.num_changed_values() == sum(int(m.sum()) for m in masks.values())
    q = edit.entries[QUERY]
    assert torch.equal(q.values[0], q.originals[0]) and not torch.equal(q.values[1:], q.originals[1:])
    assert edit.token_ids == [7, 11]
    target = edit.apply(copy.deepcopy(base))
    assert modeling.fingerprint(target) == edit.edited_fingerprint == modeling.fingerprint(edited)
    assert modeling.fingerprint(edit.revert(target)) == edit.base_fingerprint

    masks[QUERY][10, 2] = False  # a changed element outside the mask: the edit would not reproduce the model
    with pytest.raises(EditMismatchError, match=QUERY):
        SparseEdit.from_masks(base, edited, masks, method="fisher")
    with pytest.raises(ConfigError, match="bool"):
        SparseEdit.from_masks(base, edited, {QUERY: torch.ones(3, 3, dtype=torch.bool)}, method="fisher")


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_random_elements_across_all_tensors(arch):
    """~1% of the elements of every tensor, as a Fisher-chosen mask would pick them."""
    base = classifier(LABELS, VOCAB, arch=arch)
    edited = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(0)
    masks = {}
    with torch.no_grad():
        for name, param in edited.named_parameters():
            masks[name] = torch.rand(param.shape, generator=gen) < 0.01
            param[masks[name]] += torch.randn(int(masks[name].sum()), generator=gen)
    edit = SparseEdit.from_masks(base, edited, masks, method="fisher")
    assert edit.num_changed_values() == metrics.param_diff(base, edited)[0] == sum(int(m.sum()) for m in masks.values())
    emb = modeling.embedding_param_name(base)
    assert edit.token_ids == sorted(set(masks[emb].any(dim=1).nonzero().flatten().tolist()))
    target = edit.apply(copy.deepcopy(base))
    assert modeling.fingerprint(target) == modeling.fingerprint(edited)
    assert modeling.fingerprint(edit.revert(target)) == modeling.fingerprint(base)


def test_sparse_save_load_round_trip(tmp_path, base):
    edited = _edited(base)
    edit = SparseEdit.capture(base, edited, method="fisher", config={"fraction": 0.001}, forget=["b"],
                              info={"fisher_batches": 4})
    out = edit.save(tmp_path / "edit")
    assert sorted(p.name for p in out.iterdir()) == ["edit.json", "edit.safetensors"]
    meta = json.loads((out / "edit.json").read_text())
    assert (meta["format"], meta["format_version"], meta["kind"]) == (FORMAT, 1, "sparse")
    assert {e["name"]: e["shape"] for e in meta["entries"]}[QUERY] == [32, 32]
    assert meta["num_values"] == 11 and meta["forget"] == ["b"] and meta["info"] == {"fisher_batches": 4}

    for loaded in (load_edit(out), SparseEdit.load(out)):
        assert type(loaded) is SparseEdit
        assert loaded.entries.keys() == edit.entries.keys()
        for name, entry in edit.entries.items():
            got = loaded.entries[name]
            assert got.shape == entry.shape
            assert all(torch.equal(getattr(got, part), getattr(entry, part)) for part in ("indices", "values", "originals"))
        assert (loaded.token_ids, loaded.config, loaded.labels) == ([7, 11], {"fraction": 0.001}, LABELS)
        target = loaded.apply(copy.deepcopy(base))
        assert modeling.fingerprint(target) == modeling.fingerprint(edited)
    with pytest.raises(ConfigError, match="not a token edit"):
        TokenEdit.load(out)


def _token_edit(base, ids):
    edited = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        modeling.embedding(edited).weight[ids] += torch.randn(len(ids), 32)
        params = dict(edited.named_parameters())
        for name in modeling.head_param_names(edited):
            params[name].add_(0.5)
    return edited, TokenEdit.capture(base, edited, ids, method="steu", config={"k": len(ids)}, forget=["a"])


def test_token_edit_is_a_sparse_edit(base):
    ids = [30, 7, 11]  # not sorted: the TokenEdit keeps the caller's order, its entries ascend
    edited, tok = _token_edit(base, ids)
    assert isinstance(tok, SparseEdit) and tok.token_ids == ids and tok.k == 3
    entries = tok.entries
    assert list(entries) == [EMB, HEAD_W, HEAD_B]
    assert entries[EMB].shape == (VOCAB, 32) and entries[EMB].indices.tolist() == [
        i * 32 + j for i in (7, 11, 30) for j in range(32)]
    assert tok.num_changed_values() == 3 * 32 + 3 * 32 + 3 == sum(len(e) for e in entries.values())
    assert tok.num_changed_values() == metrics.param_diff(base, edited)[0]  # the head moved everywhere here

    as_sparse = SparseEdit(entries=entries, base_fingerprint=tok.base_fingerprint, method="steu",
                           embedding_name=tok.embedding_name, edited_fingerprint=tok.edited_fingerprint)
    assert as_sparse.token_ids == sorted(ids)
    via_token, via_entries = tok.apply(copy.deepcopy(base)), as_sparse.apply(copy.deepcopy(base))
    _same_state(via_token, via_entries)
    assert modeling.fingerprint(via_token) == modeling.fingerprint(edited)
    captured = SparseEdit.capture(base, edited, method="steu")  # the element diff agrees with the rows + head
    for name, entry in captured.entries.items():
        assert torch.equal(entry.indices, entries[name].indices) and torch.equal(entry.values, entries[name].values)
    assert modeling.fingerprint(tok.revert(via_token)) == tok.base_fingerprint


def test_token_save_load_round_trip(tmp_path, base):
    ids = [30, 7, 11]
    edited, tok = _token_edit(base, ids)
    out = tok.save(tmp_path / "edit")
    meta = json.loads((out / "edit.json").read_text())
    assert (meta["format"], meta["kind"], meta["token_ids"]) == (FORMAT, "token", ids)
    assert meta["head_names"] == [HEAD_W, HEAD_B] and meta["embedding_shape"] == [VOCAB, 32]
    for loaded in (TokenEdit.load(out), load_edit(out), SparseEdit.load(out)):
        assert type(loaded) is TokenEdit and loaded.token_ids == ids
        assert torch.equal(loaded.rows, tok.rows) and torch.equal(loaded.original_rows, tok.original_rows)
        assert all(torch.equal(loaded.head[n], tok.head[n]) for n in tok.head)
        assert all(torch.equal(loaded.original_head[n], tok.original_head[n]) for n in tok.head)
        assert (loaded.method, loaded.forget, loaded.config) == ("steu", ["a"], {"k": 3})
        target = loaded.apply(copy.deepcopy(base))
        assert modeling.fingerprint(target) == modeling.fingerprint(edited)
        assert modeling.fingerprint(loaded.revert(target)) == tok.base_fingerprint


def test_head_only_token_edit_round_trip(tmp_path, base):
    edited, tok = _token_edit(base, [])
    assert EMB not in tok.entries and tok.k == 0
    loaded = load_edit(tok.save(tmp_path / "e"))
    assert isinstance(loaded, TokenEdit) and loaded.rows.shape == (0, 32)
    assert modeling.fingerprint(loaded.apply(copy.deepcopy(base))) == modeling.fingerprint(edited)


def _write_legacy(tok: TokenEdit, directory):
    """A directory as TokenEdit.save wrote it before sparse edits (what registered versions hold)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    tensors = {"rows": tok.rows, "original_rows": tok.original_rows}
    tensors.update({f"head.{n}": t for n, t in tok.head.items()})
    tensors.update({f"original_head.{n}": t for n, t in tok.original_head.items()})
    save_file({n: t.contiguous().clone() for n, t in tensors.items()}, str(directory / "edit.safetensors"))
    meta = {"format": LEGACY_FORMAT, "format_version": 1, "method": tok.method, "token_ids": tok.token_ids,
            "head_names": list(tok.head), "embedding_name": tok.embedding_name,
            "base_fingerprint": tok.base_fingerprint, "edited_fingerprint": tok.edited_fingerprint,
            "forget": tok.forget, "labels": tok.labels, "config": tok.config, "info": {"tokens": []}}
    (directory / "edit.json").write_text(json.dumps(meta, indent=2))
    return directory


def test_legacy_token_edit_loads_and_applies(tmp_path, base):
    ids = [12, 4]
    edited, tok = _token_edit(base, ids)
    legacy = _write_legacy(tok, tmp_path / "legacy")
    for loaded in (TokenEdit.load(legacy), load_edit(legacy)):
        assert type(loaded) is TokenEdit and loaded.token_ids == ids and torch.equal(loaded.rows, tok.rows)
        with pytest.raises(ConfigError, match="embedding"):  # no shape recorded yet: cannot be re-saved blind
            loaded.save(tmp_path / "resaved")
        target = loaded.apply(copy.deepcopy(base))  # the base names its embedding, as TokenEdit always did
        assert modeling.fingerprint(target) == modeling.fingerprint(edited)
        assert modeling.fingerprint(loaded.revert(target)) == tok.base_fingerprint
    resaved = load_edit(loaded.save(tmp_path / "resaved"))  # after apply it knows the shape: new format
    assert json.loads((tmp_path / "resaved" / "edit.json").read_text())["format"] == FORMAT
    assert modeling.fingerprint(resaved.apply(copy.deepcopy(base))) == modeling.fingerprint(edited)


def test_load_errors(tmp_path, base):
    from safetensors.torch import load_file, save_file

    with pytest.raises(ConfigError, match="edit.json"):
        load_edit(tmp_path)
    out = SparseEdit.capture(base, _edited(base), method="x").save(tmp_path / "e")
    meta_path, tensor_path = out / "edit.json", out / "edit.safetensors"
    good = meta_path.read_text()

    meta_path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_edit(out)
    for bad in ({"format_version": 99}, {"format": "other"}, {"kind": "dense"}):
        meta_path.write_text(json.dumps({**json.loads(good), **bad}))
        with pytest.raises(ConfigError, match="format") as info:
            load_edit(out)
        assert "edit.json" in str(info.value) and info.value.hint
    meta_path.write_text(good)

    tensors = load_file(str(tensor_path))
    del tensors[f"{QUERY}..values"]
    save_file(tensors, str(tensor_path))
    with pytest.raises(ConfigError, match="edit.safetensors") as info:
        load_edit(out)
    assert QUERY in str(info.value)
    tensor_path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="edit.safetensors"):
        load_edit(out)
