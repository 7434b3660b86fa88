"""apply against a REAL `mlflow server` over HTTP (sqlite backend, proxied artifacts), started here."""

from __future__ import annotations

import pytest
from registry_helpers import FAST_STEU, MODEL

pytestmark = pytest.mark.slow


def test_apply_against_a_real_tracking_server(mlflow_server, monkeypatch, tmp_path, trained_tiny, tiny_tokenizer,
                                              notes_frame, policies):
    from steuops.pipeline import apply
    from steuops.registry import Registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    registry = Registry(tmp_path / "unused-home")
    assert not registry.embedded and registry.tracking_uri == mlflow_server
    registry.log_base_model(MODEL, trained_tiny, tiny_tokenizer, dataset=notes_frame)
    result = apply(MODEL, ["sepsis"], policy=policies["loose"], method_config=FAST_STEU, device="cpu",
                   export=False)
    assert (result.parent_version, result.new_version) == ("1", "2")
    assert result.cohort["source"] == f"logged dataset of {MODEL} v1"  # downloaded over HTTP
    fresh = Registry()  # a second client sees the same server state
    assert fresh.alias_version(MODEL, "production") == "2"
    ref = fresh.resolve(MODEL)
    tags = fresh.tags(ref)
    assert tags["steuops.parent_version"] == "1" and tags["steuops.gate"] == "passed"
    assert {"edit", "evaluation.json", "gate.json", "validation.json"} <= set(fresh.artifact_names(ref))
    assert fresh.load(ref).labels == result.evaluation["labels"]
    # Nothing was written to the embedded home: the server is the registry.
    assert not (tmp_path / "unused-home").exists()
