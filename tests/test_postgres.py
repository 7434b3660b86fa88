"""A registry that outgrows one machine: `mlflow server` on PostgreSQL 15 with MLflow's artifact proxy
(--artifacts-destination), started here from the PostgreSQL binaries. Through it: apply (with the ONNX
export), promote, serve the export, roll back, and ten simultaneous promotions with one winner each."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from race_helpers import _race
from registry_helpers import FAST_STEU, MODEL
from server_helpers import free_port, running_mlflow_server

pytestmark = pytest.mark.slow

PG_BIN = Path(os.environ.get("STEUOPS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # initdb refuses root: as root, the cluster belongs to (and runs as) this user
RACE_ROUNDS = 10


def _as_cluster_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _pg(tool: str, *args: str) -> None:
    subprocess.run(_as_cluster_owner([str(PG_BIN / tool), *args]), check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1:<free port> (socket in its own temp folder) with an
    empty database `mlflow`; yields its SQLAlchemy URL and removes the cluster afterwards."""
    if not (PG_BIN / "initdb").is_file() or not (PG_BIN / "pg_ctl").is_file():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="steuops-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
    data, port = root / "data", free_port()
    try:
        _pg("initdb", "-D", str(data), "-U", "steuops", "--auth=trust", "-E", "UTF8", "--no-sync")
        _pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(root / "postgres.log"), "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100")
        _pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "steuops", "mlflow")
        yield f"postgresql+psycopg2://steuops@127.0.0.1:{port}/mlflow"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        if (data / "postmaster.pid").exists():
            _pg("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_mlflow_server(postgres_url, tmp_path_factory) -> Iterator[str]:
    """`mlflow server` (2 workers) on that database, proxying artifacts to a local folder; yields its URL."""
    with running_mlflow_server(postgres_url, tmp_path_factory.mktemp("pg-mlflow"), workers=2, timeout=180) as url:
        yield url


def test_apply_promote_serve_rollback_on_postgres(pg_mlflow_server, postgres_url, monkeypatch, tmp_path,
                                                  trained_tiny, tiny_tokenizer, notes_frame, policies):
    from steuops.pipeline import apply, promote, rollback
    from steuops.registry import Registry
    from steuops.serving import ServedModel, download

    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg_mlflow_server)
    registry = Registry(tmp_path / "unused-home")
    registry.log_base_model(MODEL, trained_tiny, tiny_tokenizer, dataset=notes_frame)
    result = apply(MODEL, ["sepsis"], policy=policies["manual"], method_config=FAST_STEU, device="cpu",
                   export=True)  # a candidate with its ONNX export; the manual policy leaves promotion to us
    assert (result.new_version, result.promoted) == ("2", None) and result.export["onnx_sha256"]
    assert registry.alias_version(MODEL, "candidate") == "2"

    promoted = promote(MODEL, "2", policy=policies["loose"])
    assert promoted.to_dict()["promoted"] == {"alias": "production", "version": "2", "previous": "1"}
    assert registry.alias_version(MODEL, "production") == "2" and registry.alias_version(MODEL, "candidate") is None

    folder, source = download(MODEL, alias="production", version=None, home=str(tmp_path / "serve-home"))
    assert source["version"] == "2" and source["cache"] == "downloaded"
    served = ServedModel(folder, device="cpu")
    predictions = served.classify(list(notes_frame["text"][:4]))
    assert len(predictions) == 4 and all("sepsis" not in p["scores"] for p in predictions)

    back = rollback(MODEL, reason="retain F1 dropped in production").to_dict()
    assert (back["from"], back["to"], back["reinstated_classes"]) == ("2", "1", ["sepsis"])
    assert Registry(tmp_path / "another").alias_version(MODEL, "production") == "1"  # a second client agrees
    _assert_rows_in_postgres(postgres_url)
    assert not (tmp_path / "unused-home").exists()  # the server is the registry


def _assert_rows_in_postgres(url: str) -> None:
    """The state lives in PostgreSQL, not in a sqlite file the server made on the side."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            aliases = dict(con.execute(sqlalchemy.text(
                "SELECT alias, version FROM registered_model_aliases WHERE name = :name"), {"name": MODEL}).all())
    finally:
        engine.dispose()
    assert aliases == {"production": 1}


def test_ten_simultaneous_promotions_on_postgres_have_one_winner_each(pg_mlflow_server, tmp_path):
    winners = _race(tmp_path / "unused-home", pg_mlflow_server, rounds=RACE_ROUNDS)
    assert len(winners) == RACE_ROUNDS
    print(f"postgres races: {len(winners)} rounds, one winner each (winners by index: {winners})")
