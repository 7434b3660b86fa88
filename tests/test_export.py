"""ONNX export, parity, ORT optimisation and export_version on tiny models (real exporters, real ORT)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steuops.demo.notes import CLASSES as LABELS

pytestmark = pytest.mark.filterwarnings("ignore")


def _texts(notes, n=24):
    return list(notes.texts[-n:])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer):
    """(arch -> (model, onnx path)) for BERT and DistilBERT, exported once per module."""
    from steuops.export import export_onnx
    from steuops.tiny import classifier

    out = {}
    for arch in ("bert", "distilbert"):
        model = classifier(LABELS, vocab_size=len(tiny_tokenizer), arch=arch, seed=3)
        out[arch] = (model, export_onnx(model, tiny_tokenizer, tmp_path_factory.mktemp(f"onnx-{arch}"), max_length=64))
    return out


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_export_is_one_file_with_dynamic_axes(exported, arch, tiny_tokenizer):
    import onnx
    import torch

    from steuops.export import exporter_of, session

    model, path = exported[arch]
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no .onnx.data beside it
    proto = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert exporter_of(path) == "torchscript"
    names = [i.name for i in proto.graph.input]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert ("token_type_ids" in names) == (arch == "bert")
    sess = session(path)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    gen = torch.Generator().manual_seed(1)
    for batch, length in ((1, 7), (5, 33)):
        ids = torch.randint(5, len(tiny_tokenizer), (batch, length), generator=gen)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[-1, length // 3 :] = 0  # padding must be honoured, not just shape-compatible
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros((batch, length), np.int64)
        got = sess.run(["logits"], feed)[0]
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        assert got.shape == (batch, len(LABELS))
        np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_parity_report_on_held_out_notes(exported, arch, tiny_tokenizer, tiny_notes):
    from steuops.export import check_parity

    model, path = exported[arch]
    report = check_parity(model, tiny_tokenizer, path, _texts(tiny_notes), max_length=64)
    assert report.passed and report.mismatches == []
    assert report.n_texts == 24 and report.label_agreement == 1.0
    assert report.max_abs_diff < 1e-4
    json.dumps(report.to_dict())


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_optimizer_fuses_attention_and_keeps_parity(exported, arch, tiny_tokenizer, tiny_notes, tmp_path):
    from steuops.export import FP16_ATOL, OPTIMIZED_ATOL, check_parity, heads_and_hidden, optimize, session

    model, path = exported[arch]
    heads, hidden = heads_and_hidden(model)
    result = optimize(path, num_heads=heads, hidden_size=hidden, out_dir=tmp_path)
    layers = model.config.num_hidden_layers if arch == "bert" else model.config.n_layers
    assert result.fused_ops["Attention"] + result.fused_ops["MultiHeadAttention"] == layers
    assert result.fused_ops["SkipLayerNormalization"] >= layers
    texts = _texts(tiny_notes)
    opt = check_parity(model, tiny_tokenizer, result.optimized, texts, atol=OPTIMIZED_ATOL, max_length=64)
    assert opt.passed, opt.failures()
    assert result.fp16 is not None, result.fp16_error
    try:
        sess = session(result.fp16)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"ONNX Runtime cannot run the fp16 model on CPU: {exc}")
    half = check_parity(model, tiny_tokenizer, result.fp16, texts, atol=FP16_ATOL, max_length=64, sess=sess)
    assert half.passed, half.failures()
    assert sess.get_inputs()[0].type == "tensor(int64)" and sess.get_outputs()[0].type == "tensor(float)"


def test_parity_failure_lists_every_mismatching_text(exported, tiny_tokenizer, tiny_notes, tmp_path):
    """Perturb one token's embedding row in the ONNX file: exactly the texts containing it must be reported."""
    import onnx
    from onnx import numpy_helper

    from steuops.errors import ExportParityError
    from steuops.export import check_parity, require_parity

    model, path = exported["bert"]
    texts = _texts(tiny_notes, 40)
    enc = tiny_tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    counts = {}
    for ids in enc:
        for t in set(ids):
            counts[t] = counts.get(t, 0) + 1
    # a token in several but not all texts, so the right answer is a proper subset
    token = next(t for t, c in sorted(counts.items(), key=lambda kv: kv[1]) if 3 <= c <= len(texts) - 3 and t > 4)
    expected = [i for i, ids in enumerate(enc) if token in ids]

    proto = onnx.load(str(path))
    emb = next(t for t in proto.graph.initializer if "word_embeddings" in t.name)
    rows = numpy_helper.to_array(emb).copy()
    # a new direction, not a constant shift (LayerNorm would remove that)
    rows[token] = np.random.default_rng(0).normal(size=rows.shape[1]).astype(rows.dtype)
    emb.CopyFrom(numpy_helper.from_array(rows, emb.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))

    # a random-init tiny BERT's logits move only ~1e-5 for one token, untouched texts by ~1e-8
    report = check_parity(model, tiny_tokenizer, bad, texts, max_length=64, atol=1e-6)
    assert not report.passed
    assert [m["index"] for m in report.mismatches] == expected
    with pytest.raises(ExportParityError) as info:
        require_parity(report, "bad.onnx")
    assert len(info.value.failures) == len(expected) >= 3
    assert f"{len(expected)} of {len(texts)} texts" in info.value.message


@pytest.mark.slow
def test_export_version_logs_artifacts_tags_and_lineage(tmp_path, tiny_tokenizer, tiny_notes):
    from steuops.export import export_version, sha256_file
    from steuops.registry import Registry
    from steuops.tiny import classifier

    reg = Registry(home=tmp_path / "home")
    base = reg.log_base_model("dx", classifier(LABELS, len(tiny_tokenizer), seed=5), tiny_tokenizer)
    child_model = classifier(LABELS, len(tiny_tokenizer), seed=6)
    child = reg.register("dx", child_model, tiny_tokenizer, parent=base,
                         tags={"steuops.forgotten": "sepsis", "steuops.method": "steu"})

    result = export_version(reg, child, out_dir=tmp_path / "out", check_texts=_texts(tiny_notes, 16), max_length=64)
    doc = result.to_dict()
    json.dumps(doc)
    assert doc["forgotten"] == ["sepsis"] and doc["exporter"] == "torchscript"
    assert doc["parity"]["fp32"]["passed"] and doc["parity"]["optimized"]["passed"]

    tags = reg.tags(child)
    assert tags["steuops.onnx_sha256"] == sha256_file(tmp_path / "out" / "model.onnx")
    names = reg.artifact_names(child, "onnx")
    for f in ("model.onnx", "model.opt.onnx", "labels.json", "manifest.json", "tokenizer.json"):
        assert f"onnx/{f}" in names

    got = reg.download_artifact(child, "onnx", tmp_path / "dl")
    manifest = json.loads((got / "manifest.json").read_text())
    assert manifest["fixed_length"] is None  # the graph runs at any length
    labels = json.loads((got / "labels.json").read_text())
    assert labels["forgotten"] == ["sepsis"] and labels["labels"] == LABELS and labels["multi_label"] is True
    assert [step["version"] for step in manifest["lineage"]] == [child.version, base.version]
    for name, sha in manifest["files"].items():  # the manifest describes the downloaded bytes
        assert sha256_file(got / name) == sha


@pytest.mark.slow
def test_cli_export_and_serve_preflight(tmp_path, tiny_tokenizer, capsys):
    from steuops.cli import main
    from steuops.registry import Registry
    from steuops.tiny import classifier

    home = tmp_path / "home"
    reg = Registry(home=home)
    base = reg.log_base_model("dx", classifier(LABELS, len(tiny_tokenizer), seed=8), tiny_tokenizer)
    unexported = reg.register("dx", classifier(LABELS, len(tiny_tokenizer), seed=9), tiny_tokenizer, parent=base,
                              tags={})
    capsys.readouterr()

    assert main(["export", "--model", "dx", "--home", str(home), "--max-length", "64", "--json"]) == 0
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["ok"] and envelope["command"] == "export"
    assert envelope["result"]["version"] == base.version and envelope["result"]["out_dir"] is None
    assert reg.tags(base)["steuops.onnx_sha256"] == envelope["result"]["onnx_sha256"]

    assert main(["export", "--model", "nope", "--home", str(home), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["result"]["type"] == "RegistryError"
    # serve checks before starting a server: a version without an ONNX export is a usage error
    assert main(["serve", "--model", "dx", "--version", unexported.version, "--home", str(home)]) == 2
    assert "has no ONNX export" in "".join(capsys.readouterr())
    assert main(["serve", "--model", "dx", "--version", "1", "--alias", "production", "--home", str(home)]) == 2


def test_write_export_checks_parity_on_the_first_notes_scores_all_and_makes_fp16_on_demand(
        monkeypatch, tmp_path, tiny_tokenizer, tiny_notes):
    """Parity with PyTorch on the first PARITY_TEXTS held-out notes for every served file (model.onnx, the
    optimiser's input that no server picks, on the first FALLBACK_PARITY_TEXTS); the served file is scored on
    every held-out note (the same figures a full pass gives); model.fp16.onnx only when asked."""
    from steuops import export
    from steuops.data import Notes
    from steuops.export import FP16_FILE, MODEL_FILE, OPTIMIZED_FILE, score_logits, torch_logits, write_export
    from steuops.inference import InferenceSettings
    from steuops.tiny import classifier

    if export.cuda_available():
        pytest.skip("the default makes fp16 where CUDA is visible")
    monkeypatch.setattr(export.folder, "PARITY_TEXTS", 8)
    monkeypatch.setattr(export.folder, "FALLBACK_PARITY_TEXTS", 5)
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), arch="bert", seed=3)
    held = Notes(list(tiny_notes.texts[:20]), list(tiny_notes.labels[:20]))
    settings = InferenceSettings(max_length=64, truncation_side="right")
    plain = write_export(model, tiny_tokenizer, tmp_path / "cpu", name="dx", version="1", forgotten=["sepsis"],
                         settings=settings, held_out=held)
    assert plain.parity["fp32"]["n_texts"] == 5 and plain.parity["optimized"]["n_texts"] == 8
    assert FP16_FILE not in plain.files and "no CUDA device" in plain.parity["fp16"]["skipped"]
    assert set(plain.scores) == {OPTIMIZED_FILE}  # what a CPU server serves; model.onnx is its fallback
    full = score_logits(torch_logits(model, tiny_tokenizer, held.texts, settings), held, list(LABELS), True,
                        ["sepsis"], settings=settings, file=MODEL_FILE, providers=[])
    for name in plain.scores:
        assert plain.scores[name]["n_test"] == 20
        assert plain.scores[name]["retain_macro_f1"] == pytest.approx(full["retain_macro_f1"], abs=1e-9)
    asked = write_export(model, tiny_tokenizer, tmp_path / "fp16", name="dx", version="1", forgotten=["sepsis"],
                         settings=settings, held_out=held, fp16=True)
    assert FP16_FILE in asked.files or "skipped" in asked.parity["fp16"]


def test_served_file_is_fp16_on_a_gpu_the_optimised_file_on_a_cpu_else_the_plain_one():
    from steuops.export import FP16_FILE, MODEL_FILE, OPTIMIZED_FILE, served_file

    every = [MODEL_FILE, OPTIMIZED_FILE, FP16_FILE]
    assert served_file(every, gpu=True) == FP16_FILE and served_file(every, gpu=False) == OPTIMIZED_FILE
    assert served_file([MODEL_FILE, OPTIMIZED_FILE], gpu=True) == OPTIMIZED_FILE
    assert served_file([MODEL_FILE], gpu=False) == MODEL_FILE == served_file([MODEL_FILE, FP16_FILE], gpu=False)


def test_export_keeps_torchs_exporter_chatter_out_of_the_users_terminal(tmp_path, tiny_tokenizer):
    """torch's exporter warns about its own deprecations and about inputs sharing the batch/sequence Dim;
    neither is the user's to act on (parity checks the file), so neither reaches `steuops export`'s output."""
    import warnings

    from steuops.export import export_onnx
    from steuops.tiny import classifier

    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), seed=3, layers=1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        export_onnx(model, tiny_tokenizer, tmp_path, max_length=32)
    chatter = [f"{w.category.__name__}: {w.message}" for w in seen
               if issubclass(w.category, FutureWarning | DeprecationWarning) or "axis name" in str(w.message)
               or "torch/onnx" in str(w.filename).replace("\\", "/")]
    assert chatter == []


def test_a_failed_torchscript_export_falls_back_to_dynamo_with_the_same_metadata(monkeypatch, tmp_path,
                                                                                 tiny_tokenizer, tiny_notes):
    """Both exporters write the same metadata into the file as they save it; dynamo runs only when TorchScript
    fails, and its graph still gets attention fused (through onnxscript's rewriter)."""
    from steuops import export
    from steuops.errors import ConfigError
    from steuops.export import check_parity, export_onnx, exporter_of, heads_and_hidden, metadata, optimize
    from steuops.tiny import classifier

    def broken(*_args, **_kwargs):
        raise RuntimeError("no TorchScript today")

    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), arch="bert", seed=3)
    extra = {"steuops.name": "dx", "steuops.version": "7"}
    first = metadata(export_onnx(model, tiny_tokenizer, tmp_path / "torchscript", max_length=64, metadata=extra))
    monkeypatch.setattr(export.graph, "_export_torchscript", broken)
    path = export_onnx(model, tiny_tokenizer, tmp_path / "dynamo", max_length=64, metadata=extra)
    assert exporter_of(path) == "dynamo" and first[export.EXPORTER_KEY] == "torchscript"
    assert {k: v for k, v in metadata(path).items() if k != export.EXPORTER_KEY} == \
        {k: v for k, v in first.items() if k != export.EXPORTER_KEY}
    assert metadata(path)["steuops.version"] == "7"
    assert check_parity(model, tiny_tokenizer, path, _texts(tiny_notes), max_length=64).passed
    with pytest.raises(RuntimeError, match="no TorchScript today"):  # asked for by name: no silent fallback
        export_onnx(model, tiny_tokenizer, tmp_path / "named", max_length=64, exporter="torchscript")
    with pytest.raises(ConfigError, match="unknown ONNX exporter 'onnx'"):
        export_onnx(model, tiny_tokenizer, tmp_path / "named", max_length=64, exporter="onnx")
    heads, hidden = heads_and_hidden(model)
    fused = optimize(path, num_heads=heads, hidden_size=hidden, out_dir=tmp_path / "opt", fp16=False).fused_ops
    assert fused["Attention"] + fused["MultiHeadAttention"] == model.config.num_hidden_layers


def test_the_export_leaves_the_models_own_attention_as_it_was(tmp_path, tiny_tokenizer):
    """The TorchScript export runs on an eager-attention copy: the caller's model keeps its implementation."""
    from steuops.export import export_onnx
    from steuops.tiny import classifier

    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), seed=3, layers=1)
    model.set_attn_implementation("sdpa")
    export_onnx(model, tiny_tokenizer, tmp_path, max_length=32)
    assert model.config._attn_implementation == "sdpa"
