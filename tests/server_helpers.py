"""Start a real `mlflow server` on 127.0.0.1 for a test and stop it (with its workers) afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_mlflow_server(backend_uri: str, folder: Path, *, workers: int = 1,
                          timeout: float = 120) -> Iterator[str]:
    """`mlflow server` on `backend_uri`, proxying artifacts to folder/artifacts; yields its URL once /health
    answers (~7 s on an idle machine; the first start on an empty database runs MLflow's migrations)."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin) if mlflow_bin.exists() else shutil.which("mlflow"), "server",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", backend_uri, "--artifacts-destination", str(folder / "artifacts")]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log_path, timeout)
            yield url
        finally:
            _stop(proc)


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """End the server and its workers (the process group we started)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
