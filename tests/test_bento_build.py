"""The Bento as BentoML users know it: packed model, offline `bentoml build`, a serving image without the training stack.

One tiny exported classifier is packed into BentoML's model store, built into a Bento offline (no index, no
uv download), exported as a `.bento` archive, imported into a fresh BENTOML_HOME and served from there by a
real `bentoml serve` with an empty STEUOPS_HOME (no registry) and torch, Great Expectations, onnx, onnxscript
and mlflow made unimportable in every server process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import engine_data
import pytest
from absent import attempted, blocking
from engine_data import LABELS
from server_helpers import bento_env, free_port, running_server

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "great_expectations", "onnx", "onnxscript", "mlflow")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """An untrained tiny classifier, exported: scores do not matter here, only how the server behaves."""
    return engine_data.untrained_export(tmp_path_factory.mktemp("bento-export"), version="5", forgotten=["sepsis"])


def _offline_env(tmp_path: Path, home: Path, **extra: str) -> dict[str, str]:
    """No index, no hub, `uv` from this environment on PATH (BentoML downloads it otherwise)."""
    env = bento_env(tmp_path, BENTOML_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                      PIP_NO_INDEX="1", UV_OFFLINE="1", UV_NO_CACHE="1", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _pack(export_dir: Path, env: dict[str, str]) -> str:
    code = f"from steuops.serving.service import pack; print(pack({str(export_dir)!r}))"
    return _run([sys.executable, "-c", code], env).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(export_dir, tmp_path_factory):
    """(bento dir, model tag, build env): the export packed, then `bentoml build` with STEUOPS_BENTO_MODEL set."""
    tmp = tmp_path_factory.mktemp("build")
    env = _offline_env(tmp, tmp / "bentoml")
    tag = _pack(export_dir, env)
    assert _pack(export_dir, env) == tag  # packing the same export again reuses the entry
    _run([sys.executable, "-m", "bentoml", "build", str(ROOT)], {**env, "STEUOPS_BENTO_MODEL": tag})
    bentos = list((tmp / "bentoml" / "bentos" / "steuops-classifier").glob("*/bento.yaml"))
    assert len(bentos) == 1
    return bentos[0].parent, tag, env


def test_pack_tags_name_version_and_sha(export_dir, built):
    _bento, tag, env = built
    sha = json.loads((export_dir / "manifest.json").read_text())["files"]["model.onnx"]
    assert tag == f"steuops-dx:v5-{sha[:8]}"
    stored = Path(env["BENTOML_HOME"]) / "models" / "steuops-dx" / tag.split(":")[1]
    assert (stored / "model.onnx").is_file() and (stored / "tokenizer.json").is_file()


def test_bento_holds_the_service_the_model_and_no_training_stack(built):
    import yaml

    bento, tag, _env = built
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["entry_service"] == "steuops-classifier"
    assert [m["tag"] for s in info["services"] for m in s["models"]] == [tag]
    assert (bento / "src" / "steuops" / "serving" / "service.py").is_file()
    assert not (bento / "src" / "tests").exists() and not (bento / "src" / "bench").exists()
    reqs = [line.split(";")[0].strip() for line in (bento / "env" / "python" / "requirements.txt").read_text()
            .splitlines() if line.strip() and not line.startswith("#")]
    names = {_name(r) for r in reqs}
    assert {"bentoml", "onnxruntime-gpu", "transformers", "tokenizers", "numpy", "pydantic"} <= names
    assert not names & {"torch", "great-expectations", "great_expectations", "onnx", "onnxscript", "onnxruntime"}


def _name(requirement: str) -> str:
    for sep in "<>=!~[ ":
        requirement = requirement.split(sep)[0]
    return requirement.lower()


def test_exported_bento_serves_its_packed_model_without_registry_or_training_stack(built, tmp_path):
    """`bentoml export` -> `bentoml import` into a fresh home -> `bentoml serve`: what a container does."""
    import httpx

    bento, tag, build_env = built
    archive = tmp_path / "steuops.bento"
    _run([sys.executable, "-m", "bentoml", "export", f"steuops-classifier:{bento.name}", str(archive)], build_env)
    (tmp_path / "empty-home").mkdir()
    env = _offline_env(tmp_path, tmp_path / "fresh-bentoml", STEUOPS_HOME=str(tmp_path / "empty-home"),
                       STEUOPS_MODEL="clinical-dx", **blocking(tmp_path / "blocker", HEAVY, tmp_path / "imports.log"))
    _run([sys.executable, "-m", "bentoml", "import", str(archive)], env)
    port = free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", f"steuops-classifier:{bento.name}", "--host", "127.0.0.1",
           "--port", str(port)]
    with running_server(cmd, env, port, tmp_path / "server.log") as base, httpx.Client(base_url=base, timeout=30) as http:
        meta = http.get("/metadata").json()
        answer = http.post("/classify", json={"texts": ["lactate cultures", "bnp edema"]})
        docs = http.get("/docs.json").json()
    assert meta["source"] == {"mode": "bento", "tag": tag, "path": meta["source"]["path"]}
    assert Path(meta["source"]["path"]).is_relative_to(tmp_path / "fresh-bentoml")
    assert (meta["version"], meta["forgotten"]) == ("5", ["sepsis"])
    assert answer.status_code == 200 and len(answer.json()) == 2
    assert all(set(row["scores"]) == set(LABELS) - {"sepsis"} for row in answer.json())
    assert docs["info"]["version"] == "5" and "securitySchemes" not in docs["components"]
    tried = attempted(tmp_path / "imports.log")
    assert tried <= {"torch"}, tried  # only the optional GPU probe asks for torch, and copes with its absence
    assert not list((tmp_path / "empty-home").iterdir())  # no registry was created or read


def test_service_imports_and_serves_a_folder_without_the_training_stack(export_dir, tmp_path):
    """In one process: import the service, load a local export, classify, with the heavy packages unimportable."""
    code = ("from steuops.serving.service import load_model; m = load_model(); "
            "print(m.classify(['lactate'])[0]['labels'] is not None)")
    env = _offline_env(tmp_path, tmp_path / "bentoml", STEUOPS_ONNX_DIR=str(export_dir),
                       **blocking(tmp_path, HEAVY, tmp_path / "imports.log"))
    assert _run([sys.executable, "-c", code], env).strip().endswith("True")
    env["STEUOPS_TEST_BLOCK"] = ",".join((*HEAVY, "onnxruntime"))  # the hook itself works: this must fail
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "onnxruntime" in done.stderr


def _runs(dockerfile: Path) -> list[str]:
    """The RUN instructions of a Dockerfile, continuation lines joined, comments dropped."""
    text = "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#"))
    return [r.strip() for r in text.replace("\\\n", " ").split("\nRUN ")[1:]]


def test_serving_dockerfile_installs_the_serving_requirements_and_steuops_without_deps():
    """Read, not built (no Docker engine here): the serving image never installs the training stack."""
    import yaml

    installs = [part for run in _runs(ROOT / "Dockerfile") for part in run.split("&&") if "pip install" in part]
    assert any("-r requirements-serve.txt" in p for p in installs)
    assert any(p.split("pip install")[1].split() == ["--no-deps", "."] for p in installs)
    assert not any(p.split("pip install")[1].split() == ["."] for p in installs)  # that would pull torch
    assert all("torch" not in p and "great" not in p and "onnxscript" not in p for p in installs)
    reqs = {_name(line) for line in (ROOT / "requirements-serve.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert not reqs & {"torch", "great-expectations", "onnx", "onnxscript", "onnxruntime"}
    python = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]
    assert python == {"lock_packages": False, "requirements_txt": "./requirements-serve.txt"}
    apply_runs = " ".join(_runs(ROOT / "Dockerfile.apply"))
    assert "torch==" in apply_runs and "pip install ." in apply_runs  # the apply image has the whole stack
