"""The registered model behaves the same without steuops: mlflow.pyfunc / mlflow.transformers loads truncate
at the version's settings, long notes do not crash, and the export of a version runs at its settings.

A real embedded MLflow registry (sqlite + local artifacts in a temp home), real tiny models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from steuops.inference import EXAMPLE_TEXT, InferenceSettings

pytestmark = pytest.mark.filterwarnings("ignore")

LABELS = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation", "diabetic ketoacidosis"]
SETTINGS = InferenceSettings(32, "left")
META = {"forgotten": ["sepsis"], "parent_version": "1", "policy": {"name": "default", "sha256": "ab" * 32}}


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_tokenizer):
    """(registry, ref, model): a tiny model logged with SETTINGS + metadata and registered as dx v1."""
    import mlflow

    from steuops.registry import ModelRef, Registry
    from steuops.tiny import classifier

    registry = Registry(tmp_path_factory.mktemp("inference-home"))
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), seed=4)
    with registry._active(), mlflow.start_run(experiment_id=registry._experiment_id()):
        info = registry._log_transformers(model, tiny_tokenizer, SETTINGS, metadata=META)
        version = mlflow.register_model(info.model_uri, "dx")
    return registry, ModelRef("dx", str(version.version), None), model


@pytest.fixture(scope="module")
def long_text(tiny_notes, tiny_tokenizer):
    text = " ".join(tiny_notes.texts[:25])
    assert len(tiny_tokenizer(text)["input_ids"]) > 600  # past BERT's 512 positions
    return text


def _top_sigmoid(model, tokenizer, text: str, settings: InferenceSettings) -> tuple[str, float]:
    from steuops.export import torch_logits

    row = 1.0 / (1.0 + np.exp(-torch_logits(model, tokenizer, [text], settings)[0]))
    return LABELS[int(row.argmax())], float(row.max())


def test_pyfunc_truncates_long_notes_like_steuops(logged, tiny_tokenizer, long_text):
    import mlflow

    registry, ref, model = logged
    with registry._active():
        pyfunc = mlflow.pyfunc.load_model(ref.uri)
    out = pyfunc.predict([long_text, EXAMPLE_TEXT])  # > 512 tokens: must truncate, not crash
    assert len(out) == 2
    label, score = _top_sigmoid(model, tiny_tokenizer, long_text, SETTINGS)
    assert out["label"][0] == label and float(out["score"][0]) == pytest.approx(score, abs=1e-5)
    # the comparison can fail: other settings give another score
    other = _top_sigmoid(model, tiny_tokenizer, long_text, InferenceSettings(32, "right"))[1]
    assert abs(other - score) > 1e-4
    meta = pyfunc.metadata
    assert meta.metadata["forgotten"] == ["sepsis"] and meta.metadata["parent_version"] == "1"
    assert meta.metadata["policy"]["name"] == "default"
    assert meta.metadata["steuops_inference"] == SETTINGS.to_dict()


def test_transformers_load_keeps_settings_and_example(logged, tiny_tokenizer, long_text, tmp_path):
    import mlflow

    registry, ref, model = logged
    with registry._active():
        parts = mlflow.transformers.load_model(ref.uri, return_type="components", dst_path=str(tmp_path))
        pipe = mlflow.transformers.load_model(ref.uri)
        (tmp_path / "dl").mkdir()
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(tmp_path / "dl")))
    assert InferenceSettings.from_tokenizer(parts["tokenizer"]) == SETTINGS
    got = pipe(long_text, truncation=True)[0]  # the pipeline truncates at the saved limit, on the saved side
    label, score = _top_sigmoid(model, tiny_tokenizer, long_text, SETTINGS)
    assert got["label"] == label and got["score"] == pytest.approx(score, abs=1e-5)
    assert EXAMPLE_TEXT in (model_dir / "input_example.json").read_text()  # synthetic, not a note
    # the caller's tokenizer was not changed by logging
    assert tiny_tokenizer.truncation_side == "right" and tiny_tokenizer.model_max_length > 10**6


def test_default_settings_still_truncate(tmp_path, tiny_tokenizer, long_text):
    """A model logged without settings (a bare tokenizer sets no limit) still truncates at 256."""
    import mlflow

    from steuops.registry import Registry
    from steuops.tiny import classifier

    registry = Registry(tmp_path / "home")
    ref = registry.log_base_model("plain", classifier(LABELS, len(tiny_tokenizer), seed=2), tiny_tokenizer)
    loaded = registry.load(ref)
    assert InferenceSettings.from_tokenizer(loaded.tokenizer) == InferenceSettings(256, "right")
    with registry._active():
        out = mlflow.pyfunc.load_model(ref.uri).predict([long_text])
    assert len(out) == 1


@pytest.mark.slow
def test_export_version_uses_the_versions_settings(logged, tiny_notes, tmp_path):
    """Recorded settings win; asking for others is refused; ONNX figures are tagged next to PyTorch's."""
    from steuops.data import Notes
    from steuops.errors import ConfigError
    from steuops.export import OnnxScoreMismatch, export_version
    from steuops.metrics import evaluate

    registry, ref, model = logged
    registry.set_tags(ref, {"steuops.forgotten": "sepsis", **SETTINGS.to_tags()})
    with pytest.raises(ConfigError, match="evaluated at max_length 32"):
        export_version(registry, ref, max_length=256)
    held_out = Notes(list(tiny_notes.texts[-24:]), [list(x) for x in tiny_notes.labels[-24:]])
    loaded = registry.load(ref)
    torch_eval = evaluate(loaded.model, loaded.model, loaded.tokenizer, held_out, ["sepsis"], device="cpu",
                          settings=SETTINGS)
    # a gated figure the ONNX file does not reproduce: refused, figures tagged, no ONNX logged
    gated = torch_eval.to_dict()
    gated["after"]["retain_macro_f1"] = min(1.0, gated["after"]["retain_macro_f1"] + 0.2) - 0.1
    with pytest.raises(OnnxScoreMismatch):
        export_version(registry, ref, held_out=held_out, torch_eval=gated)
    assert registry.tags(ref)["steuops.onnx_agreement"] == "failed"
    assert registry.artifact_names(ref, "onnx") == []
    result = export_version(registry, ref, out_dir=tmp_path / "out", held_out=held_out, torch_eval=torch_eval)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["max_length"] == 32 and manifest["truncation_side"] == "left"
    tags = registry.tags(ref)
    assert InferenceSettings.from_tags(tags) == SETTINGS
    assert tags["steuops.onnx_agreement"] == "passed"
    assert float(tags["steuops.onnx_forget_f1"]) == pytest.approx(torch_eval.after.forget_f1, abs=1e-4)
    assert float(tags["steuops.onnx_retain_macro_f1"]) == pytest.approx(torch_eval.after.retain_macro_f1, abs=1e-4)
    assert result.parity["fp32"]["n_texts"] == 24 and result.agreement["passed"]
    assert "onnx/model.onnx" in registry.artifact_names(ref, "onnx")
    assert not any(text[:40] in json.dumps(tags) for text in held_out.texts)  # figures, never note text


def test_export_checks_the_registered_files_against_the_logits_the_gate_scored(logged, tiny_notes, monkeypatch):
    """apply hands the export the fp32 logits its evaluation scored: parity is then checked against them on every
    held-out note, with no PyTorch pass; files that do not give them (here: logits of another model) are refused
    and nothing is logged."""
    import torch

    from steuops import export, modeling
    from steuops.data import Notes
    from steuops.errors import ExportParityError
    from steuops.export import export_version
    from steuops.metrics import evaluate

    registry, ref, _ = logged
    registry.set_tags(ref, {"steuops.forgotten": "sepsis", **SETTINGS.to_tags()})
    held_out = Notes(list(tiny_notes.texts[-24:]), [list(x) for x in tiny_notes.labels[-24:]])
    loaded = registry.load(ref)
    evaluation = evaluate(loaded.model, loaded.model, loaded.tokenizer, held_out, ["sepsis"], device="cpu",
                          settings=SETTINGS)
    with SETTINGS.applied(loaded.tokenizer):
        full = modeling.logits(loaded.model, loaded.tokenizer, held_out.texts, max_length=SETTINGS.max_length)
    np.testing.assert_allclose(evaluation.edited_logits, full, atol=1e-5)  # what the gate's figures came from
    assert "edited_logits" not in evaluation.to_dict()

    def no_pytorch_pass(*_args, **_kwargs):
        raise AssertionError("the evaluated logits were given: no PyTorch pass is needed")

    for module in (export.folder, export.checks):  # the two places a PyTorch pass could run from
        monkeypatch.setattr(module, "torch_logits", no_pytorch_pass)
    other = evaluation.edited_logits.copy()
    other[5] += torch.linspace(-0.5, 0.5, other.shape[1]).numpy()  # one note scored differently
    before = (registry.tags(ref), registry.artifact_names(ref, "onnx"))
    with pytest.raises(ExportParityError, match="the gate's evaluation disagree on 1 of 24"):
        export_version(registry, ref, held_out=held_out, torch_eval=evaluation.to_dict(), evaluated=other)
    assert (registry.tags(ref), registry.artifact_names(ref, "onnx")) == before  # refused before logging or tagging
    result = export_version(registry, ref, held_out=held_out, torch_eval=evaluation.to_dict(),
                            evaluated=evaluation.edited_logits)
    served = result.parity["optimized"]
    assert served["reference"] == "evaluation" and served["passed"] and served["n_texts"] == len(held_out)
    assert result.parity["fp32"]["reference"] == "evaluation" and result.agreement["passed"]
    with pytest.raises(ValueError, match="held-out notes they were computed on"):
        export_version(registry, ref, held_out=held_out, evaluated=evaluation.edited_logits[:10])


def test_a_byte_identical_re_export_reuses_its_scores_and_anything_else_scores_again(logged, tiny_notes, monkeypatch):
    """Exported again, the served file comes out byte-identical: the earlier export's held-out figures for those
    bytes are reused and the file is checked on the first FALLBACK_PARITY_TEXTS notes only. Other notes or labels,
    or `rescore`, score every note again."""
    from steuops import export, modeling
    from steuops.data import Notes
    from steuops.export import OPTIMIZED_FILE, export_version

    registry, ref, _ = logged
    registry.set_tags(ref, {"steuops.forgotten": "sepsis", **SETTINGS.to_tags()})
    held_out = Notes(list(tiny_notes.texts[-24:]), [list(x) for x in tiny_notes.labels[-24:]])
    loaded = registry.load(ref)
    with SETTINGS.applied(loaded.tokenizer):
        gated = modeling.logits(loaded.model, loaded.tokenizer, held_out.texts, max_length=SETTINGS.max_length)
    monkeypatch.setattr(export.folder, "FALLBACK_PARITY_TEXTS", 8)
    scored, real, notes_seen = [], export.ort_logits, set(held_out.texts)  # held-out notes run (not the probe's)
    monkeypatch.setattr(export.folder, "ort_logits", lambda sess, tok, texts, **kw:
                        scored.append(sum(t in notes_seen for t in texts)) or real(sess, tok, texts, **kw))

    def run(notes: Notes, **kw):
        scored.clear()
        result = export_version(registry, ref, held_out=notes, evaluated=gated, **kw)
        return result, result.parity["optimized"], sum(scored)

    first, served, n = run(held_out, rescore=True)
    assert served["n_texts"] == 24 and "held_out" not in served and n == 8 + 24  # model.onnx on 8, the served on all
    record = first.scores[OPTIMIZED_FILE]["scored"]
    assert record["file_sha256"] == first.files[OPTIMIZED_FILE] and record["parity"]["n_texts"] == 24

    again, served, n = run(held_out)
    assert again.files == first.files  # byte-identical
    assert served["n_texts"] == 8 and served["passed"] and n == 8 + 8
    assert served["held_out"] == {"scores_reused": True, "parity": record["parity"]}
    figures = ("forget_f1", "retain_macro_f1", "macro_f1", "per_class_f1")
    assert {k: again.scores[OPTIMIZED_FILE][k] for k in figures} == {k: first.scores[OPTIMIZED_FILE][k] for k in figures}
    assert again.tags["steuops.onnx_forget_f1"] == first.tags["steuops.onnx_forget_f1"]
    logged_manifest = export.logged_manifest(registry, ref)
    assert logged_manifest["scores"][OPTIMIZED_FILE]["reused"] is True
    assert logged_manifest["scores"][OPTIMIZED_FILE]["scored"]["parity"]["n_texts"] == 24  # the evidence carries on

    relabelled = Notes(held_out.texts, [["pneumonia"] if i == 0 else list(x) for i, x in enumerate(held_out.labels)])
    _, served, n = run(relabelled)  # the same texts, one label changed: other figures, so scored again
    assert served["n_texts"] == 24 and "held_out" not in served and n == 8 + 24
    _, served, n = run(relabelled, rescore=True)
    assert served["n_texts"] == 24 and n == 8 + 24
