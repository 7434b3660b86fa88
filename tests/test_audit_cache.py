"""The audit cache: the original's and the reference's work is read back, not recomputed, and gives the
very figures a fresh audit gives; entries that do not match a fresh pass, or were made under other
settings, are not used."""

from __future__ import annotations

import numpy as np
import pytest
from test_audit import FAST, FORGET, _fit, steu_world

from steuops.audit import AuditConfig, passes, run_audit
from steuops.data import Notes

CONFIG = {**FAST, "seeds": 2, "gradient_seeds": 2, "retain_relearn_steps": 2, "retain_relearn_controls": True}
FIGURES = ("probe_f1", "relearn_f1", "membership_auc", "retain_relearn_f1", "cka", "bypass_f1", "relearn_sizes")


@pytest.fixture(scope="module")
def world():
    original, steu, tok, train, test = steu_world(200, seed=3)
    without = Notes(train.texts, [[c for c in ls if c not in FORGET] for ls in train.labels])
    return original, steu, _fit(without, tok, seed=1), tok, train, test


@pytest.fixture
def counted(monkeypatch):
    """How many notes each model ran through its encoder (the real passes, counted on their way)."""
    seen: dict[int, int] = {}
    real = passes.forward_pass

    def forward_pass(model, tokenizer, texts, **kwargs):
        seen[id(model)] = seen.get(id(model), 0) + len(texts)
        return real(model, tokenizer, texts, **kwargs)

    monkeypatch.setattr(passes, "forward_pass", forward_pass)
    return seen


def _audit(world, cache_dir, **overrides):
    original, steu, reference, tok, train, test = world
    return run_audit(original, steu.model, tok, FORGET, train, test, reference=reference, device="cpu",
                     config=AuditConfig(**{**CONFIG, **overrides}), edit=steu.edit, cache_dir=cache_dir).to_dict()


def test_a_second_audit_reads_the_fixed_models_work_and_gives_the_same_figures(world, tmp_path, counted):
    original, steu, reference, *_ = world
    fresh = _audit(world, None)
    assert fresh["cache"] == {}
    first = _audit(world, tmp_path)
    assert first["cache"]["reused"] == {} and first["cache"]["rejected"] == []
    assert list(tmp_path.rglob("pass-*.npz")) and list(tmp_path.rglob("values.json"))
    counted.clear()
    second = _audit(world, tmp_path)
    reused = second["cache"]["reused"]
    # every note the fixed models needed came from the cache; and each seed's attacks on them
    for role in ("original", "reference"):
        assert reused[role]["notes"] > 0 and reused[role]["probe"] == 2 and reused[role]["retain_relearn"] == 2
    assert reused["reference"]["relearn_head"] == 2 * (1 + len(CONFIG["relearn_sizes"]))
    assert "relearn_head" not in reused["original"], "the original's head is never re-fit"
    # ...so they ran only the few notes that check an entry (one per split: train, test, bypass)
    for model in (original, reference):
        assert counted.get(id(model), 0) <= 3 * passes.VERIFY_NOTES
    assert counted.get(id(steu.model), 0) > 0, "the edited model's own work is never cached"
    for key in FIGURES:
        assert second[key] == fresh[key] == first[key], key


def test_the_audit_counts_and_times_the_encoder_passes_it_ran_per_model(world, tmp_path, counted):
    """sizes.encoder_notes: the notes each model's encoder ran over for the audit's passes (a first audit runs a new
    reference over all of them); seconds.passes: their time, taken out of the attack that asked for them first."""
    original, steu, reference, *_ = world
    first = _audit(world, tmp_path)
    ran = first["sizes"]["encoder_notes"]
    assert ran == {"original": counted[id(original)], "edited": counted[id(steu.model)],
                   "reference": counted[id(reference)]}
    assert ran["edited"] < ran["original"], "the edited model's untouched notes took the original's encoder outputs"
    assert first["seconds"]["passes"] > 0 and all(v >= 0 for v in first["seconds"].values())
    second = _audit(world, tmp_path)
    # every model's passes were read back (a few notes of each run again to check them, not counted here)
    assert second["sizes"]["encoder_notes"] == {}
    assert second["seconds"]["passes"] == 0.0


def test_an_entry_that_differs_from_a_fresh_pass_is_recomputed(world, tmp_path):
    fresh = _audit(world, tmp_path)
    for path in tmp_path.rglob("pass-*.npz"):  # as if another model's numbers sat under this key
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["logits"] = arrays["logits"] + 1.0
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    again = _audit(world, tmp_path)
    assert again["cache"]["rejected"] and all("differ from a fresh pass" in r for r in again["cache"]["rejected"])
    # nothing of a model whose passes did not match is trusted, not even its remembered attacks
    assert again["cache"]["reused"] == {}
    for key in FIGURES:
        assert again[key] == fresh[key], key
    # ...and the recomputed entry was written back: the next audit uses it
    assert "notes" in _audit(world, tmp_path)["cache"]["reused"]["original"]


def test_a_damaged_entry_is_computed_again_not_an_error(world, tmp_path):
    fresh = _audit(world, tmp_path)
    for path in tmp_path.rglob("pass-*.npz"):  # a field missing: torn by hand, or written by something else
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != "logits"}
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    again = _audit(world, tmp_path)
    assert "notes" not in again["cache"]["reused"].get("original", {})
    for key in FIGURES:
        assert again[key] == fresh[key], key


def test_an_audit_without_the_controls_reads_the_entries_of_one_with_them(world, tmp_path):
    """retain_relearn_controls chooses which models the retain-only fine-tune attacks, not how any attack runs:
    an audit with the controls off reads the fixed models' probes and head re-fits that one with them wrote."""
    with_controls = _audit(world, tmp_path)
    without = _audit(world, tmp_path, retain_relearn_controls=False)
    reused = without["cache"]["reused"]
    assert reused["reference"]["probe"] == 2 and "retain_relearn" not in reused["reference"]
    assert without["retain_relearn_f1"]["reference"] is None
    for figure in ("probe_f1", "relearn_f1", "membership_auc"):
        assert without[figure] == with_controls[figure], figure
    assert without["retain_relearn_f1"]["edited"] == with_controls["retain_relearn_f1"]["edited"]


def test_other_settings_or_another_model_miss_the_cache(world, tmp_path):
    original, steu, reference, tok, train, test = world
    _audit(world, tmp_path)
    assert _audit(world, tmp_path, max_length=12)["cache"]["reused"] == {}
    # attacks run with other options miss; the passes (same length, same batch) still hit
    other = _audit(world, tmp_path, retain_relearn_lr=1e-3)["cache"]["reused"]
    assert set(other["original"]) == {"notes"}
    swapped = run_audit(original, steu.model, tok, FORGET, train, test, reference=_fit(train, tok, seed=7),
                        device="cpu", config=AuditConfig(**CONFIG), edit=steu.edit, cache_dir=tmp_path).to_dict()
    assert "reference" not in swapped["cache"]["reused"] and "original" in swapped["cache"]["reused"]


def test_a_cache_that_cannot_be_written_leaves_the_audit_standing(world, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    report = _audit(world, blocked / "audit")
    assert report["probe_f1"]["edited"] is not None
    assert report["cache"]["rejected"] and all(r.startswith("not written to the audit cache")
                                               for r in report["cache"]["rejected"])


def test_feature_cache_arrays_round_trip_every_dtype_and_kind():
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from steuops.features import FeatureCache

    hidden = torch.randn(5, 1, 4).to(torch.bfloat16)
    for fields, kind in (({"last_hidden_state": hidden, "pooler_output": torch.randn(5, 4),
                           "hidden_states": None}, BaseModelOutputWithPooling),
                         ({"0": torch.randn(5, 1, 4), "1": None}, tuple)):
        back = FeatureCache.from_arrays(FeatureCache(fields, kind).to_arrays(), "cpu")
        assert back.kind is kind and list(back.fields) == list(fields)
        for key, value in fields.items():
            assert (back.fields[key] is None) if value is None else (
                back.fields[key].dtype == value.dtype and torch.equal(back.fields[key], value))
    foreign = FeatureCache({"0": torch.zeros(2, 3)}, tuple).to_arrays()
    foreign["cache.layout"] = np.array('{"kind": "os:system", "fields": {"0": "float32"}}')
    assert FeatureCache.from_arrays(foreign, "cpu") is None, "only transformers output classes are rebuilt"


def test_only_the_rows_an_audit_ran_are_written(world, tmp_path):
    """A large cohort's audit samples its notes: the cache holds those rows, not the whole split."""
    _audit(world, tmp_path, max_train=24, max_test=12, seeds=1, relearn_sizes=[], retain_relearn_notes=4)
    sizes = []
    for path in tmp_path.rglob("pass-*.npz"):
        with np.load(path) as data:
            assert len(data["logits"]) == len(data["features"]) == len(data["rows"]) <= int(data["n"])
            sizes.append((len(data["rows"]), int(data["n"])))
    assert any(rows < n for rows, n in sizes), sizes


def test_a_pass_remembered_over_some_of_a_splits_notes_is_read_back_and_the_rest_computed(world, tmp_path, counted):
    """remember_pass(rows=...): STEU's teacher with retain sampling runs part of the training notes. An audit reads
    back those rows, runs the parent on the others only, and gives the figures of a fresh audit."""
    import torch

    from steuops import features
    from steuops.audit import remember_pass

    original, steu, reference, tok, train, test = world
    rows = np.arange(0, len(train), 2)  # every other training note
    ran = passes.forward_pass(original, tok, [train.texts[i] for i in rows], batch_size=CONFIG["batch_size"],
                              max_length=CONFIG["max_length"], device=torch.device("cpu"), keep_cache=True)
    assert ran.exact and isinstance(ran.cache, features.FeatureCache)
    assert remember_pass(tmp_path, original, tok, train.texts, ran.logits, ran.cache, max_length=CONFIG["max_length"],
                         device="cpu", rows=rows)
    assert not remember_pass(tmp_path, original, tok, train.texts, ran.logits, ran.cache,
                             max_length=CONFIG["max_length"], device="cpu", rows=rows)  # there already
    counted.clear()
    audited = _audit(world, tmp_path)
    assert audited["cache"]["reused"]["original"] == {"notes": len(rows)} and not audited["cache"]["rejected"]
    ran_now = counted.pop(id(original))
    fresh = _audit(world, None)
    # the remembered rows did not run again, but for the few that check the entry
    assert ran_now == counted[id(original)] - len(rows) + passes.VERIFY_NOTES
    for key in FIGURES:
        assert audited[key] == fresh[key], key


def test_recall_pass_gives_back_a_whole_remembered_pass_and_nothing_else(world, tmp_path):
    """audit.recall_pass (apply reads its parent's held-out pass with it): the very logits remember_pass kept, with
    encoder outputs that replay them; never another model's, other texts', another length's, part of a split or an
    entry that no longer matches a fresh pass."""
    import torch

    from steuops import features
    from steuops.audit import recall_pass, remember_pass

    original, steu, reference, tok, train, test = world
    at = {"max_length": CONFIG["max_length"], "device": "cpu"}
    ran = passes.forward_pass(original, tok, test.texts, batch_size=CONFIG["batch_size"], max_length=CONFIG["max_length"],
                              device=torch.device("cpu"), keep_cache=True)
    assert recall_pass(tmp_path, original, tok, test.texts, **at) is None, "nothing kept yet"
    assert remember_pass(tmp_path, original, tok, test.texts, ran.logits, ran.cache, **at)
    logits, cache = recall_pass(tmp_path, original, tok, test.texts, **at)
    np.testing.assert_array_equal(logits, ran.logits)
    assert features.exact(original, cache, torch.from_numpy(logits), device=torch.device("cpu"), sample=len(test))
    assert recall_pass(tmp_path, reference, tok, test.texts, **at) is None
    assert recall_pass(tmp_path, original, tok, test.texts[:-1], **at) is None
    assert recall_pass(tmp_path, original, tok, test.texts, max_length=CONFIG["max_length"] - 2, device="cpu") is None
    half = np.arange(0, len(train), 2)  # STEU's sampled teacher keeps part of the training notes: not a whole pass
    part = passes.forward_pass(original, tok, [train.texts[i] for i in half], batch_size=CONFIG["batch_size"],
                               max_length=CONFIG["max_length"], device=torch.device("cpu"), keep_cache=True)
    assert remember_pass(tmp_path, original, tok, train.texts, part.logits, part.cache, rows=half, **at)
    assert recall_pass(tmp_path, original, tok, train.texts, **at) is None
    for path in tmp_path.rglob("pass-*.npz"):  # another model's numbers under this key
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["logits"] = arrays["logits"] * 1.5
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    assert recall_pass(tmp_path, original, tok, test.texts, **at) is None
    for path in tmp_path.rglob("pass-*.npz"):  # a damaged entry (a field missing) is a miss, never an error
        with open(path, "wb") as fh:
            np.savez(fh, n=np.array(len(test)), rows=np.arange(len(test)))
    assert recall_pass(tmp_path, original, tok, test.texts, **at) is None
    for path in tmp_path.rglob("pass-*.npz"):  # ...and so is a file cut short
        path.write_bytes(path.read_bytes()[:40])
    assert recall_pass(tmp_path, original, tok, test.texts, **at) is None
