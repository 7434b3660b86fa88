"""Shared fixtures: tiny models and notes built in code, and homes with one registered. No model hub, ever.

Plain helpers (MODEL, FAST_STEU, write_policy, registry_snapshot) live in registry_helpers.py:
import those; the fixtures here need no import.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from registry_helpers import MODEL, write_policy

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABELS = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation", "diabetic ketoacidosis"]


@pytest.fixture(scope="session")
def tiny_notes():
    """A small seeded set of demo notes (multi-label)."""
    from steuops.demo.notes import generate

    return generate(n=240, seed=7)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_notes):
    from steuops.tiny import wordpiece_tokenizer

    return wordpiece_tokenizer(tiny_notes.texts, vocab_size=600)


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    """A fresh random-init 2-layer BERT multi-label classifier over the six demo labels."""
    from steuops.tiny import classifier

    return classifier(LABELS, vocab_size=len(tiny_tokenizer), multi_label=True)


@pytest.fixture(scope="session")
def steuops_home(tmp_path_factory):
    return tmp_path_factory.mktemp("steuops-home")


@pytest.fixture()
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, proxied artifacts); yields its URL."""
    from server_helpers import running_mlflow_server

    with running_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as url:
        yield url


# ---- registry / apply / CLI / promotion: a trained tiny model registered in a fresh home ---------
@pytest.fixture(scope="session")
def notes_frame(tiny_notes):
    from steuops.demo.notes import to_frame

    return to_frame(tiny_notes)


@pytest.fixture(scope="session")
def trained_tiny(tiny_notes, tiny_tokenizer, notes_frame):
    """A tiny BERT fine-tuned on the train split, so F1 before/after means something: every class is
    predicted (held-out F1 about 0.25-0.5 each on the clinician-style notes). Without `balance` (or with 4 epochs) it stays at
    "always negative", F1 0 for every class, and every F1 a test compares is 0 == 0. About 40 s, once."""
    from steuops import cohort as cohorts
    from steuops.tiny import classifier
    from steuops.training import TrainConfig, fine_tune

    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), hidden=32, layers=2)
    train = cohorts.to_notes(notes_frame[notes_frame["split"] == "train"].reset_index(drop=True))
    fine_tune(model, tiny_tokenizer, train,
              TrainConfig(epochs=8, lr=3e-3, batch_size=32, max_length=64, balance=True), device="cpu")
    return model.eval()


@pytest.fixture(scope="session")
def policies(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("policies")
    return {
        "loose": write_policy(folder / "loose.yaml"),
        "reject": write_policy(folder / "reject.yaml", params_fraction_max=0.0),
        "manual": write_policy(folder / "manual.yaml", on_pass=None),
    }


@pytest.fixture()
def make_home(tmp_path, trained_tiny, tiny_tokenizer, notes_frame):
    """Build a fresh embedded home holding clinical-dx v1 @production; returns (home, Registry)."""
    from steuops.registry import Registry

    def build(name: str = "home", dataset: bool = True):
        home = tmp_path / name
        registry = Registry(home)
        registry.log_base_model(MODEL, trained_tiny, tiny_tokenizer, dataset=notes_frame if dataset else None)
        return home, registry

    return build
