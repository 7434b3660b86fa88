"""Promotion is exactly-once: two processes that compare-and-set the same alias at the same instant,
20 rounds, against the embedded sqlite registry and against a real `mlflow server` over HTTP
(the race itself is in race_helpers.py; test_postgres.py runs it on PostgreSQL).
"""

from __future__ import annotations

import time

import pytest
from race_helpers import MODEL, ROUNDS, _all_names, _race, _setup


@pytest.mark.slow
def test_twenty_simultaneous_promotions_on_sqlite_have_one_winner_each(tmp_path):
    winners = _race(tmp_path / "home", None)
    assert len(winners) == ROUNDS


@pytest.mark.slow
def test_twenty_simultaneous_promotions_on_a_real_server_have_one_winner_each(tmp_path, mlflow_server):
    winners = _race(tmp_path / "unused-home", mlflow_server)
    assert len(winners) == ROUNDS


def test_a_crashed_holder_does_not_wedge_the_lock(tmp_path, monkeypatch):
    """A lock whose holder died is broken once it expires; a live one is waited for, then refused."""
    from steuops import lineage
    from steuops import registry as reg
    from steuops.errors import ConflictError

    registry = _setup(tmp_path / "home", None)
    registry.set_alias(MODEL, "production", "1")
    lock = reg.lock_name(MODEL, "production")
    registry._client.create_registered_model(lock, tags={lineage.LOCK_OWNER: "dead:1:x",
                                                         lineage.LOCK_EXPIRES: f"{time.time() + 60:.3f}"})
    with pytest.raises(ConflictError, match="held the 'production' lock"), \
            registry.alias_lock(MODEL, "production", wait_s=0.5):
        pass
    assert registry.alias_version(MODEL, "production") == "1"
    registry._client.set_registered_model_tag(lock, lineage.LOCK_EXPIRES, f"{time.time() - 1:.3f}")
    registry.move_alias(MODEL, "production", "2", expected_version="1")
    assert registry.alias_version(MODEL, "production") == "2"
    assert lock not in _all_names(registry)
    assert MODEL in registry.model_names() and lock not in registry.model_names()


def test_a_create_answered_with_not_found_is_a_lost_round_not_an_error(tmp_path, monkeypatch):
    """A server can answer a lock create with RESOURCE_DOES_NOT_EXIST when the lock vanished under it: the owner tag
    decides, so this round is lost (no lock, no crash) and the next one takes it."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from steuops import registry as reg

    registry = _setup(tmp_path / "home", None)
    lock = reg.lock_name(MODEL, "production")
    create = registry._client.create_registered_model
    answers = iter([MlflowException("Registered Model not found", error_code=RESOURCE_DOES_NOT_EXIST)])

    def flaky(*args, **kwargs):
        error = next(answers, None)
        if error is not None:
            raise error
        return create(*args, **kwargs)

    monkeypatch.setattr(registry._client, "create_registered_model", flaky)
    assert registry._try_lock(lock, "me:1:a") is False and lock not in _all_names(registry)
    assert registry._try_lock(lock, "me:1:a") is True
    registry._unlock(lock, "me:1:a")
    assert lock not in _all_names(registry)
