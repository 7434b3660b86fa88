"""steuops.pipeline.apply end to end on an embedded registry, and every bad input through the CLI:
exit 2, one line, and the registry byte-for-byte as before."""

from __future__ import annotations

import json
import re

import pytest
from registry_helpers import FAST_STEU, MODEL, registry_snapshot

from steuops.errors import GateRejected


def _apply(home, forget, policy, **kw):
    from steuops.pipeline import apply

    return apply(MODEL, forget, home=home, policy=policy, method_config=kw.pop("method_config", FAST_STEU),
                 device="cpu", export=kw.pop("export", False), **kw)


def test_apply_end_to_end(make_home, policies):
    import torch

    from steuops import lineage, modeling
    from steuops import policy as policy_mod
    from steuops.edit import TokenEdit

    home, registry = make_home()
    result = _apply(home, ["sepsis"], policies["loose"], export=True)
    assert result.parent_version == "1" and result.new_version == "2"
    assert result.forget == ["sepsis"] and result.inherited == []
    assert result.passed is True
    assert result.to_dict()["promoted"] == {"alias": "production", "version": "2", "previous": "1"}
    # Aliases and tags on the registry, not just in the result.
    assert registry.alias_version(MODEL, "production") == "2"
    assert registry.alias_version(MODEL, "candidate") is None  # promoted: no longer a mere candidate
    tags = registry.tags(registry.resolve(MODEL, version=2))
    assert tags["steuops.parent_version"] == "1"
    assert lineage.forgotten(tags) == ["sepsis"]
    assert tags["steuops.method"] == "steu"
    # what the edit's steps ran in: FAST_STEU leaves cpu_bf16 off, so fp32 on any CPU, bf16 host or not
    assert tags["steuops.precision"] == result.precision == result.to_dict()["precision"] == "fp32"
    assert tags["steuops.policy"] == "loose"
    assert tags["steuops.policy_sha256"] == policy_mod.sha256(policies["loose"])
    assert tags["steuops.gate"] == tags["gate"] == "passed"
    assert len(tags["steuops.cohort_sha256"]) == 64
    assert "steuops.onnx_sha256" in tags  # export ran on the new version
    ref = registry.resolve(MODEL, version=2)
    names = set(registry.artifact_names(ref))
    assert {"edit", "evaluation.json", "validation.json", "gate.json", "onnx"} <= names
    assert registry.read_json_artifact(ref, "evaluation.json") == result.evaluation
    # the registered files were checked against the logits the gate scored, on every held-out note (CPU: fp32)
    manifest = json.loads((registry.download_artifact(ref, "onnx") / "manifest.json").read_text())
    served = manifest["parity"]["optimized"]
    assert served["reference"] == "evaluation" and served["passed"]
    assert served["n_texts"] == result.evaluation["n_test"] == result.cohort["test_rows"]
    # Cohort text never reaches MLflow: no note text in tags, params or the JSON artifacts.
    text = notes_frame_text(registry)
    run = registry._client.get_run(registry.run_id(ref))
    logged = json.dumps([run.data.params, run.data.tags, tags, registry.read_json_artifact(ref, "apply.json"),
                         registry.read_json_artifact(ref, "validation.json")])
    assert not any(t in logged for t in text)
    # The result is what --json prints: before/after per class, params, seconds per step.
    data = result.to_dict()
    assert set(data["evaluation"]["before"]["per_class_f1"]) == set(data["evaluation"]["labels"])
    assert data["evaluation"]["params_modified"] > 0 and data["evaluation"]["params_fraction"] < 0.5
    assert {"check", "load", "cohort", "validate", "unlearn", "evaluate", "register", "promote", "export"} <= set(
        data["seconds"])
    assert data["cohort"]["split"] == "column" and data["cohort"]["test_rows"] > 0
    # The new version loads and is a different model from its parent, by exactly its edit: the edited
    # embedding rows and the head hold the edit's values, every other weight is the parent's, bit for bit.
    parent, child = registry.load(registry.resolve(MODEL, version=1)), registry.load(ref)
    assert child.labels == parent.labels
    edit = TokenEdit.load(registry.download_artifact(ref, "edit"))
    assert 0 < len(edit.token_ids) == result.edit["k"] <= FAST_STEU["k"]  # k at most: few eligible tokens here
    before, after = parent.model.state_dict(), child.model.state_dict()
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    embedding, head = modeling.embedding_param_name(child.model), set(modeling.head_param_names(child.model))
    assert embedding in changed and changed <= {embedding, *head}, changed
    rows = set((before[embedding] != after[embedding]).any(dim=1).nonzero().flatten().tolist())
    assert rows and rows <= set(edit.token_ids)
    assert torch.equal(after[embedding][edit.token_ids], edit.rows)
    assert torch.equal(before[embedding][edit.token_ids], edit.original_rows)
    assert set(edit.head) == head and all(torch.equal(after[name], edit.head[name]) for name in head)


def notes_frame_text(registry) -> list[str]:
    frame = registry.logged_dataset(registry.resolve(MODEL, version=1))
    return [t for t in frame["text"] if len(t) > 40][:50]


def test_gate_reject_keeps_version_and_production(make_home, policies):
    home, registry = make_home()
    with pytest.raises(GateRejected) as exc:
        _apply(home, ["sepsis"], policies["reject"])
    assert exc.value.exit_code == 3 and "params_fraction" in str(exc.value)
    assert registry.alias_version(MODEL, "production") == "1"
    assert registry.alias_version(MODEL, "candidate") == "2"  # rejected, kept to inspect
    tags = registry.tags(registry.resolve(MODEL, version=2))
    assert tags["steuops.gate"] == "rejected" and tags["gate"] == "rejected"
    assert registry.read_json_artifact(registry.resolve(MODEL, version=2), "gate.json")["passed"] is False


def test_sequential_deletions_keep_both_forgotten(make_home, policies, monkeypatch, capsys):
    from steuops import lineage, metrics

    home, registry = make_home()
    first = _apply(home, ["sepsis"], policies["loose"])
    assert first.reused == {}, "v1 was registered by hand: no apply kept its held-out pass"
    ran: list[int] = []
    real = metrics._logits_on

    def counted(model, tokenizer, texts, *args):
        ran.append(len(texts))
        return real(model, tokenizer, texts, *args)

    monkeypatch.setattr(metrics, "_logits_on", counted)
    # No cohort (the logged dataset, found via the parent) and no method options (v2 recorded them).
    from steuops.pipeline import apply

    second = apply(MODEL, ["pneumonia"], home=home, policy=policies["loose"], device="cpu", export=False)
    # the first apply kept v2's pass over the held-out notes (the same split of the same cohort): the second
    # evaluation read it back and ran only the edited model, on the notes with an edited token
    held_out = second.cohort["test_rows"]
    assert second.reused == {"held_out": held_out}
    assert sum(ran) < held_out, ran
    monkeypatch.setattr(metrics, "_logits_on", real)
    # ...and scored exactly what full passes of both versions score
    from steuops import cohort
    from steuops.inference import InferenceSettings

    parent, edited = (registry.load(registry.resolve(MODEL, version=v)) for v in ("2", "3"))
    frame = cohort.normalise(registry.logged_dataset(registry.resolve(MODEL, version=2)))
    test = cohort.to_notes(cohort.split(frame)[1])
    assert len(test) == held_out
    direct = metrics.evaluate(parent.model, edited.model, parent.tokenizer, test, ["pneumonia", "sepsis"], device="cpu",
                              settings=InferenceSettings.from_tags(edited.tags))
    for key in ("before", "after", "params_modified", "support"):
        assert second.evaluation[key] == direct.to_dict()[key], key
    assert second.params["k"] == FAST_STEU["k"] and second.params["epochs"] == FAST_STEU["epochs"]
    assert second.parent_version == first.new_version == "2"
    assert second.new_version == "3"
    assert second.requested == ["pneumonia"] and second.inherited == ["sepsis"]
    assert set(second.evaluation["forget"]) == {"sepsis", "pneumonia"}
    assert lineage.forgotten(registry.tags(registry.resolve(MODEL))) == ["pneumonia", "sepsis"]
    assert registry.alias_version(MODEL, "production") == "3"
    rows = {r.version: r for r in registry.versions(MODEL)}
    assert rows["3"].parent == "2" and rows["2"].parent == "1" and rows["1"].parent is None

    # The same deletion requests again: v3 already forgets both classes, so apply trains and registers nothing
    # and says since which version each is gone, through the CLI too (exit 0, plain and --json).
    before = registry_snapshot(registry)
    again = apply(MODEL, ["sepsis", "pneumonia"], home=home, policy=policies["loose"], device="cpu", export=False)
    assert again.nothing_to_do and again.already_forgotten == {"sepsis": "2", "pneumonia": "3"}
    assert again.new_version is None and again.evaluation is None and again.gate is None
    from steuops.cli import main

    junit = home / "gate.xml"
    junit.write_text("<stale/>")  # a report left by an earlier run must not stand in for this one
    assert main(["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy",
                 str(policies["loose"]), "--junit", str(junit)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing to do: v3 already forgets sepsis (since v2); no version was made" in out, out
    import xml.etree.ElementTree as ET

    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("1", "1", "0")
    (case,) = suite.findall("testcase")
    assert case.get("name") == "forget sepsis"
    assert case.find("skipped").get("message") == "v3 already forgets sepsis (since v2); no version was made"
    assert main(["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy",
                 str(policies["loose"]), "--json"]) == 0
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["ok"] and envelope["result"]["nothing_to_do"] is True
    assert envelope["result"]["already_forgotten"] == {"sepsis": "2"} and envelope["result"]["new_version"] is None
    assert registry_snapshot(registry) == before
    # a version that still predicts the class is not held back: from v2, pneumonia is a real deletion
    partial = apply(MODEL, ["pneumonia", "sepsis"], version=2, home=home, policy=policies["loose"], device="cpu",
                    export=False, dry_run=True)
    assert partial.already_forgotten == {"sepsis": "2"} and not partial.nothing_to_do


def test_a_class_forgotten_under_a_looser_policy_is_forgotten_again(make_home, policies, tmp_path):
    """v2 'forgot' heart failure under a policy that takes any forget F1 (an edit that barely moved it). The same
    request under that policy has nothing to do; under one that wants forget F1 <= 0.01 it is real work from v2."""
    from registry_helpers import write_policy

    home, registry = make_home()
    gone = "heart failure"  # the tiny model predicts it (held-out F1 about 0.6), unlike sepsis (0)
    shallow = _apply(home, [gone], policies["loose"], method_config={**FAST_STEU, "lr": 1e-9, "head_lr": 1e-9})
    assert shallow.evaluation["after"]["forget_f1_per_class"][gone] > 0.01
    assert registry.alias_version(MODEL, "production") == "2"
    again = _apply(home, [gone], policies["loose"], dry_run=True)
    assert again.nothing_to_do and again.already_forgotten == {gone: "2"}
    firm = _apply(home, [gone], write_policy(tmp_path / "firm.yaml", forget_f1_max=0.01), dry_run=True)
    assert not firm.nothing_to_do and firm.already_forgotten == {} and firm.parent_version == "2"


def test_dry_run_writes_nothing(make_home, policies):
    home, registry = make_home()
    before = registry_snapshot(registry)
    result = _apply(home, ["sepsis"], policies["loose"], dry_run=True)
    assert result.dry_run and result.new_version is None and result.evaluation is None
    assert result.params["k"] == FAST_STEU["k"] and result.cohort["forget_rows"] > 0
    assert registry_snapshot(registry) == before


def test_the_method_trains_at_the_length_the_version_reads(tmp_path, trained_tiny, tiny_tokenizer, notes_frame,
                                                           policies):
    """A version that reads 48 tokens from the left: the edit is trained at 48 unless the options set max_length
    (any method; the options of the version's own method record win too), and the evaluation reads 48."""
    from steuops.inference import InferenceSettings
    from steuops.registry import Registry

    home = tmp_path / "home"
    registry = Registry(home)
    registry.log_base_model(MODEL, trained_tiny, tiny_tokenizer, dataset=notes_frame,
                            settings=InferenceSettings(48, "left"))
    options = {k: v for k, v in FAST_STEU.items() if k != "max_length"}
    for method, config in (("steu", options), ("head_only", {"epochs": 1})):
        read = _apply(home, ["sepsis"], policies["loose"], method=method, method_config=config, dry_run=True)
        assert read.params["max_length"] == 48, method
    given = _apply(home, ["sepsis"], policies["loose"], method_config={**options, "max_length": 32})
    assert given.params["max_length"] == 32
    assert InferenceSettings.from_tags(registry.tags(registry.resolve(MODEL, version=2))) == InferenceSettings(48, "left")


def test_cohort_file_and_no_promote(make_home, policies, tmp_path, notes_frame):
    home, registry = make_home(dataset=False)
    path = tmp_path / "cohort.jsonl"
    notes_frame.to_json(path, orient="records", lines=True)
    result = _apply(home, ["sepsis"], policies["loose"], cohort=path, promote=False)
    assert result.cohort["source"] == str(path) and result.promoted is None
    assert registry.alias_version(MODEL, "production") == "1"
    assert registry.alias_version(MODEL, "candidate") == "2"


# ---- bad input: exit 2, one line, nothing changed --------------------------------------------
def _bad_cohorts(folder, frame):
    """Cohort files that must be refused, by name."""
    files = {}
    missing = folder / "missing_columns.csv"
    frame[["note_id", "text"]].to_csv(missing, index=False)
    files["missing columns"] = missing
    empty = folder / "empty.csv"
    empty.write_text("", encoding="utf-8")
    files["empty file"] = empty
    header_only = folder / "header_only.csv"
    header_only.write_text("text,labels\n", encoding="utf-8")
    files["no rows"] = header_only
    garbage = folder / "corrupt.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all")
    files["unreadable"] = garbage
    latin = folder / "latin1.csv"
    latin.write_bytes("text,labels\n\"patient caf\xe9 with sepsis\",sepsis\n".encode("latin-1"))
    files["wrong encoding"] = latin
    unknown = frame.copy()
    unknown.loc[0, "labels"] = ["sepsis", "gout"]
    path = folder / "unknown_labels.jsonl"
    unknown.to_json(path, orient="records", lines=True)
    files["label outside the model's set"] = path
    no_forget = frame[[("sepsis" not in x) for x in frame["labels"]]]
    path = folder / "no_forget.jsonl"
    no_forget.to_json(path, orient="records", lines=True)
    files["no forget rows"] = path
    return files


PROGRESS_LINE = re.compile(r"^\[\s*[\d.]+s\] ")


def _files(home) -> set[str]:
    return {str(p.relative_to(home)) for p in (home / "artifacts").rglob("*")}


def test_bad_inputs_exit_2_and_change_nothing(make_home, policies, tmp_path, notes_frame, capsys):
    from steuops.cli import main

    home, registry = make_home()
    before, files_before = registry_snapshot(registry), _files(home)
    base = ["apply", "--model", MODEL, "--home", str(home), "--policy", str(policies["loose"]), "--device", "cpu",
            "--config", json.dumps(FAST_STEU)]
    cases = {
        "unknown model": (["apply", "--model", "nope", "--forget", "sepsis", "--home", str(home)], "unknown model"),
        "unknown alias": (base + ["--forget", "sepsis", "--alias", "staging"], "no alias 'staging'"),
        "unknown version": (base + ["--forget", "sepsis", "--version", "7"], "no version 7"),
        "unknown forget class": (base + ["--forget", "gout"], "'gout'"),
        "a class in the wrong case": (base + ["--forget", "Sepsis"], "did you mean 'sepsis'?"),
        "bad method option": (["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home),
                               "--config", '{"kk": 1}'], "kk"),
        "bad policy": (base + ["--forget", "sepsis", "--policy", str(tmp_path / "nope.yaml")], "nope.yaml"),
        # k=0 selects no rows: refused with the options, before the registry is read (the model name is unknown
        # too, and that error would come first if it were not)
        "no rows to edit": (["apply", "--model", "nope", "--forget", "sepsis", "--home", str(home),
                             "--config", '{"k": 0}'], "invalid k"),
        # options that only the model can check are checked as it loads: a dry run refuses them too
        "k over the vocabulary": (base[:-1] + ['{"k": 1000000}', "--forget", "sepsis", "--dry-run"],
                                  "k=1000000 but the tokenizer has"),
        "layers over the encoder": (base[:-2] + ["--method", "grad_ascent", "--config", '{"layers": 99}',
                                                 "--forget", "sepsis", "--dry-run"], "layers=99 but the encoder has"),
    }
    needles = {"label outside the model's set": "'gout'", "no forget rows": "sepsis"}
    for name, path in _bad_cohorts(tmp_path, notes_frame).items():
        cases[name] = (base + ["--forget", "sepsis", "--cohort", str(path)], needles.get(name, path.name))
    for name, (argv, needle) in cases.items():
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, f"{name}: exit {code}\n{err}"
        flat = " ".join(err.split()).replace("/ ", "/")  # rich wraps long lines at the console width
        said = [line for line in err.splitlines() if not PROGRESS_LINE.match(line)]  # "[  0.3s] cohort started"
        assert said[0].startswith("error:") and needle in "".join(said), f"{name}: {flat}"
        assert "Traceback" not in err, name
        assert registry_snapshot(registry) == before, f"{name} changed the registry"
    assert _files(home) == files_before  # no artifact was written either


@pytest.mark.slow
def test_audit_runs_before_the_gate_and_is_logged(make_home, policies, tmp_path):
    """A policy with an audit limit makes apply audit the candidate; the figures reach the gate."""
    text = policies["loose"].read_text().replace("promotion:", "audit:\n  relearn_f1_max: 1.0\npromotion:")
    policy = tmp_path / "audited.yaml"
    policy.write_text(text)
    home, registry = make_home()
    result = _apply(home, ["sepsis"], policy)
    assert "audit" in result.seconds and result.audit is not None
    timing = result.audit["time"]  # where the audit's time went: encoder passes apart from the attacks
    assert timing["seconds"] >= timing["passes"] >= 0 and timing["seconds"] <= result.seconds["audit"] + 0.1
    gate = result.to_dict()["gate"]
    assert any(r["name"] == "audit_relearn_f1" for r in gate["rules"])
    names = set(registry.artifact_names(registry.resolve(MODEL, version=result.new_version)))
    assert {"audit.json", "report.html", "report.json"} <= names
    # the logged report is rendered after the verdict: it carries the gate table
    ref = registry.resolve(MODEL, version=result.new_version)
    logged = registry.read_json_artifact(ref, "report.json")
    assert logged["gate"]["passed"] == gate["passed"] and len(logged["gate"]["rules"]) == len(gate["rules"])
    assert "audit_relearn_f1" in registry.download_artifact(ref, "report.html", tmp_path / "page").read_text()
