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
from contextlib import contextmanager, suppress
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


def bento_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a test's BentoML server: no STEUOPS_* of the caller, its own BENTOML_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEUOPS_")}
    env.update({"BENTOML_HOME": str(folder / "bentoml"), "BENTOML_DO_NOT_TRACK": "True", **extra})
    return env


@contextmanager
def running_server(cmd: list[str], env: dict[str, str], port: int, log: Path, timeout: float = 120.0) -> Iterator[str]:
    """Start a server in its own process group, wait for /readyz, stop the whole group afterwards."""
    import signal

    import httpx

    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
