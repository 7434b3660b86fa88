"""steuops.registry against a real embedded MLflow registry (sqlite + local artifacts)."""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest

from steuops.errors import ConflictError, RegistryError

LABELS = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation", "diabetic ketoacidosis"]


@pytest.fixture(scope="module")
def frame(tiny_notes):
    from steuops.demo.notes import to_frame

    return to_frame(tiny_notes)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_tokenizer, frame):
    """A home with clinical-dx v1 @production, logged with its notes as a dataset."""
    from steuops.registry import Registry
    from steuops.tiny import classifier

    home = tmp_path_factory.mktemp("reg-home")
    registry = Registry(home)
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer))
    ref = registry.log_base_model("clinical-dx", model, tiny_tokenizer, dataset=frame, params={"epochs": 1})
    return registry, ref, model


def _logits(model, tokenizer, texts):
    from steuops.modeling import logits

    return logits(model, tokenizer, texts, max_length=64)


def test_embedded_layout_and_round_trip(base, tiny_tokenizer, tiny_notes):
    registry, ref, model = base
    assert registry.embedded and registry.tracking_uri.startswith("sqlite:///")
    assert (registry.home / "mlflow.db").is_file()
    assert (registry.home / "artifacts").is_dir()  # artifacts stay inside the home
    assert registry.resolve("clinical-dx") == ref
    assert ref.version == "1" and ref.alias == "production"
    loaded = registry.load(ref)
    assert loaded.labels == LABELS
    assert loaded.run_id and loaded.tags == {}
    texts = tiny_notes.texts[:8]
    np.testing.assert_allclose(_logits(loaded.model, loaded.tokenizer, texts), _logits(model, tiny_tokenizer, texts),
                               atol=1e-6)


def test_logged_dataset_round_trip(base, frame):
    registry, ref, _ = base
    got = registry.logged_dataset(ref)
    assert got is not None
    assert list(got["note_id"]) == list(frame["note_id"])
    assert [list(x) for x in got["labels"]] == [list(x) for x in frame["labels"]]


def test_register_new_version_tags_artifacts_alias(base, tmp_path):
    from steuops import __version__, lineage

    registry, ref, model = base
    loaded = registry.load(ref)
    (tmp_path / "edit").mkdir()
    (tmp_path / "edit" / "edit.json").write_text('{"k": 3}')
    (tmp_path / "evaluation.json").write_text('{"forget_f1": 0.0}')
    tags = {"steuops.forgotten": "sepsis", "steuops.method": "steu", "steuops.gate": "rejected"}
    new = registry.register("clinical-dx", loaded.model, loaded.tokenizer, parent=ref, tags=tags,
                            artifacts={"edit": tmp_path / "edit", "evaluation.json": tmp_path / "evaluation.json",
                                       "renamed.json": tmp_path / "evaluation.json"},
                            params={"k": 3})
    assert new.alias == "candidate" and int(new.version) == int(ref.version) + 1
    got = registry.tags(new)
    assert got[lineage.PARENT] == ref.version and got[lineage.GATE] == "rejected" and got["gate"] == "rejected"
    assert got["steuops.version"] == __version__ and got["steuops.forgotten"] == "sepsis"
    assert registry.alias_version("clinical-dx", "candidate") == new.version
    assert registry.alias_version("clinical-dx", "production") == ref.version  # untouched
    assert set(registry.artifact_names(new)) >= {"edit", "evaluation.json", "renamed.json"}
    assert registry.read_json_artifact(new, "renamed.json") == {"forget_f1": 0.0}
    assert (registry.download_artifact(new, "edit") / "edit.json").is_file()
    # The dataset of the parent is found by following steuops.parent_version.
    assert registry.logged_dataset(new) is not None
    rows = registry.versions("clinical-dx")
    by_version = {r.version: r for r in rows}
    assert by_version[new.version].parent == ref.version
    assert by_version[new.version].forgotten == ["sepsis"]
    assert by_version[new.version].gate == "rejected"
    assert "production" in by_version[ref.version].aliases
    # Stages are never used.
    mv = registry._client.get_model_version("clinical-dx", new.version)
    assert mv.current_stage in (None, "None")


def test_resolve_errors_name_what_exists(base):
    registry, ref, _ = base
    with pytest.raises(RegistryError) as exc:
        registry.resolve("no-such-model")
    assert "no-such-model" in str(exc.value) and "clinical-dx" in exc.value.hint
    with pytest.raises(RegistryError) as exc:
        registry.resolve("clinical-dx", alias="staging")
    assert "'staging'" in str(exc.value) and "production -> v1" in exc.value.hint
    with pytest.raises(RegistryError) as exc:
        registry.resolve("clinical-dx", version=99)
    assert "no version 99" in str(exc.value) and "1" in exc.value.hint
    assert exc.value.exit_code == 2
    assert registry.resolve("clinical-dx", version=1).version == "1"


def test_move_alias_is_compare_and_set(base):
    registry, ref, _ = base
    registry.move_alias("clinical-dx", "staging", ref.version, expected_version=None)
    assert registry.alias_version("clinical-dx", "staging") == ref.version
    with pytest.raises(ConflictError) as exc:
        registry.move_alias("clinical-dx", "staging", "2", expected_version="5")
    assert "'staging'" in str(exc.value) and "v1" in str(exc.value) and exc.value.exit_code == 2
    assert registry.alias_version("clinical-dx", "staging") == ref.version
    assert registry.clear_alias("clinical-dx", "staging", ref.version) is True
    assert registry.alias_version("clinical-dx", "staging") is None


def test_user_logged_models_multi_and_single_label(tmp_path, tiny_tokenizer, tiny_notes, monkeypatch):
    """Models logged with plain mlflow.transformers.log_model, as a user would, load as components."""
    import mlflow
    from mlflow import MlflowClient

    from steuops.modeling import is_multi_label
    from steuops.registry import Registry
    from steuops.tiny import classifier

    monkeypatch.chdir(tmp_path)  # a user's default experiment puts artifacts in ./mlruns
    registry = Registry(tmp_path / "home")
    registry.home.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored to "unset" after the test
    mlflow.set_tracking_uri(registry.tracking_uri)  # what the user's own script does (it exports the variable)
    os.environ.pop("MLFLOW_TRACKING_URI")  # steuops in another process: no server configured
    for name, multi in (("dx-multi", True), ("dx-single", False)):
        model = classifier(["flu", "cold", "asthma"], vocab_size=len(tiny_tokenizer), multi_label=multi, seed=3)
        with mlflow.start_run():
            mlflow.transformers.log_model({"model": model, "tokenizer": tiny_tokenizer}, name="model",
                                          task="text-classification", registered_model_name=name,
                                          pip_requirements=["transformers", "torch"])
        MlflowClient().set_registered_model_alias(name, "production", "1")
        loaded = registry.load(registry.resolve(name))
        assert loaded.labels == ["flu", "cold", "asthma"]
        assert is_multi_label(loaded.model) is multi
        np.testing.assert_allclose(_logits(loaded.model, loaded.tokenizer, tiny_notes.texts[:4]),
                                   _logits(model, tiny_tokenizer, tiny_notes.texts[:4]), atol=1e-6)
        assert registry.logged_dataset(loaded.ref) is None  # no log_input: apply must ask for --cohort


def test_missing_home_is_an_error_and_creates_nothing(tmp_path):
    from steuops.registry import Registry

    home = tmp_path / "never-set-up"
    with pytest.raises(RegistryError) as exc:
        Registry(home).resolve("clinical-dx")
    assert "steuops demo" in exc.value.hint
    assert not (home / "mlflow.db").exists()


def test_unreachable_server_fails_fast_with_one_line(monkeypatch):
    from steuops.registry import Registry

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    with pytest.raises(RegistryError) as exc:
        Registry().resolve("clinical-dx")
    assert time.perf_counter() - started < 10
    assert str(exc.value) == f"cannot reach the MLflow server at http://127.0.0.1:{port}"
    assert "\n" not in str(exc.value) and exc.value.exit_code == 2


def test_home_from_environment(monkeypatch, tmp_path):
    from steuops.registry import Registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("STEUOPS_HOME", str(tmp_path / "h"))
    registry = Registry()
    assert registry.home == tmp_path / "h"
    assert registry.tracking_uri == f"sqlite:///{(tmp_path / 'h' / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert Registry(tmp_path).tracking_uri == "http://example.invalid:5000" and not Registry(tmp_path).embedded


def test_metric_keys_are_names_mlflow_accepts():
    from mlflow.utils.validation import _validate_metric_name

    from steuops.registry import metric_key

    assert metric_key("f1_after", "heart failure") == "f1_after.heart_failure"
    assert metric_key("f1_after", "copd/asthma: (severe)") == "f1_after.copd_asthma_severe"
    assert metric_key("seconds", "..") == "seconds._"
    for name in ("f1_after.heart_failure", "f1_after.copd_asthma_severe", "seconds._", metric_key("a", "é ü/../x")):
        _validate_metric_name(name)  # raises on a name a server would refuse


def test_cohort_dataset_input_carries_digest_counts_and_schema_never_text(base, frame, tmp_path):
    """Register with metrics, a cohort summary and a description: the run holds all three, the dataset
    entity holds no note text (a marker string in every note), and the parent's notes stay the cohort source."""
    from steuops.registry import COHORT_SOURCE_TYPE, CohortSummary

    registry, ref, _ = base
    loaded = registry.load(ref)
    marked = frame.assign(text=frame["text"] + " ZEBRA-MARKER-7731")
    summary = CohortSummary.from_frame(marked, "ab" * 32, {"rows": len(marked), "forget_rows": 12, "source": "x.csv"})
    assert summary.columns["labels"] == "array<string>" and summary.columns["text"] == "string"
    assert summary.counts == {"rows": len(marked), "forget_rows": 12}
    new = registry.register("clinical-dx", loaded.model, loaded.tokenizer, parent=ref, tags={}, alias=None,
                            metrics={"f1_after.heart failure": 0.5, "seconds.unlearn": 1.25}, cohort=summary,
                            description="Forgets sepsis from clinical-dx v1")
    run = registry._client.get_run(registry.run_id(new))
    assert run.data.metrics == {"f1_after.heart_failure": 0.5, "seconds.unlearn": 1.25}
    (item,) = run.inputs.dataset_inputs
    dataset = item.dataset
    assert dataset.digest == "ab" * 18 and dataset.source_type == COHORT_SOURCE_TYPE
    assert json.loads(dataset.profile) == summary.counts
    assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == list(marked.columns)
    assert {t.key: t.value for t in item.tags}["mlflow.data.context"] == "unlearning"
    entity = json.dumps([dataset.name, dataset.digest, dataset.source, dataset.schema, dataset.profile])
    assert "ZEBRA" not in entity and not any(t[:20] in entity for t in frame["text"])
    assert registry._model_version(new).description == "Forgets sepsis from clinical-dx v1"
    assert registry.logged_dataset(new) is not None  # the digest-only input is skipped; the parent's notes load


def test_clear_alias_only_when_it_names_that_version(base):
    registry, ref, _ = base
    registry.set_alias("clinical-dx", "scratch", ref.version)
    assert registry.clear_alias("clinical-dx", "scratch", "99") is False
    assert registry.alias_version("clinical-dx", "scratch") == ref.version
    assert registry.clear_alias("clinical-dx", "scratch", ref.version) is True
    assert registry.alias_version("clinical-dx", "scratch") is None
    assert registry.clear_alias("clinical-dx", "scratch", ref.version) is False
