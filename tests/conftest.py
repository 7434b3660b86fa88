"""Shared fixtures: tiny models and notes built in code. No model hub, ever."""

from __future__ import annotations

import os

import pytest

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
