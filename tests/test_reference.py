"""steuops.reference: the audit's retrained reference is found, trained once, cached, reused and never
registered; a registered retrain of the same parent and classes is preferred; no base encoder is exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from registry_helpers import MODEL, registry_snapshot, write_policy

from steuops import reference as references
from steuops.errors import ConfigError

LABELS = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation", "diabetic ketoacidosis"]
# A retrain small enough for a 2-core machine: one epoch of a tiny BERT on 240 short notes (~2 s).
RETRAIN = {"epochs": 1, "max_length": 32, "batch_size": 32, "lr": 3e-3}
# The audit's settings where a test checks what the pipeline does around the audit, not the audit itself
# (tests/test_audit.py does): one seed, few steps, the retain-only controls on (their audit-cache entries are
# checked). Keys the AuditConfig lacks are left out; max_length stays the version's (the confusion counts are
# taken at it).
QUICK_AUDIT = {"max_train": 120, "max_test": 60, "probe_steps": 30, "relearn_steps": [0, 3], "relearn_forget": 8,
               "relearn_retain": 8, "seeds": 1, "relearn_sizes": [4], "retain_relearn_steps": 1, "retain_relearn_notes": 8,
               "retain_relearn_controls": True}


@pytest.fixture()
def quick_audit(monkeypatch):
    """Every audit the pipeline runs (apply's, report's) runs with QUICK_AUDIT over its own settings."""
    import dataclasses

    from steuops import audit

    real = audit.audit_and_report
    known = {f.name for f in dataclasses.fields(audit.AuditConfig)}

    def quick(*args, config=None, **kwargs):
        given = config if isinstance(config, audit.AuditConfig) else audit.AuditConfig.from_dict(config)
        return real(*args, config=dataclasses.replace(given, **{k: v for k, v in QUICK_AUDIT.items() if k in known}),
                    **kwargs)

    monkeypatch.setattr(audit, "audit_and_report", quick)


@pytest.fixture()
def base(tmp_path, tiny_tokenizer) -> Path:
    """The "pretrained encoder" a retrain starts from: a tiny BERT saved with save_pretrained."""
    from steuops.tiny import classifier

    folder = tmp_path / "base-encoder"
    classifier(LABELS, vocab_size=len(tiny_tokenizer)).save_pretrained(folder)
    return folder


@pytest.fixture()
def fits(monkeypatch) -> list[int]:
    """Counts the trainings: every call of the registered `retrain` method's fit (which still runs)."""
    from steuops.methods.baselines import Retrain

    calls: list[int] = []
    real = Retrain.fit

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Retrain, "fit", counted)
    return calls


def _get(model, tokenizer, notes, home, forget=("sepsis",), **kw):
    kw.setdefault("model_name", MODEL)
    kw.setdefault("parent_version", "1")
    return references.get_or_train(model, tokenizer, list(forget), notes, home=home, device="cpu", **kw)


def test_trains_once_then_loads_the_cached_reference(tiny_model, tiny_tokenizer, tiny_notes, base, tmp_path, fits):
    import torch

    home = tmp_path / "home"
    config = {"base": str(base), **RETRAIN}
    first = _get(tiny_model, tiny_tokenizer, tiny_notes, home, config=config)
    assert first.source == "trained" and len(fits) == 1
    folder = Path(first.path)
    assert folder.parent == home / "references" / MODEL / "v1" and folder.name == first.key and len(first.key) == 64
    assert first.description == f"trained now, cached at {folder}"
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    key = json.loads((folder / "key.json").read_text())
    assert key["forget"] == ["sepsis"] and key["parent_version"] == "1" and key["model"] == MODEL
    assert key["config"]["base"] == str(base.resolve()) and key["config"]["epochs"] == 1
    assert len(key["train_sha256"]) == 64
    assert not any(text in json.dumps(key) for text in tiny_notes.texts), "key.json holds a hash, never note text"

    second = _get(tiny_model, tiny_tokenizer, tiny_notes, home, config=config)
    assert second.source == "cache" and len(fits) == 1, "the second call must not train"
    assert second.path == first.path and weights.stat().st_mtime_ns == stamp
    assert second.description.startswith("cache (")
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # the reference forgot the class: it was trained with the sepsis labels removed
    assert first.to_dict()["source"] == "trained" and "model" not in first.to_dict()


def test_the_key_follows_the_forgotten_set_the_config_and_the_notes(tiny_model, tiny_tokenizer, tiny_notes, base,
                                                                    tmp_path, fits):
    home = tmp_path / "home"
    config = {"base": str(base), **RETRAIN}
    one = _get(tiny_model, tiny_tokenizer, tiny_notes, home, config=config)
    two = _get(tiny_model, tiny_tokenizer, tiny_notes, home, forget=("sepsis", "pneumonia"), config=config)
    assert two.source == "trained" and two.key != one.key and len(fits) == 2
    swapped = _get(tiny_model, tiny_tokenizer, tiny_notes, home, forget=("pneumonia", "sepsis"), config=config)
    assert swapped.source == "cache" and swapped.key == two.key and len(fits) == 2, "the set is sorted in the key"
    data = references.notes_sha256(tiny_notes)
    key = references.cache_key_data(MODEL, "1", ["sepsis"], one.config, data)
    assert references.cache_key(key) == one.key
    assert references.cache_key({**key, "config": {**one.config, "epochs": 2}}) != one.key
    assert references.cache_key({**key, "parent_version": "2"}) != one.key
    assert references.notes_sha256(tiny_notes.subset(list(range(10)))) != data


def test_a_damaged_cache_entry_is_trained_again(tiny_model, tiny_tokenizer, tiny_notes, base, tmp_path, fits):
    home = tmp_path / "home"
    config = {"base": str(base), **RETRAIN}
    first = _get(tiny_model, tiny_tokenizer, tiny_notes, home, config=config)
    (Path(first.path) / "model.safetensors").write_bytes(b"not weights")
    again = _get(tiny_model, tiny_tokenizer, tiny_notes, home, config=config)
    assert again.source == "trained" and again.path == first.path and len(fits) == 2
    assert _get(tiny_model, tiny_tokenizer, tiny_notes, home, config=config).source == "cache"


def test_no_base_encoder_is_exit_2_naming_it_and_the_fixes(tiny_model, tiny_tokenizer, tiny_notes, tmp_path, fits):
    with pytest.raises(references.ReferenceUnavailable) as caught:
        _get(tiny_model, tiny_tokenizer, tiny_notes, tmp_path / "home")
    error = caught.value
    assert isinstance(error, ConfigError) and error.exit_code == 2
    assert "no base encoder" in error.message and "bert, 2 layers, hidden 32" in error.message
    assert "--reference N" in error.hint and '"base"' in error.hint and "pip install" in error.hint
    with pytest.raises(ConfigError, match="not a model directory"):
        _get(tiny_model, tiny_tokenizer, tiny_notes, tmp_path / "home", config={"base": str(tmp_path / "nowhere")})
    assert not fits and not (tmp_path / "home").exists()


def test_an_installed_encoder_of_the_same_shape_is_the_base():
    found = references.installed_encoders()
    if not found:
        pytest.skip("no known encoder package is installed")
    shape = json.loads((found[0] / "config.json").read_text())
    model = SimpleNamespace(config=SimpleNamespace(_name_or_path="", **{k: shape.get(k) for k in references._SHAPE}))
    assert references.find_base(model) == found[0].resolve()
    other = SimpleNamespace(config=SimpleNamespace(_name_or_path="", **{**{k: shape.get(k) for k in references._SHAPE},
                                                                       "hidden_size": 32}))
    with pytest.raises(references.ReferenceUnavailable, match="hidden 32"):
        references.find_base(other)


def test_registered_retrain_is_preferred_and_a_trained_one_is_never_registered(
        make_home, notes_frame, base, tmp_path, fits, quick_audit):
    """Against a real embedded registry: training a reference leaves the registry as it was; once a
    retrain of v1 forgetting sepsis is registered it is used as is (no training), and apply's audit
    uses it too."""
    from steuops import cohort as cohorts
    from steuops.pipeline import apply

    home, registry = make_home()
    parent = registry.load(registry.resolve(MODEL, version="1"))
    train = cohorts.to_notes(notes_frame[notes_frame["split"] == "train"].reset_index(drop=True))
    config = {"base": str(base), **RETRAIN}
    before = registry_snapshot(registry)
    trained = _get(parent.model, parent.tokenizer, train, home, registry=registry, config=config)
    assert trained.source == "trained" and len(fits) == 1
    assert registry_snapshot(registry) == before, "a trained reference is never registered"
    assert [v.version for v in registry.versions(MODEL)] == ["1"]
    assert Path(trained.path).is_relative_to(home / "references")

    reference_policy = write_policy(tmp_path / "reference.yaml", params_fraction_max=1.0, on_pass=None)
    made = apply(MODEL, ["sepsis"], home=home, version="1", method="retrain", device="cpu", export=False,
                 method_config={"base": str(base), **RETRAIN}, policy=reference_policy)
    assert made.new_version == "2" and len(fits) == 2
    found = _get(parent.model, parent.tokenizer, train, home, registry=registry, config=config)
    assert found.source == "registered" and found.version == "2" and found.description == "registered v2"
    assert len(fits) == 2, "a registered retrain is used, not trained again"
    # the version being audited is never its own reference; another forget set has no registered one
    assert _get(parent.model, parent.tokenizer, train, home, registry=registry, config=config,
                exclude_version="2").source == "cache"
    assert references.registered(registry.versions(MODEL), "1", ["pneumonia"]) is None
    # a retrain registered on the lineage records its base: found without being told
    assert references.retrain_config(parent.model, versions=registry.versions(MODEL), parent_version="1")["base"] \
        == str(base.resolve())

    # apply's audit (run when the policy sets audit limits) reads its figures next to the same reference
    audited = tmp_path / "audited.yaml"
    audited.write_text(write_policy(tmp_path / "loose.yaml", on_pass=None).read_text()
                       + "audit:\n  relearn_f1_max: 1.0\n")
    result = apply(MODEL, ["sepsis"], home=home, version="1", policy=audited, device="cpu", export=False,
                   method_config={"k": 16, "epochs": 1, "max_length": 64, "batch_size": 32})
    assert result.audit["reference"]["source"] == "registered" and result.audit["reference"]["version"] == "2"
    assert result.evaluation["audit"]["probe_f1"]["reference"] is not None
    logged = registry.read_json_artifact(registry.resolve(MODEL, version=result.new_version), "audit.json")
    assert logged["reference_source"]["description"] == "registered v2"
    assert "registered v2" in registry.read_json_artifact(
        registry.resolve(MODEL, version=result.new_version), "report.json")["verdict"]
    assert len(fits) == 2
