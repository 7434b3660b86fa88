"""One set of inference settings per version: evaluation, ONNX export, parity and held-out scoring agree.

The keyword world: every note is 20 filler words followed by its label words ("alpha", "beta"), so
a note's label is decided by tokens past position 16. A tiny BERT trained at 32 tokens reads them;
at max_length 16 (right truncation) it cannot, at 16 with left truncation it can again. Real
exporters, real ONNX Runtime sessions.
"""

from __future__ import annotations

import json
import random

import pytest

from steuops.data import Notes
from steuops.inference import InferenceSettings

pytestmark = pytest.mark.filterwarnings("ignore")

KEY_LABELS = ["alpha", "beta"]
FILLER = ["patient", "stable", "vitals", "reviewed", "plan", "discussed", "family", "home", "meds", "follow",
          "clinic", "labs", "normal", "rest", "diet", "walk"]
SHORT = InferenceSettings(16, "right")  # cuts the label words off
SHORT_LEFT = InferenceSettings(16, "left")  # keeps them
FULL = InferenceSettings(32, "right")


def keyword_notes(n: int, seed: int) -> Notes:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = [["alpha"], ["beta"], ["alpha", "beta"]][i % 3]
        texts.append(" ".join(rng.choice(FILLER) for _ in range(20)) + " " + " ".join(label))
        labels.append(label)
    return Notes(texts, labels)


@pytest.fixture(scope="module")
def world():
    """(model, tokenizer, held-out notes): a tiny BERT that learned the label words at 32 tokens."""
    from steuops.tiny import classifier, wordpiece_tokenizer
    from steuops.training import TrainConfig, fine_tune

    train, test = keyword_notes(96, 0), keyword_notes(30, 1)
    tok = wordpiece_tokenizer(train.texts, vocab_size=60)
    model = classifier(KEY_LABELS, len(tok), seed=0)
    fine_tune(model, tok, train, TrainConfig(epochs=8, lr=1e-2, head_lr=3e-2, max_length=32, batch_size=16,
                                             warmup=0.0), device="cpu")
    return model.eval(), tok, test


def _evaluate(world, settings: InferenceSettings):
    from steuops.metrics import evaluate

    model, tok, test = world
    return evaluate(model, model, tok, test, ["alpha"], device="cpu", batch_size=16, settings=settings)


@pytest.fixture(scope="module")
def exported(world, tmp_path_factory):
    """write_export at SHORT with the held-out notes: the export of a version evaluated at 16 tokens."""
    from steuops.export import write_export

    model, tok, test = world
    out = tmp_path_factory.mktemp("onnx-16")
    return write_export(model, tok, out, name="kw", version="3", forgotten=["alpha"], settings=SHORT, held_out=test)


# ---------------------------------------------------------------- the settings object


def test_settings_round_trip_through_tags_and_dict():
    from steuops.inference import T_MAX_LENGTH, T_TRUNCATION_SIDE

    s = InferenceSettings(128, "left")
    assert s.to_tags() == {T_MAX_LENGTH: "128", T_TRUNCATION_SIDE: "left"} == {
        "steuops.max_length": "128", "steuops.truncation_side": "left"}
    assert InferenceSettings.from_tags(s.to_tags()) == s
    assert InferenceSettings.from_tags({**s.to_tags(), "steuops.forgotten": "sepsis"}) == s
    assert InferenceSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert InferenceSettings.from_tags({}) is None and InferenceSettings.from_tags(None) is None
    assert InferenceSettings.from_tags({T_MAX_LENGTH: "64"}) == InferenceSettings(64, "right")
    assert s.pipeline_config() == {"truncation": True, "max_length": 128}


@pytest.mark.parametrize("tags", [{"steuops.max_length": "lots"}, {"steuops.max_length": "-3"},
                                  {"steuops.max_length": "1"},
                                  {"steuops.max_length": "64", "steuops.truncation_side": "middle"}])
def test_bad_recorded_settings_are_config_errors(tags):
    from steuops.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        InferenceSettings.from_tags(tags)
    assert info.value.exit_code == 2


def test_from_tokenizer_apply_to_and_save_pretrained(world, tmp_path):
    import copy

    from transformers import AutoTokenizer

    _model, tok, test = world
    assert InferenceSettings.from_tokenizer(tok, 77) == InferenceSettings(77, "right")  # no limit set: the default
    saved = SHORT_LEFT.apply_to(copy.deepcopy(tok))
    assert InferenceSettings.from_tokenizer(saved) == SHORT_LEFT
    saved.save_pretrained(str(tmp_path))
    back = AutoTokenizer.from_pretrained(str(tmp_path))
    assert InferenceSettings.from_tokenizer(back, 999) == SHORT_LEFT  # both survive a save (transformers 5 drops
    ids = back(test.texts[0], truncation=True)["input_ids"]  # a bare truncation_side attribute)
    assert len(ids) == 16 and ids[-2] == back.convert_tokens_to_ids(test.texts[0].split()[-1])
    assert tok.truncation_side == "right" and tok.model_max_length > 10**6  # the original is untouched
    with SHORT_LEFT.applied(tok):
        assert tok.truncation_side == "left"
    assert tok.truncation_side == "right"


def test_check_model_refuses_more_tokens_than_positions(world):
    from steuops.errors import ConfigError

    model = world[0]
    InferenceSettings(model.config.max_position_embeddings).check_model(model)
    with pytest.raises(ConfigError, match="exceeds the model's 512 positions"):
        InferenceSettings(513).check_model(model)


# ---------------------------------------------------------------- evaluation == export


def test_settings_decide_the_figures(world):
    """Precondition for the tests below: 16 vs 32 tokens, right vs left, give different forget F1."""
    assert _evaluate(world, FULL).after.forget_f1 == pytest.approx(1.0)
    short = _evaluate(world, SHORT)
    assert short.after.forget_f1 < 0.5 and short.inference == SHORT.to_dict()
    assert _evaluate(world, SHORT_LEFT).after.forget_f1 == pytest.approx(1.0)
    model, tok, test = world
    from steuops.metrics import evaluate

    legacy = evaluate(model, model, tok, test, ["alpha"], device="cpu", max_length=16)  # keyword default kept
    assert legacy.to_dict()["after"] == short.to_dict()["after"]


def test_export_runs_at_the_evaluated_settings_and_scores_agree(world, exported):
    from steuops.export import MODEL_FILE, OPTIMIZED_FILE, require_agreement

    short = _evaluate(world, SHORT)
    assert OPTIMIZED_FILE in exported.scores and MODEL_FILE not in exported.scores  # the served file is scored
    for scores in exported.scores.values():
        assert scores["inference"] == SHORT.to_dict() and scores["n_test"] == len(world[2])
        assert scores["forget_f1"] == pytest.approx(short.after.forget_f1, abs=0.01)
        assert scores["retain_macro_f1"] == pytest.approx(short.after.retain_macro_f1, abs=0.01)
    result = require_agreement(short.to_dict(), exported.scores, 0.01)
    assert result["passed"] and result["max_abs_diff"] <= 0.01
    # parity ran on the held-out notes at the same settings
    assert exported.parity["fp32"]["n_texts"] == len(world[2]) and exported.parity["fp32"]["passed"]
    assert exported.inference == SHORT.to_dict()


def test_manifest_tokenizer_and_metadata_props_carry_the_settings(world, exported):
    from transformers import AutoTokenizer

    from steuops.export import MANIFEST_FILE, metadata

    out = exported.out_dir
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["max_length"] == 16 and manifest["truncation_side"] == "right"
    assert manifest["inference"] == SHORT.to_dict()
    assert manifest["scores"]["model.opt.onnx"]["forget_f1"] == exported.scores["model.opt.onnx"]["forget_f1"]
    assert InferenceSettings.from_tokenizer(AutoTokenizer.from_pretrained(str(out))) == SHORT
    for name in exported.files:
        if not name.endswith(".onnx"):
            continue
        props = metadata(out / name)
        assert props["steuops.name"] == "kw" and props["steuops.version"] == "3", name
        assert json.loads(props["steuops.labels"]) == KEY_LABELS
        assert json.loads(props["steuops.forgotten"]) == ["alpha"]
        assert InferenceSettings.from_tags(props) == SHORT


def test_onnx_scored_at_other_settings_is_refused(world, exported):
    """What the issue saw: an export served at another max length scores differently, and is refused."""
    from steuops.errors import ExportParityError, SteuopsError
    from steuops.export import OnnxScoreMismatch, agreement, require_agreement, score_onnx

    model, tok, test = world
    path = exported.out_dir / "model.onnx"
    served_long = score_onnx(path, tok, test, ["alpha"], FULL)
    short = _evaluate(world, SHORT)
    assert not agreement(short, served_long)["passed"]
    with pytest.raises(OnnxScoreMismatch) as info:
        require_agreement(short.to_dict(), served_long, tolerance=0.01)
    err = info.value
    assert isinstance(err, ExportParityError) and isinstance(err, SteuopsError) and err.exit_code == 1
    assert any(f.startswith("model.onnx: forget_f1") for f in err.failures)
    assert not any(t in err.message + " ".join(err.failures) for t in ("patient", "alpha beta"))  # no note text


def test_truncation_side_reaches_onnx(world, exported):
    from steuops.export import require_agreement, score_onnx

    model, tok, test = world
    left = score_onnx(exported.out_dir / "model.onnx", tok, test, ["alpha"], SHORT_LEFT)
    assert left["forget_f1"] == pytest.approx(1.0)
    require_agreement(_evaluate(world, SHORT_LEFT), left, 0.01)
    assert tok.truncation_side == "right"  # scoring borrowed the side, it did not keep it


def test_version_settings_recorded_win_and_conflicts_are_refused(world):
    import copy

    from steuops.errors import ConfigError
    from steuops.export import version_settings

    tok = world[1]
    recorded = SHORT_LEFT.to_tags()
    assert version_settings(recorded, tok) == SHORT_LEFT
    assert version_settings(recorded, tok, max_length=16) == SHORT_LEFT  # same limit: the recorded side
    assert version_settings(recorded, tok, settings=SHORT_LEFT) == SHORT_LEFT
    for ask in ({"max_length": 256}, {"settings": SHORT}):
        with pytest.raises(ConfigError, match="evaluated at max_length 16"):
            version_settings(recorded, tok, **ask)
    # nothing recorded (a model a user logged): what is asked for, else the tokenizer's own
    assert version_settings({}, tok, max_length=64) == InferenceSettings(64, "right")
    assert version_settings({}, SHORT_LEFT.apply_to(copy.deepcopy(tok))) == SHORT_LEFT
