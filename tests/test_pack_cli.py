"""`steuops pack` and `steuops serve --packed`: a registered version's ONNX export into BentoML's model store, by CLI.

The store is real and lives in a temp BENTOML_HOME. BentoML fixes its home the first time a process uses the
store, so every command that touches the store runs as its own `python -m steuops` process; the checks made
before the store is touched (bad options, unknown model, no export) run in this process against the real app.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import engine_data
import httpx
import pytest
from engine_data import LABELS
from server_helpers import bento_env, free_port, running_server
from typer.testing import CliRunner

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> tuple[Path, str]:
    """A registry holding dx v1 (production, exported to ONNX) and dx v2 (no export); (home, v1's onnx sha256)."""
    from steuops.export import export_version
    from steuops.registry import Registry
    from steuops.tiny import classifier, wordpiece_tokenizer

    notes = engine_data.keyword_notes(40, seed=0)
    tok = wordpiece_tokenizer(notes.texts, vocab_size=120)
    home = tmp_path_factory.mktemp("pack-home")
    reg = Registry(home=home)
    base = reg.log_base_model("dx", classifier(LABELS, len(tok), seed=0, layers=1), tok)
    export_version(reg, base, check_texts=notes.texts[:4], max_length=16)
    reg.register("dx", classifier(LABELS, len(tok), seed=1, layers=1), tok, parent=base, tags={})
    return home, reg.tags(base)["steuops.onnx_sha256"]


def _steuops(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steuops", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_pack_help_and_bad_input_through_the_real_app(home, capsys, monkeypatch):
    from steuops.cli import app, main
    from steuops.errors import UsageError

    home_dir, _sha = home
    monkeypatch.setenv("COLUMNS", "200")
    shown = CliRunner().invoke(app, ["pack", "--help"])
    assert shown.exit_code == 0
    assert "steuops pack --model clinical-dx" in shown.output and "Exit codes:" in shown.output

    both = CliRunner().invoke(app, ["pack", "--model", "dx", "--alias", "production", "--version", "1"])
    assert isinstance(both.exception, UsageError)  # main() turns it into exit 2, as below

    h = ["--home", str(home_dir)]
    assert main(["pack", *h]) == 2
    assert "nothing to pack" in capsys.readouterr().err
    assert main(["pack", "--model", "dx", "--onnx-dir", str(home_dir), *h]) == 2
    assert "--onnx-dir and a registered model both given" in capsys.readouterr().err
    assert main(["pack", "--model", "nope", *h, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["result"]["type"] == "RegistryError"
    assert main(["pack", "--model", "dx", "--version", "2", *h]) == 2
    assert "has no ONNX export" in capsys.readouterr().err
    assert main(["pack", "--onnx-dir", str(home_dir), "--json"]) == 2  # not an export folder
    assert json.loads(capsys.readouterr().out)["result"]["type"] == "ConfigError"


def test_pack_prints_the_tag_and_packing_again_stores_nothing(home, tmp_path):
    from steuops.serving import cache_dir, verify_folder

    home_dir, sha = home
    env = bento_env(tmp_path)  # BENTOML_HOME=tmp_path/bentoml
    done = _steuops(["pack", "--model", "dx", "--home", str(home_dir)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    tag = done.stdout.strip()
    assert tag == f"steuops-dx:v1-{sha[:8]}"  # the tag alone on stdout: TAG=$(steuops pack ...)
    stored = tmp_path / "bentoml" / "models" / "steuops-dx" / tag.split(":")[1]
    assert verify_folder(stored, sha)

    again = _steuops(["pack", "--model", "dx", "--version", "1", "--home", str(home_dir), "--json"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    doc = json.loads(again.stdout)
    assert doc["ok"] and doc["command"] == "pack" and doc["result"] == {"tag": tag}
    folder = _steuops(["pack", "--onnx-dir", str(cache_dir(home_dir, "dx", "1"))], env)
    assert folder.returncode == 0 and folder.stdout.strip() == tag
    assert [p.name for p in stored.parent.iterdir() if p.is_dir()] == [tag.split(":")[1]]


@pytest.mark.slow
def test_serve_packed_serves_the_store_entry_and_refuses_a_missing_tag(home, tmp_path):
    """`steuops serve --packed TAG` with STEUOPS_MODEL naming a model that does not exist: the packed one wins."""
    home_dir, sha = home
    env = bento_env(tmp_path, STEUOPS_MODEL="nope", STEUOPS_HOME=str(tmp_path / "empty-home"))
    packed = _steuops(["pack", "--model", "dx", "--home", str(home_dir)], env)
    assert packed.returncode == 0, packed.stderr[-3000:]
    tag = packed.stdout.strip()

    missing = _steuops(["serve", "--packed", "steuops-dx:v9-00000000"], env)
    assert missing.returncode == 2 and "is not in the BentoML model store" in missing.stderr, missing.stderr[-2000:]

    port = free_port()
    cmd = [sys.executable, "-m", "steuops", "serve", "--packed", "steuops-dx", "--port", str(port)]  # latest
    with running_server(cmd, env, port, tmp_path / "serve.log") as base:
        meta = httpx.get(f"{base}/metadata", timeout=30).json()
        assert httpx.post(f"{base}/classify", json={"texts": ["edema"]}, timeout=30).status_code == 200
    assert meta["source"]["mode"] == "bento" and meta["source"]["tag"] == tag
    assert meta["version"] == "1" and meta["onnx_sha256"] == sha
