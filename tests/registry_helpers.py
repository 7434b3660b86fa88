"""Shared fixtures for the registry / apply / CLI / promotion tests: a briefly trained tiny model,
homes with it registered as clinical-dx@production (with its notes as a logged dataset), small STEU
settings and policy files. Import the fixtures into a test module to use them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

MODEL = "clinical-dx"
# Small enough that one apply takes seconds on a shared 2-core machine.
FAST_STEU = {"k": 16, "epochs": 1, "max_length": 64, "batch_size": 32}


def write_policy(path: Path, *, params_fraction_max: float = 0.5, forget_f1_max: float = 1.0,
                 on_pass: str | None = "production", name: str | None = None, require_onnx: bool = False) -> Path:
    """A policy whose thresholds the tiny model can meet (or, with params_fraction_max=0, cannot).
    require_onnx is off by default so tests can promote with export=False and stay fast."""
    on_pass_text = "null" if on_pass is None else on_pass
    path.write_text(textwrap.dedent(f"""\
        schema_version: 1
        name: {name or path.stem}
        gate:
          forget_f1_max: {forget_f1_max}
          retain_macro_f1_min: 0.0
          retain_macro_f1_drop_max: 1.0
          retain_class_f1_drop_max: 1.0
          params_fraction_max: {params_fraction_max}
        cohort:
          forget_rows_min: 5
          retain_rows_min: 20
          duplicate_text_fraction_max: 0.05
        promotion:
          on_pass: {on_pass_text}
          require_onnx: {str(require_onnx).lower()}
        """), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def notes_frame(tiny_notes):
    from steuops.demo.notes import to_frame

    return to_frame(tiny_notes)


@pytest.fixture(scope="session")
def trained_tiny(tiny_notes, tiny_tokenizer, notes_frame):
    """A tiny BERT fine-tuned for a few epochs on the train split, so F1 before/after means something."""
    from steuops import cohort as cohorts
    from steuops.tiny import classifier
    from steuops.training import TrainConfig, fine_tune

    labels = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation",
              "diabetic ketoacidosis"]
    model = classifier(labels, vocab_size=len(tiny_tokenizer), hidden=32, layers=2)
    train = cohorts.to_notes(notes_frame[notes_frame["split"] == "train"].reset_index(drop=True))
    fine_tune(model, tiny_tokenizer, train, TrainConfig(epochs=4, lr=3e-3, batch_size=32, max_length=64),
              device="cpu")
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
