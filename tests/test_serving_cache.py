"""Serving cleans up after itself: registry ONNX files go to a verified cache under the steuops home.

A `serve` start used to leave its 219 MB ONNX download in the system temp folder, every time. Now the
files land in `$STEUOPS_HOME/cache/onnx/<model>/<version>/`, are checked against manifest.json and the
version's steuops.onnx_sha256 tag before each reuse, and a real `steuops serve` start and stop leaves
nothing in its (private) TMPDIR.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import engine_data
import httpx
import pytest
from engine_data import LABELS
from server_helpers import bento_env, free_port, running_server

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A registry holding dx v1 (production), exported to ONNX: what `steuops serve --model dx` serves."""
    from steuops.export import export_version
    from steuops.registry import Registry
    from steuops.tiny import classifier, wordpiece_tokenizer

    notes = engine_data.keyword_notes(40, seed=0)
    tok = wordpiece_tokenizer(notes.texts, vocab_size=120)
    model = classifier(LABELS, len(tok), seed=0, layers=1)
    home = tmp_path_factory.mktemp("cache-home")
    reg = Registry(home=home)
    export_version(reg, reg.log_base_model("dx", model, tok), check_texts=notes.texts[:4], max_length=16)
    return home


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A temp folder only this test uses, so that anything left in it was left by the code under test."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_download_goes_to_a_verified_cache_and_is_reused(home, private_tmp):
    import shutil

    from steuops.export import sha256_file
    from steuops.registry import Registry
    from steuops.serving import cache_dir, download, verify_folder

    shutil.rmtree(home / "cache", ignore_errors=True)
    tag = Registry(home=home).tags(Registry(home=home).resolve("dx"))["steuops.onnx_sha256"]
    folder, source = download("dx", alias="production", version=None, home=str(home))
    assert folder == cache_dir(home, "dx", "1") == home / "cache" / "onnx" / "dx" / "1"
    assert source["cache"] == "downloaded" and sha256_file(folder / "model.onnx") == tag
    first_mtime = (folder / "model.onnx").stat().st_mtime_ns

    again, source = download("dx", alias=None, version="1", home=str(home))
    assert again == folder and source["cache"] == "reused"
    assert (folder / "model.onnx").stat().st_mtime_ns == first_mtime  # not fetched a second time

    with open(folder / "model.opt.onnx", "ab") as fh:  # a damaged file is never served: fetched again
        fh.write(b"\0")
    _, source = download("dx", alias="production", version=None, home=str(home))
    assert source["cache"] == "downloaded" and verify_folder(folder, tag)
    assert not verify_folder(folder, "0" * 64)  # a tag that disagrees with the files fails the check

    assert sorted(p.name for p in folder.parent.iterdir()) == ["1"]  # no staging folders left beside it
    assert list(private_tmp.iterdir()) == []
    assert cache_dir(home, "team/dx", "2").parent.name.startswith("team_dx-")  # unsafe names stay one folder


@pytest.mark.slow
def test_serve_start_and_stop_leave_nothing_in_the_temp_folder(home, tmp_path):
    """Two real `steuops serve` starts: the first downloads into the cache, the second reuses it."""
    import shutil

    shutil.rmtree(home / "cache", ignore_errors=True)
    tmp = tmp_path / "server-tmp"
    tmp.mkdir()
    env = bento_env(tmp_path, TMPDIR=str(tmp))
    seen = []
    for start in range(2):
        port = free_port()
        cmd = [sys.executable, "-m", "steuops", "serve", "--model", "dx", "--home", str(home), "--port", str(port)]
        with running_server(cmd, env, port, tmp_path / f"serve-{start}.log") as base:
            meta = httpx.post(f"{base}/metadata", json={}, timeout=30).json()
            assert httpx.post(f"{base}/classify", json={"texts": ["edema"]}, timeout=30).status_code == 200
        seen.append(meta["source"]["cache"])
        assert Path(meta["source"]["registry"]) == home.resolve()
        assert sorted(p.name for p in tmp.iterdir()) == [], f"start {start} left files in TMPDIR"
    assert seen == ["downloaded", "reused"]
    assert (home / "cache" / "onnx" / "dx" / "1" / "model.onnx").is_file()


def test_pack_version_copies_the_registry_export_into_the_bento_model_store(home, tmp_path):
    """pack_version: models:/dx@production's onnx/ folder becomes `steuops-dx:v1-<sha8>` in BENTOML_HOME."""
    import json
    import subprocess

    from steuops.registry import Registry
    from steuops.serving import verify_folder

    reg = Registry(home=home)
    sha = reg.tags(reg.resolve("dx", alias="production"))["steuops.onnx_sha256"]
    env = bento_env(tmp_path, BENTOML_HOME=str(tmp_path / "bentoml"))
    code = f"from steuops.serving.service import pack_version; print(pack_version('dx', home={str(home)!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    tag = done.stdout.strip().splitlines()[-1]
    assert tag == f"steuops-dx:v1-{sha[:8]}"
    stored = tmp_path / "bentoml" / "models" / "steuops-dx" / tag.split(":")[1]
    assert verify_folder(stored, sha) and json.loads((stored / "manifest.json").read_text())["version"] == "1"
