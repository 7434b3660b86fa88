"""Hospital label sets end to end: ICD descriptions with commas, codes that look like numbers, a label
that is a JSON literal, one with quotes and one in non-Latin script survive apply, history, export,
serving, a second apply and a rollback, each as exactly one class."""

from __future__ import annotations

import json
import sys

import pytest
from registry_helpers import write_policy
from server_helpers import bento_env, free_port, running_server

# The demo's six classes under the names a hospital's label set might give them.
RENAME = {
    "sepsis": "Sepsis, unspecified organism",
    "pneumonia": "995.91",
    "heart failure": "null",
    "acute kidney injury": 'Kidney injury, "acute"',
    "copd exacerbation": "慢性阻塞性肺疾病 急性加重",
    "diabetic ketoacidosis": "diabetic ketoacidosis",
}
ODD = list(RENAME.values())
SEPSIS, CODE = RENAME["sepsis"], RENAME["pneumonia"]
MODEL = "icd-dx"
STEU = {"k": 16, "epochs": 2, "max_length": 64, "batch_size": 32}


@pytest.fixture(scope="module")
def odd_home(tmp_path_factory, tiny_notes, tiny_tokenizer):
    """clinical notes relabelled with odd names, a tiny classifier over them, registered as v1@production."""
    from steuops import cohort as cohorts
    from steuops.demo.notes import to_frame
    from steuops.registry import Registry
    from steuops.tiny import classifier
    from steuops.training import TrainConfig, fine_tune

    frame = to_frame(tiny_notes)
    frame["labels"] = [[RENAME[c] for c in labels] for labels in frame["labels"]]
    model = classifier(ODD, vocab_size=len(tiny_tokenizer), hidden=32, layers=2)
    train = cohorts.to_notes(frame[frame["split"] == "train"].reset_index(drop=True))
    fine_tune(model, tiny_tokenizer, train, TrainConfig(epochs=4, lr=3e-3, batch_size=32, max_length=64), device="cpu")
    home = tmp_path_factory.mktemp("odd") / "home"
    Registry(home).log_base_model(MODEL, model.eval(), tiny_tokenizer, dataset=frame)
    return home, write_policy(home.parent / "loose.yaml", forget_f1_max=1.0)


def _cli_json(args: list[str], capsys) -> dict:
    from steuops.cli import main

    code = main([*args, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)["result"]


@pytest.mark.slow
def test_odd_labels_survive_the_whole_lifecycle(odd_home, tmp_path, capsys):
    import httpx
    import onnx

    from steuops import lineage
    from steuops.pipeline import apply, export, history, rollback
    from steuops.registry import ModelRef, Registry

    home, policy = odd_home
    registry = Registry(home)

    first = apply(MODEL, [SEPSIS], policy=policy, method_config=STEU, registry=registry, device="cpu")
    assert first.forget == [SEPSIS] and first.new_version == "2" and first.promoted.alias == "production"
    tags = registry.tags(ModelRef(MODEL, "2"))
    assert json.loads(tags[lineage.FORGOTTEN]) == [SEPSIS]  # a JSON list, never comma-joined
    assert json.loads(tags[lineage.FORGET_REQUESTED]) == [SEPSIS]
    assert [row.forgotten for row in history(MODEL, registry=registry)] == [[], [SEPSIS]]
    rows = _cli_json(["history", "--model", MODEL, "--home", str(home)], capsys)["versions"]
    assert rows[1]["forgotten"] == [SEPSIS]

    folder = tmp_path / "onnx"
    export(MODEL, out_dir=folder, registry=registry)
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    assert labels["labels"] == ODD and labels["forgotten"] == [SEPSIS]
    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx"), load_external_data=False).metadata_props}
    assert json.loads(props[lineage.META_FORGOTTEN]) == [SEPSIS] and json.loads(props[lineage.META_LABELS]) == ODD

    port = free_port()
    cmd = [sys.executable, "-m", "bentoml", "serve", "steuops.serving.service:Classifier",
           "--host", "127.0.0.1", "--port", str(port)]
    env = bento_env(tmp_path, STEUOPS_ONNX_DIR=str(folder))
    with running_server(cmd, env, port, tmp_path / "server.log") as base, httpx.Client(base_url=base, timeout=60) as http:
        meta = http.get("/metadata").json()
        assert meta["forgotten"] == [SEPSIS] and meta["version"] == "2"
        answer = http.post("/classify", json={"texts": ["fever, lactate 4.1, blood cultures drawn"]})
        assert answer.status_code == 200, answer.text
        scores = answer.json()[0]["scores"]
        assert sorted(scores) == sorted(c for c in ODD if c != SEPSIS)  # every other odd name, exactly once

    second = apply(MODEL, [CODE], policy=policy, method_config=STEU, registry=registry, device="cpu")
    assert second.requested == [CODE] and second.inherited == [SEPSIS] and second.new_version == "3"
    assert lineage.forgotten(registry.tags(ModelRef(MODEL, "3"))) == [CODE, SEPSIS]
    assert registry.load(ModelRef(MODEL, "3")).forgotten == [CODE, SEPSIS]

    back = rollback(MODEL, reason="ward reports missed 995.91 alerts", registry=registry)
    assert (back.from_version, back.to_version, back.reinstated_classes) == ("3", "2", [CODE])
    assert registry.alias_version(MODEL, "production") == "2"


def test_an_unknown_class_is_answered_with_the_labels_quoted_and_a_guess():
    """The hint quotes each label (one holds a comma), guesses the label a name differs from in case, by a typo or
    by a digit, and cuts a large head's list short."""
    from steuops.modeling import labels_hint

    quoted = "the model's labels are: " + ", ".join(repr(name) for name in ODD)
    assert labels_hint(ODD, ["sepsis, unspecified organism"]) == f"did you mean {SEPSIS!r}? {quoted}"
    assert labels_hint(ODD, ["995.9"]).startswith(f"did you mean {CODE!r}?")
    assert labels_hint(ODD, ["gout"]) == quoted
    many = [f"code {i:03d}" for i in range(300)]
    hint = labels_hint(many, ["cod 017"])
    assert hint.startswith("did you mean 'code 017'") and hint.endswith("'code 019' and 280 more"), hint
