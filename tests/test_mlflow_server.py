"""apply against a REAL `mlflow server` over HTTP (sqlite backend, proxied artifacts), started here."""
# ruff: noqa: F811  (pytest fixtures imported from registry_helpers are re-bound as test arguments)

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from registry_helpers import FAST_STEU, MODEL, notes_frame, policies, trained_tiny  # noqa: F401

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin) if mlflow_bin.exists() else shutil.which("mlflow"), "server",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts")]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # ~7 s on an idle machine; this one is shared
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)  # the server and its worker processes, which we started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def test_apply_against_a_real_tracking_server(server, monkeypatch, tmp_path, trained_tiny, tiny_tokenizer,
                                              notes_frame, policies):
    from steuops.pipeline import apply
    from steuops.registry import Registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    registry = Registry(tmp_path / "unused-home")
    assert not registry.embedded and registry.tracking_uri == server
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
