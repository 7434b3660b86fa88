"""The verdict holds end to end: exit codes on every path, only complete versions go forward, a home
moves, no temp folder is left behind, and no note text lands anywhere it was not put on purpose."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from registry_helpers import FAST_STEU, MODEL, registry_snapshot, write_policy

MARKER = "Zqxmarkerq"


def _both(capsys, argv: list[str]) -> tuple[int, int, dict]:
    """Exit code plain, exit code with --json, and the --json envelope (which must parse)."""
    from steuops.cli import main

    plain = main(argv)
    capsys.readouterr()
    code = main([*argv, "--json"])
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["ok"] is (code == 0), envelope
    return plain, code, envelope


def test_every_command_exits_0_2_3_with_and_without_json(make_home, policies, capsys, tmp_path):
    home, registry = make_home()
    h = ["--home", str(home)]
    fast = ["--config", json.dumps(FAST_STEU), "--device", "cpu", "--no-export"]
    apply = ["apply", "--model", MODEL, "--forget", "sepsis", *h, *fast]
    # apply: pass / gate reject / bad input (each run plain and --json)
    assert _both(capsys, [*apply, "--policy", str(policies["manual"])])[:2] == (0, 0)  # v2, v3: candidates
    assert _both(capsys, [*apply, "--policy", str(policies["reject"])])[:2] == (3, 3)  # v4, v5: rejected
    assert _both(capsys, [*apply, "--forget", "gout", "--policy", str(policies["loose"])])[:2] == (2, 2)
    gate = ["gate", "--model", MODEL, *h]
    assert _both(capsys, [*gate, "--version", "2", "--policy", str(policies["loose"])])[:2] == (0, 0)
    assert _both(capsys, [*gate, "--version", "2", "--policy", str(policies["reject"])])[:2] == (3, 3)
    assert _both(capsys, [*gate, "--version", "99", "--policy", str(policies["loose"])])[:2] == (2, 2)
    promote = ["promote", "--model", MODEL, *h, "--policy", str(policies["loose"])]
    assert _both(capsys, [*promote, "--version", "2", "--policy", str(policies["reject"])])[:2] == (3, 3)
    assert _both(capsys, [*promote, "--version", "99"])[:2] == (2, 2)
    from steuops.cli import main

    assert main([*promote, "--version", "2"]) == 0  # production 1 -> 2
    rollback = ["rollback", "--model", MODEL, *h]
    assert main([*rollback, "--reason", "check"]) == 0  # back to 1
    assert main([*promote, "--version", "3", "--json"]) == 0
    capsys.readouterr()
    assert _both(capsys, [*rollback, "--reason", " "])[:2] == (2, 2)
    assert main([*rollback, "--reason", "check", "--json"]) == 0
    capsys.readouterr()
    assert _both(capsys, ["history", "--model", MODEL, *h])[:2] == (0, 0)
    assert _both(capsys, ["history", "--model", "nope", *h])[:2] == (2, 2)
    assert _both(capsys, ["policy", "check", str(policies["loose"])])[:2] == (0, 0)
    assert _both(capsys, ["policy", "check", str(tmp_path / "missing.yaml")])[:2] == (2, 2)
    assert _both(capsys, ["export", "--model", MODEL, "--version", "99", *h])[:2] == (2, 2)
    assert _both(capsys, ["report", "--model", MODEL, "--version", "99", *h])[:2] == (2, 2)


def _half_made(home: Path, registry, policies):
    """A passing candidate whose export never happened (as after a crash): registered, incomplete."""
    from steuops import lineage
    from steuops.pipeline import apply

    result = apply(MODEL, ["sepsis"], home=home, policy=policies["manual"], method_config=FAST_STEU, device="cpu",
                   export=False)
    ref = registry.resolve(MODEL, version=result.new_version)
    required = json.loads(registry.tags(ref)[lineage.REQUIRED])
    registry.set_tags(ref, {lineage.STATUS: lineage.STATUS_INCOMPLETE, lineage.REQUIRED: json.dumps([*required, "onnx"])})
    return ref


def test_an_incomplete_version_is_refused_until_its_export_completes_it(make_home, policies, capsys):
    from steuops.cli import main
    from steuops.data import Notes
    from steuops.pipeline.unlearn import gated_logits, held_out_notes

    home, registry = make_home()
    ref = _half_made(home, registry, policies)
    for command in ("gate", "promote"):
        assert main([command, "--model", MODEL, "--version", ref.version, "--home", str(home),
                     "--policy", str(policies["loose"])]) == 2
        err = capsys.readouterr().err
        assert "incomplete" in err and "missing onnx" in err, err
    assert main(["history", "--model", MODEL, "--home", str(home), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["result"]["versions"]
    assert rows[-1]["status"] == "incomplete"
    assert main(["export", "--model", MODEL, "--version", ref.version, "--home", str(home), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)["result"]
    assert exported["completed"] is True
    # checked against the logits its gate scored (logged by apply), on every held-out note
    held_out = held_out_notes(registry, ref)
    assert exported["parity"]["optimized"]["reference"] == "evaluation"
    assert exported["parity"]["optimized"]["n_texts"] == len(held_out)
    logits = gated_logits(registry, ref, held_out)
    assert logits.shape == (len(held_out), len(registry.load(ref).labels))
    other = Notes(held_out.texts[::-1], held_out.labels[::-1])  # the same notes in another order: not theirs
    assert gated_logits(registry, ref, other) is None and gated_logits(registry, ref, None) is None
    assert main(["export", "--model", MODEL, "--version", ref.version, "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "parity with the logits the gate scored" in out  # the terminal says which
    assert "its held-out scores are reused" in out  # exported again: the same bytes, the earlier figures
    assert main(["export", "--model", MODEL, "--version", ref.version, "--home", str(home), "--rescore",
                 "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)["result"]["parity"]["optimized"]
    assert rescored["n_texts"] == len(held_out) and "held_out" not in rescored
    assert registry.tags(ref)["steuops.status"] == "complete"
    assert main(["promote", "--model", MODEL, "--version", ref.version, "--home", str(home),
                 "--policy", str(policies["loose"])]) == 0
    assert registry.alias_version(MODEL, "production") == ref.version


def test_the_default_policy_never_promotes_a_version_without_onnx(make_home, policies, capsys):
    """promotion.require_onnx (default true): --no-export with promotion is refused up front, and a
    complete version that has no onnx/ is refused by promote."""
    from steuops.cli import main

    home, registry = make_home()
    strictish = policies["loose"].with_name("needs-onnx.yaml")
    strictish.write_text(policies["loose"].read_text().replace("require_onnx: false", "require_onnx: true"))
    before = registry_snapshot(registry)
    argv = ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy", str(strictish),
            "--config", json.dumps(FAST_STEU), "--device", "cpu", "--no-export"]
    assert main(argv) == 2 and "require_onnx" in capsys.readouterr().err
    assert registry_snapshot(registry) == before
    assert main([*argv, "--no-promote"]) == 0  # v2: complete, no ONNX
    capsys.readouterr()
    assert main(["promote", "--model", MODEL, "--version", "2", "--home", str(home), "--policy", str(strictish)]) == 2
    assert "missing onnx" in capsys.readouterr().err
    assert registry.alias_version(MODEL, "production") == "1"


def test_a_home_copied_elsewhere_works_after_the_original_is_gone(make_home, policies, tmp_path, capsys):
    from steuops.cli import main
    from steuops.registry import Registry
    from steuops.serving import download

    home, registry = make_home()
    assert main(["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy",
                 str(policies["loose"]), "--config", json.dumps(FAST_STEU), "--device", "cpu"]) == 0
    moved = tmp_path / "restored" / "home"
    shutil.copytree(home, moved)
    shutil.rmtree(home)
    capsys.readouterr()
    h = ["--home", str(moved)]
    assert main(["gate", "--model", MODEL, "--version", "2", *h, "--policy", str(policies["loose"])]) == 0
    assert main(["history", "--model", MODEL, *h]) == 0
    copy = Registry(moved)
    assert copy.load(copy.resolve(MODEL)).labels  # model files come from the copy
    folder, _ = download(MODEL, alias="production", version=None, home=str(moved))
    assert (folder / "model.onnx").is_file()
    assert main(["rollback", "--model", MODEL, *h, "--reason", "moved"]) == 0
    assert main(["apply", "--model", MODEL, "--forget", "pneumonia", *h, "--policy", str(policies["loose"]),
                 "--config", json.dumps(FAST_STEU), "--device", "cpu", "--no-export"]) == 0
    assert not home.exists()


def _marked_cohort(frame, path: Path) -> Path:
    marked = frame.copy()
    for i in range(0, len(marked), 7):  # a unique marker inside many notes, of every class
        marked.at[i, "text"] = f"{marked.at[i, 'text']} {MARKER} was here. Seen by {MARKER}."
    marked.to_json(path, orient="records", lines=True)
    return path


def _every_text(registry, home: Path) -> str:
    """Every tag, param, metric and artifact byte in the registry, as one searchable string."""
    client = registry._client
    parts: list[str] = []
    for model in client.search_registered_models():
        parts += [json.dumps(dict(model.tags or {})), model.description or ""]
        for mv in client.search_model_versions(f"name='{model.name}'"):
            parts += [json.dumps(dict(mv.tags or {})), mv.description or ""]
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            parts += [json.dumps(run.data.tags), json.dumps(run.data.params), json.dumps(run.data.metrics)]
    for path in home.rglob("*"):
        if path.is_file() and path.suffix != ".parquet":  # the logged dataset is the user's own, on purpose
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


@pytest.mark.slow
def test_no_note_text_reaches_the_registry_logs_or_reports(make_home, policies, notes_frame, tmp_path, capsys):
    from steuops.cli import main

    home, registry = make_home(dataset=False)
    cohort = _marked_cohort(notes_frame, tmp_path / "cohort.jsonl")
    audited = policies["loose"].with_name("audited.yaml")
    audited.write_text(policies["loose"].read_text() + "audit:\n  bypass_f1_max: 1.0\n")
    apply = ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--cohort", str(cohort),
             "--config", json.dumps(FAST_STEU), "--device", "cpu"]
    assert main([*apply, "--policy", str(audited), "--audit"]) == 0  # audit + report + export + promote
    # a failed apply (from v1: v2, now production, already forgets sepsis, so from there apply has nothing to do)
    assert main([*apply, "--version", "1", "--policy", str(policies["reject"])]) == 3
    assert main(["report", "--model", MODEL, "--version", "2", "--home", str(home), "--out",
                 str(tmp_path / "report.html")]) == 0
    assert main(["export", "--model", MODEL, "--version", "2", "--home", str(home), "--out",
                 str(tmp_path / "onnx")]) == 0
    said = capsys.readouterr()
    assert re.search(r"audit: [\d.]+ s; encoder passes [\d.]+ s \(", said.out), "apply --audit says where its time went"
    haystack = "\n".join([_every_text(registry, home), said.out, said.err,
                          (tmp_path / "report.html").read_text()])
    assert len(haystack) > 10_000  # the search read real content
    assert MARKER.lower() not in haystack.lower()


def test_commands_leave_nothing_in_the_temp_folder(make_home, policies, tmp_path):
    """apply, gate, promote, history, rollback and export in one process with a private TMPDIR:
    after it exits, the folder is empty."""
    import subprocess
    import sys

    home, registry = make_home()
    private = tmp_path / "tmp"
    private.mkdir()
    h = ["--home", str(home)]
    commands = [["apply", "--model", MODEL, "--forget", "sepsis", *h, "--policy", str(policies["manual"]),
                 "--config", json.dumps(FAST_STEU), "--device", "cpu"],
                ["gate", "--model", MODEL, "--version", "2", *h, "--policy", str(policies["loose"])],
                ["promote", "--model", MODEL, "--version", "2", *h, "--policy", str(policies["loose"])],
                ["history", "--model", MODEL, *h],
                ["export", "--model", MODEL, "--version", "2", *h],
                ["rollback", "--model", MODEL, *h, "--reason", "temp check"]]
    script = ("import json, sys\nfrom steuops.cli import main\n"
              "codes = [main(argv) for argv in json.loads(sys.argv[1])]\nprint(json.dumps(codes))\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(private)}, timeout=600)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0] * len(commands), done.stderr[-3000:]
    left = sorted(p.name for p in private.iterdir())
    assert left == [], left


@pytest.fixture()
def read_only_copy(tmp_path):
    """Copy a folder onto a tmpfs, then remount it read-only (a home on a read-only disk). Needs root."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a read-only file system needs root")

    def copy(folder: Path) -> Path:
        shutil.copytree(folder, mount / folder.name)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        return mount / folder.name

    try:
        yield copy
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_home_on_a_read_only_disk_is_refused_before_any_work(make_home, policies, read_only_copy, capsys):
    from steuops.cli import main

    home, _ = make_home()
    frozen = read_only_copy(home)
    code = main(["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(frozen), "--policy",
                 str(policies["loose"]), "--config", json.dumps(FAST_STEU), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "not writable" in err and "Traceback" not in err, err
    assert "load started" not in err and "unlearn started" not in err  # refused before the model loaded


def test_a_broken_cohort_file_is_reported_before_the_model_is_loaded(make_home, policies, tmp_path, capsys):
    """The registered model's weights are gone, so loading it would fail: the cohort error comes first."""
    from steuops.cli import main

    home, _ = make_home()
    for weights in (home / "artifacts").rglob("model.safetensors"):
        weights.unlink()
    bad = tmp_path / "no_text.csv"
    bad.write_text("note_id,labels\nN1,sepsis\n", encoding="utf-8")
    code = main(["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--cohort", str(bad),
                 "--policy", str(policies["loose"]), "--config", json.dumps(FAST_STEU), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no_text.csv" in err and "text" in err, err
    assert "load started" not in err


def test_apply_selects_no_word_that_only_a_few_patients_notes_contain(tiny_notes, tmp_path):
    """Marker words that the tokenizer knows, in two forget notes: the default policy's min_patients
    keeps them out of the selection, so no artifact of the new version names them."""
    import pandas as pd

    from steuops.demo.notes import to_frame
    from steuops.pipeline import apply
    from steuops.registry import Registry
    from steuops.tiny import classifier, wordpiece_tokenizer

    words = ["pigeons", "attic", "foundry", "quifeath"]
    frame = to_frame(tiny_notes)
    sepsis = [i for i, labels in enumerate(frame["labels"]) if "sepsis" in labels][:2]
    for i in sepsis:
        frame.at[i, "text"] = " ".join(words * 3) + f". {frame.at[i, 'text']}"  # first: inside max_length
    tokenizer = wordpiece_tokenizer(list(frame["text"]), vocab_size=5000)
    assert all(tokenizer.convert_tokens_to_ids(w) != tokenizer.unk_token_id for w in words)  # real vocabulary
    labels = sorted({c for names in frame["labels"] for c in names})
    home = tmp_path / "home"
    registry = Registry(home)
    registry.log_base_model(MODEL, classifier(labels, vocab_size=len(tokenizer)), tokenizer)
    cohort = tmp_path / "cohort.parquet"
    pd.DataFrame(frame).to_parquet(cohort, index=False)
    config = {**FAST_STEU, "k": 400, "scorer": "pmi", "min_patients": 1,  # the policy's floor (5) must still win
              "stop_forget_f1": 0.5}  # and early stopping may not stop above the gate's forget limit
    result = apply(MODEL, ["sepsis"], home=home, cohort=cohort,
                   policy=write_policy(tmp_path / "p.yaml", forget_f1_max=0.2),
                   method_config=config, device="cpu", export=False)
    assert result.params["min_patients"] == 5 and result.edit["k"] > 0
    assert result.params["stop_forget_f1"] == 0.2
    ref = registry.resolve(MODEL, version=result.new_version)
    texts = [json.dumps(result.to_dict())]
    for name in registry.artifact_names(ref):
        local = registry.download_artifact(ref, name, tmp_path / "dl" / Path(name).name)
        files = [local] if local.is_file() else [p for p in local.rglob("*") if p.is_file()]
        texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    found = "\n".join(texts).lower()
    assert "edit.json" in found or any("token_ids" in t for t in texts)  # the edit was among what we read
    assert [w for w in words if w in found] == []
