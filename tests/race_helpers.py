"""Two processes that compare-and-set the same alias at the same instant, round after round, against
any registry (embedded sqlite, a real `mlflow server` on sqlite or PostgreSQL). Used by
test_promotion_race.py and test_postgres.py.

The versions are bare registry entries (no model files): the race is about the alias, and the lock
(a registered model that exists only while held) is the same whatever the versions carry.
"""

from __future__ import annotations

import multiprocessing as mp
import os

MODEL = "race-dx"
ROUNDS = 20


def _racer(home: str, uri: str | None, index: int, rounds: int, barrier, results) -> None:
    """One contender: every round, wait for the start signal, then move production 1 -> its version."""
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    from steuops.errors import ConflictError
    from steuops.registry import Registry

    registry = Registry(home)
    registry.alias_version(MODEL, "production")  # connect before the races start
    for round_no in range(rounds):
        barrier.wait()
        try:
            registry.move_alias(MODEL, "production", str(2 + index), expected_version="1")
            results.put((round_no, index, 0))
        except ConflictError as exc:
            results.put((round_no, index, exc.exit_code))
        barrier.wait()


def _setup(home, uri: str | None):
    from mlflow import MlflowClient

    from steuops.registry import Registry

    registry = Registry(home, tracking_uri=uri)
    client = registry._client  # the store steuops uses; bare versions need no model files
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source="s3://steuops-test/bare-version")  # never read
    assert isinstance(client, MlflowClient)
    return registry


def _race(home, uri: str | None, rounds: int = ROUNDS) -> list[int]:
    """Race two processes `rounds` times; asserts exactly one winner and one exit-2 loser per round.
    Returns the winner's index per round."""
    registry = _setup(home, uri)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    racers = [ctx.Process(target=_racer, args=(str(home), uri, i, rounds, barrier, results)) for i in range(2)]
    for proc in racers:
        proc.start()
    outcome = []
    try:
        for _ in range(rounds):
            registry.set_alias(MODEL, "production", "1")
            barrier.wait(timeout=120)  # go
            barrier.wait(timeout=120)  # both done
            got = sorted(results.get(timeout=30)[1:] for _ in range(2))
            winners = [index for index, code in got if code == 0]
            assert len(winners) == 1, f"round {len(outcome)}: {got}"
            assert [code for _, code in got if code != 0] == [2]
            assert registry.alias_version(MODEL, "production") == str(2 + winners[0])
            outcome.append(winners[0])
    finally:
        for proc in racers:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert not [n for n in _all_names(registry) if ".steuops-lock." in n], "a lock was left behind"
    return outcome


def _all_names(registry) -> list[str]:
    return [m.name for m in registry._client.search_registered_models(max_results=1000)]
