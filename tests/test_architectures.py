"""RoBERTa (byte-level BPE: "Ġword"), MPNet (<s>-framed WordPiece) and XLM-R (SentencePiece: "▁word") through
the engine and the registry; ALBERT, ELECTRA (factorised embeddings), DeBERTa-v2 (relative attention, a pooler
inside the head) and ModernBERT (rotary positions, local attention, a dense+norm head) through the engine and the
export; heads that read the mean over the note (ModernBERT's mean pooling) or its last token (a Llama decoder
classifier) through the engine, the replayed features included, and the export; Longformer (windowed attention,
global on the first token) through the engine and the export, which ships it at a fixed length (its graph keeps
the traced one; run as it is, it fails in one line).

The rest of the suite runs BERT and DistilBERT; these are the other families steuops is used with. Each test
builds its tiny model and tokenizer in code (steuops.tiny), so the tokenizer's own conventions are exercised:
BPE word markers in the selection rules, RoBERTa's padding-offset positions and sequence-reading head in the
cached-feature shortcut, no token type ids in the export, and the tokenizer's round trip through MLflow.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from engine_data import KEYWORDS, keyword_notes, trained_classifier

from steuops import modeling
from steuops.data import Notes
from steuops.features import exact, head_logits, record
from steuops.methods import unlearn
from steuops.methods.steu.selection import STOP_WORDS, is_content_piece
from steuops.metrics import evaluate
from steuops.tokens import bare

pytestmark = pytest.mark.filterwarnings("ignore")
FAMILIES = ["roberta", "mpnet", "xlm-roberta"]  # tokenizer shapes other than BERT's WordPiece
STRUCTURES = ["albert", "electra", "deberta-v2", "modernbert"]  # factorised embeddings; other attention and heads
READERS = {"modernbert-mean": "mean", "llama": "last"}  # heads that read another position than the first
WINDOWED = ["longformer"]  # global attention derived from the input ids: STEU's forward must pass them
ARCHS = FAMILIES + STRUCTURES + list(READERS) + WINDOWED
CFG = {"k": 8, "epochs": 8, "max_length": 16, "lr": 1e-2, "head_lr": 1e-2}


def test_bare_looks_past_every_family_marker():
    assert [bare(t) for t in ["##ors", "Ġthe", "▁51", "Ċ", "ĠĠ", "lactate", "Ġ995.91"]] == [
        "ors", "the", "51", "", "", "lactate", "995.91"]
    # stop words, numbers and punctuation are not content whichever tokenizer wrote them
    assert not any(map(is_content_piece, ["Ġthe", "ĠThe", "▁the", "Ġ51", "▁51", "Ġ995.91", "Ġ,", "Ċ", "ĊĊ", "ĠĠ"]))
    assert all(map(is_content_piece, ["Ġlactate", "▁sepsis", "##ors", "lactate"]))


def sepsis_marked_notes(n: int, seed: int) -> Notes:
    """Keyword notes where every sepsis note also says "the 51": a stop word and a number as class-specific as
    its keywords, which the selection rules must still refuse."""
    notes = keyword_notes(n, seed=seed)
    texts = [f"{t} the 51" if "sepsis" in ls else t for t, ls in zip(notes.texts, notes.labels, strict=True)]
    return Notes(texts, notes.labels, note_ids=notes.note_ids, patient_ids=notes.patient_ids)


@pytest.fixture(scope="module", params=ARCHS)
def trained(request):
    """(arch, model, tokenizer, train notes, test notes): a tiny classifier of that family that knows every class."""
    notes, test = sepsis_marked_notes(200, seed=0), sepsis_marked_notes(80, seed=1)
    model, tok = trained_classifier(notes, arch=request.param)
    return request.param, model.eval(), tok, notes, test


@pytest.mark.parametrize("trained", FAMILIES, indirect=True)
def test_the_tokenizer_has_its_family_shape(trained):
    arch, _, tok, notes, _ = trained
    pieces = tok.convert_ids_to_tokens(tok(notes.texts[0])["input_ids"])
    assert pieces[0] == "<s>" and pieces[-1] == "</s>" and tok.pad_token_id == 1
    assert "token_type_ids" not in tok.model_input_names
    assert any(p.startswith("Ġ") for p in pieces) == (arch == "roberta")
    assert any(p.startswith("▁") for p in pieces) == (arch == "xlm-roberta")


def test_specific_selection_picks_the_keywords_not_marked_stop_words_or_numbers(trained):
    arch, model, tok, notes, test = trained
    result = unlearn("steu", model, tok, ["sepsis"], notes, CFG, device="cpu")
    picked = [t["token"] for t in result.info["tokens"]]
    assert {bare(t) for t in picked} == set(KEYWORDS["sepsis"]), picked
    assert all(is_content_piece(t) and bare(t).lower() not in STOP_WORDS for t in picked)
    # the paper's PMI scorer has no such rules: "the"/"51" ("Ġthe", "▁51", ...) score as high as a keyword
    pmi = unlearn("steu", model, tok, ["sepsis"], notes, {**CFG, "scorer": "pmi"}, device="cpu")
    assert {"the", "51"} & {bare(t["token"]) for t in pmi.info["tokens"]}
    ev = evaluate(model, result.model, tok, test, ["sepsis"], device="cpu", max_length=16)
    assert ev.before.forget_f1 >= 0.5 and ev.after.forget_f1 <= 0.05
    emb, head = modeling.embedding_param_name(model), set(modeling.head_param_names(model))
    before, after = model.state_dict(), result.model.state_dict()
    assert {n for n in before if not torch.equal(before[n], after[n])} <= head | {emb}
    assert modeling.fingerprint(result.edit.apply(copy.deepcopy(model))) == modeling.fingerprint(result.model)


@pytest.mark.parametrize("arch", ["roberta", "deberta-v2"])
def test_a_single_label_head_forgets_too(arch):
    """Softmax heads (cross-entropy losses, argmax predictions) of a BPE family and of a pooled-head family."""
    notes, test = keyword_notes(200, seed=0, multi_label=False), keyword_notes(80, seed=1, multi_label=False)
    model, tok = trained_classifier(notes, arch=arch, multi_label=False)
    result = unlearn("steu", model, tok, ["pneumonia"], notes, CFG, device="cpu")
    assert {bare(t["token"]) for t in result.info["tokens"]} <= set(KEYWORDS["pneumonia"])
    ev = evaluate(model, result.model, tok, test, ["pneumonia"], device="cpu", max_length=16)
    assert ev.before.forget_f1 >= 0.5 and ev.after.forget_f1 <= 0.05
    assert ev.after.retain_macro_f1 >= ev.before.retain_macro_f1 - 0.15


def test_head_alone_on_cached_features_reproduces_the_model(trained):
    """RoBERTa's and MPNet's heads read the sequence (first position), ModernBERT's mean pooling the mean over the
    note's tokens, a decoder's head its last token: the recorded features must replay each, in its own reading."""
    arch, model, tok, notes, _ = trained
    texts = notes.texts[:40]
    with torch.no_grad(), record(model) as rec:
        logits = torch.cat([model(**tok(texts[s:s + 16], padding=True, truncation=True, max_length=16,
                                        return_tensors="pt")).logits for s in range(0, len(texts), 16)])
        cache = rec.cache()
        assert exact(model, cache, logits)
        replayed = head_logits(model, cache, list(range(len(texts))))
    torch.testing.assert_close(replayed, logits, atol=1e-5, rtol=0)
    assert cache.reading == READERS.get(arch, "first")
    # the other readings' fields are dropped once one replays
    assert cache.readings() == (["first"] if cache.reading == "first" else ["first", cache.reading])


def test_shortcut_losses_and_edit_match_the_full_path(trained):
    """In float64: the two paths are the same sums, but the cached features come from batches of another size than
    the training batches, and on some CPUs (the 2-core EPYC, MKL's AVX2 kernels) float32 rounds a row differently
    with the batch around it. Adam divides each step by the gradient's own scale, so that rounding, on the head's
    near-zero gradients, grew to 5.6e-4 in MPNet's out_proj after one epoch while the losses agreed to 3e-6. In float64
    the edits agree to 1e-15: the shortcut is exact, not close. (test_shortcut.py checks float32 BERT/DistilBERT.)"""
    _, model, tok, notes, _ = trained
    model = copy.deepcopy(model).double()
    cfg = {**CFG, "epochs": 3, "early_stop": False, "retain_per_forget": 0}
    fast = unlearn("steu", model, tok, ["sepsis"], notes, cfg, device="cpu")
    slow = unlearn("steu", model, tok, ["sepsis"], notes, {**cfg, "shortcut": False}, device="cpu")
    assert fast.info["shortcut"]["used"] and fast.info["shortcut"]["head_only_notes"] > 0
    assert not slow.info["shortcut"]["used"]
    for a, b in zip(fast.info["losses"], slow.info["losses"], strict=True):
        assert a["forget"] == pytest.approx(b["forget"], abs=1e-5)
        assert a["retain"] == pytest.approx(b["retain"], abs=1e-5)
    assert fast.edit.token_ids == slow.edit.token_ids
    torch.testing.assert_close(fast.edit.rows, slow.edit.rows, atol=1e-5, rtol=0)
    for name in fast.edit.head:
        torch.testing.assert_close(fast.edit.head[name], slow.edit.head[name], atol=1e-5, rtol=0)


def test_audit_runs_every_attack_and_reads_the_class_in_the_parent(trained):
    from steuops.audit import run_audit

    _, model, tok, notes, test = trained
    result = unlearn("steu", model, tok, ["sepsis"], notes, CFG, device="cpu")
    config = {"seeds": 1, "max_length": 16, "relearn_sizes": [16], "relearn_steps": [0, 5], "retain_relearn_steps": 3}
    report = run_audit(model, result.model, tok, ["sepsis"], notes, test, config=config, device="cpu",
                       edit=result.edit).to_dict()
    assert report["probe_f1"]["original"] >= 0.6  # the parent's features carry the class
    assert report["relearn_f1"]["edited_rows"] is not None  # the rows re-fit ran on the BPE / SentencePiece rows
    for figure in ("probe_f1", "relearn_f1", "retain_relearn_f1", "membership_auc", "bypass_f1"):
        assert report[figure]["edited"] is not None and 0.0 <= report[figure]["edited"] <= 1.0, figure


@pytest.mark.parametrize("trained", STRUCTURES + list(READERS), indirect=True)
def test_export_keeps_parity(trained, tmp_path):
    from steuops.export import check_parity, export_onnx

    _, model, tok, _, test = trained
    path = export_onnx(model, tok, tmp_path, max_length=32)
    report = check_parity(model, tok, path, test.texts[:16], max_length=32)
    assert report.passed and report.max_abs_diff < 1e-4, report.failures()


@pytest.mark.parametrize("trained", WINDOWED, indirect=True)
def test_a_graph_that_keeps_its_sample_length_fails_in_one_line_and_ships_at_a_fixed_length(trained, tmp_path,
                                                                                            capfd):
    """Longformer's traced graph keeps its sample's window count and fails on notes of other lengths. Run as it is,
    that is one OnnxRunError naming the file and the node, with no second copy printed by the runtime's own logger.
    The export finds it before any check and exports again at the settings' max_length: every file then says so,
    every input is padded to it, and the served logits are PyTorch's for short and long notes alike."""
    from steuops.export import OnnxRunError, check_parity, export_onnx, metadata, optimize, write_export
    from steuops.serving import ServedModel

    _, model, tok, _, test = trained
    path = export_onnx(model, tok, tmp_path, max_length=32)
    with pytest.raises(OnnxRunError) as err:
        check_parity(model, tok, path, test.texts[:16], max_length=32)
    message = str(err.value)
    assert message.startswith("model.onnx: ONNX Runtime cannot run") and "node" in message and "\n" not in message
    assert "--no-export" in err.value.hint and err.value.exit_code == 1
    assert "onnxruntime" not in capfd.readouterr().err

    out = tmp_path / "out"
    result = write_export(model, tok, out, name="dx", version="2", forgotten=["sepsis"], check_texts=test.texts[:16],
                          max_length=32)
    # no optimised file (graph.NOT_OPTIMIZED): model.onnx is the served file, checked on every parity text
    assert result.parity["fp32"]["passed"] and result.parity["fp32"]["n_texts"] == 16
    assert "windowed attention" in result.parity["optimized"]["skipped"] and "model.opt.onnx" not in result.files
    assert json.loads((out / "manifest.json").read_text())["fixed_length"] == 32
    # on a GPU host the fp16 copy is made of the plain graph, with the files' metadata
    opt = optimize(out / "model.onnx", num_heads=2, hidden_size=32, out_dir=tmp_path / "gpu", fp16=True,
                   metadata={"steuops.version": "2"}, model_type="longformer")
    assert opt.optimized is None and opt.skipped and not any(opt.fused_ops.values())
    assert opt.fp16 is not None and metadata(opt.fp16)["steuops.version"] == "2", opt.fp16_error
    assert metadata(opt.fp16)["steuops.fixed_length"] == "32"
    assert {metadata(out / f).get("steuops.fixed_length") for f in result.files if f.endswith(".onnx")} == {"32"}
    texts = ["fever and cough", *test.texts[:5]]  # a few tokens, and notes cut at 32
    np.testing.assert_allclose(ServedModel(out, device="cpu").logits(texts),
                               modeling.logits(model, tok, texts, max_length=32), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("trained", FAMILIES + WINDOWED, indirect=True)
def test_registry_apply_export_and_serve(trained, tmp_path):
    """Registered, unlearned, exported and served: the tokenizer survives MLflow, the ONNX graph takes no token
    type ids, and the served scores are the registered version's own (Longformer's at its fixed length)."""
    from registry_helpers import write_policy

    from steuops.demo.notes import to_frame
    from steuops.pipeline import apply, export
    from steuops.registry import ModelRef, Registry
    from steuops.serving import ServedModel

    arch, model, tok, notes, test = trained
    frame = to_frame(Notes(notes.texts + test.texts, notes.labels + test.labels), test_fraction=0.3)
    registry = Registry(tmp_path / "home")
    registry.log_base_model("dx", model, tok, dataset=frame)
    policy = write_policy(tmp_path / "loose.yaml", forget_f1_max=1.0)
    done = apply("dx", ["sepsis"], policy=policy, method_config=CFG, registry=registry, device="cpu")
    assert done.new_version == "2"
    loaded = registry.load(ModelRef("dx", "2"))
    assert type(loaded.tokenizer).__name__ == type(tok).__name__
    assert loaded.tokenizer(test.texts[:3])["input_ids"] == tok(test.texts[:3])["input_ids"]

    folder = tmp_path / "onnx"
    export("dx", out_dir=folder, registry=registry, version="2")
    served = ServedModel(folder, device="cpu")
    # the served file is the one scored on the held-out notes, and its parity with the gated logits was checked on
    # every one of them (by apply's export; this one reuses those scores for the same bytes)
    manifest = json.loads((folder / "manifest.json").read_text())
    file = "model.onnx" if arch == "longformer" else "model.opt.onnx"
    assert served.file.name == file and set(manifest["scores"]) == {file}, arch
    assert manifest["scores"][file]["scored"]["parity"]["n_texts"] == int((frame["split"] == "test").sum()), arch
    assert "token_type_ids" not in {i.name for i in served.session.get_inputs()}, arch
    texts = test.texts[:12]
    want = modeling.logits(loaded.model, loaded.tokenizer, texts, max_length=served.max_length)
    np.testing.assert_allclose(served.logits(texts), want, atol=1e-4)
    assert "sepsis" not in served.classify(texts[:1])[0]["scores"]
