"""The CLI around the registry: fast --help, --json envelopes, history, registry-down errors."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from registry_helpers import FAST_STEU, MODEL, registry_snapshot
from server_helpers import free_port

HEAVY = ("torch", "transformers", "mlflow", "bentoml", "great_expectations", "onnx", "onnxruntime", "pandas")


def _best_cpu(code: str, runs: int = 3) -> tuple[float, list[subprocess.CompletedProcess]]:
    """The least CPU time (user + system, interpreter start included) of `runs` fresh processes running `code`."""
    cpu, done = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done.append(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(cpu), done


def test_help_is_fast_and_imports_nothing_heavy():
    """`steuops --help` costs at most 0.25 s of CPU more than importing typer and its rich help renderer, which any
    typer CLI with rich help pays (0.34 s of the 0.37 s on the 2-core EPYC; an absolute bound there depended on the
    neighbours). CPU time, not wall time: this machine is shared by several jobs, and wall time measures them."""
    probe = (
        "import sys; from steuops.cli import main; code = main(['--help']); "
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; print(repr((code, heavy)), file=sys.stderr)"
    )
    floor, _ = _best_cpu("import typer, typer.rich_utils")
    cpu, runs = _best_cpu(probe)
    for done in runs:
        code, heavy = eval(done.stderr.strip().splitlines()[-1])  # noqa: S307  (our own repr)
        assert code == 0 and heavy == [], done.stderr
        for command in ("apply", "demo", "gate", "promote", "rollback", "history"):
            assert command in done.stdout
    assert cpu - floor < 0.25, f"steuops --help took {cpu:.2f}s of CPU, typer's own import {floor:.2f}s (best of 3)"


def test_the_steuops_process_is_main_with_the_gc_set_for_one_command():
    """`steuops` (the console script and `python -m steuops`) is cli.run(): main()'s exit code, with a larger first GC
    threshold and every object frozen at the end, so the interpreter's last collections skip them (bench/cli_gc.py
    measures the seconds saved). main() called in-process leaves the GC alone: a notebook's objects stay collectable."""
    import gc
    from importlib.metadata import entry_points

    from steuops import cli

    (script,) = entry_points(group="console_scripts", name="steuops")
    assert script.value == "steuops.cli:run"
    assert "run()" in (Path(cli.__file__).parent.parent / "__main__.py").read_text()
    probe = ("import gc, sys; from steuops import cli; sys.argv = ['steuops', *sys.argv[1:]]; code = cli.run(); "
             "print(repr((code, gc.get_threshold(), gc.get_freeze_count() > 0)), file=sys.stderr)")
    for args, code in ((["--version"], 0), (["history"], 2)):  # history without --model: bad input
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert eval(done.stderr.strip().splitlines()[-1]) == (code, cli.GC_THRESHOLD, True), done.stderr  # noqa: S307
    before = (gc.get_threshold(), gc.get_freeze_count())
    assert cli.main(["--version"]) == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_apply_help_lists_the_options(capsys):
    from steuops.cli import main

    assert main(["apply", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--model", "--forget", "--alias", "--version", "--cohort", "--method", "--policy",
                   "--promote", "--no-promote", "--device", "--dry-run", "--home", "--json", "--junit"):
        assert option in out, option


def test_apply_json_envelope_then_history(make_home, policies, notes_frame, capsys, monkeypatch):
    from steuops.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # the history table folds long cells at 80 columns
    home, registry = make_home()
    argv = ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy", str(policies["loose"]),
            "--config", json.dumps(FAST_STEU), "--device", "cpu", "--no-export", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    envelope = json.loads(captured.out)  # stdout holds the envelope and nothing else
    assert envelope["command"] == "apply" and envelope["ok"] and envelope["schema"] == "steuops/v1"
    result = envelope["result"]
    assert result["new_version"] == "2" and result["promoted"]["alias"] == "production"
    assert result["evaluation"]["before"]["per_class_f1"].keys() == result["evaluation"]["after"]["per_class_f1"].keys()
    ref = registry.resolve(MODEL, version="2")  # GX's own JSON is logged on the version, without note text
    assert registry.artifact_names(ref, "gx") == ["gx/expectation_suite.json", "gx/validation_result.json"]
    gx_result = registry.read_json_artifact(ref, "gx/validation_result.json")
    assert gx_result["success"] is True and gx_result["statistics"]["evaluated_expectations"] > 5
    logged = json.dumps(gx_result) + json.dumps(registry.read_json_artifact(ref, "gx/expectation_suite.json"))
    assert not any(text in logged for text in notes_frame["text"][:50])

    assert main(["history", "--model", MODEL, "--home", str(home), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["result"]["versions"]
    assert [r["version"] for r in rows] == ["1", "2"]
    assert rows[1]["parent"] == "1" and rows[1]["forgotten"] == ["sepsis"] and rows[1]["gate"] == "passed"
    assert rows[1]["policy"] == "loose" and set(rows[1]["aliases"]) == {"production"}  # promoted: no longer a candidate
    assert main(["history", "--model", MODEL, "--home", str(home)]) == 0
    table = capsys.readouterr().out
    assert "sepsis" in table and "passed" in table and "production" in table


def test_rejected_apply_json_carries_what_was_measured(make_home, policies, capsys, tmp_path):
    from steuops.cli import main

    home, registry = make_home()
    junit = tmp_path / "gate.xml"
    argv = ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy", str(policies["reject"]),
            "--config", json.dumps(FAST_STEU), "--device", "cpu", "--no-export", "--json", "--junit", str(junit)]
    assert main(argv) == 3
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["ok"] is False and envelope["result"]["type"] == "GateRejected"
    measured = envelope["result"]["result"]  # the rejected candidate: evaluation, gate, version
    assert measured["new_version"] == "2" and measured["gate"]["passed"] is False and measured["promoted"] is None
    assert [r["name"] for r in measured["gate"]["rules"] if not r["passed"]] == ["params_fraction"]
    assert "sepsis" in measured["evaluation"]["after"]["per_class_f1"] and junit.is_file()


def test_apply_text_output_and_dry_run(make_home, policies, capsys):
    from steuops.cli import main

    home, registry = make_home()
    base = ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy", str(policies["loose"]),
            "--config", json.dumps(FAST_STEU), "--device", "cpu", "--no-export"]
    before = registry_snapshot(registry)
    assert main([*base, "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dry run" in out and "k=16" in out and "loose" in out
    assert registry_snapshot(registry) == before
    assert main(base) == 0
    out = capsys.readouterr().out
    for needle in ("F1 before", "F1 after", "forgotten", "parameters modified", "time:", "gate", "promoted"):
        assert needle in out, needle
    assert main([*base, "--alias", "candidate", "--version", "1"]) == 2


def test_demo_refuses_a_home_that_already_has_the_model(make_home, capsys):
    from steuops.cli import main

    home, registry = make_home()
    before = registry_snapshot(registry)
    assert main(["demo", "--home", str(home)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert registry_snapshot(registry) == before


def test_registry_down_is_one_line_exit_2():
    """Exit 2 (unusable input: the registry the user pointed at cannot be used; nothing was changed),
    not 1 (a bug in steuops)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    for argv in (["history", "--model", MODEL], ["apply", "--model", MODEL, "--forget", "sepsis"]):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "steuops", *argv], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 2, done.stderr
        assert f"cannot reach the MLflow server at http://127.0.0.1:{port}" in done.stderr
        assert "Traceback" not in done.stderr
        assert time.perf_counter() - started < 60


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the demo (~4 min on the 2-core EPYC) and a second apply (~2 min): past the suite's 600 s
def test_demo_with_real_minilm_then_apply_as_typed(tmp_path):
    """`steuops demo` end to end as the README promises it (real MiniLM weights, the default notes and
    policy): it passes the gate and promotes. Then the next deletion exactly as the README types it,
    with the home taken from STEUOPS_HOME."""
    home = tmp_path / "demo-home"
    env = {**os.environ, "STEUOPS_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "steuops", "demo", "--device", "cpu", "--json"],
                          capture_output=True, text=True, env=env, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    envelope = json.loads(done.stdout)
    result = envelope["result"]["apply"]
    assert envelope["ok"] is True and result["gate"]["passed"] is True
    assert result["forget"] == ["sepsis"] and result["new_version"] == "2"
    assert result["promoted"] == {"alias": "production", "version": "2", "previous": "1"}
    recall = paraphrase_recall(home)
    # notes written by hand, never trained or tuned on: the demo classifier recognises every class however it is
    # written (the bar: 0.6), and the forgotten class is gone from them too
    assert min(recall["1"].values()) >= 0.6, recall
    assert recall["2"]["sepsis"] <= 0.1, recall
    # exactly as the README types it (the default policy promotes only with the ONNX export, so no --no-export)
    done = subprocess.run([sys.executable, "-m", "steuops", "apply", "--model", "clinical-dx", "--forget",
                           "pneumonia"], capture_output=True, text=True, env=env, timeout=1800, cwd=tmp_path)
    assert done.returncode in (0, 3), done.stderr[-3000:]
    assert "pneumonia" in done.stdout and "F1 before" in done.stdout
    # the demo's apply kept v2's held-out pass: this evaluation ran only the new version
    assert re.search(r"1,200\s+held-out\s+notes\s+was\s+read\s+back\s+from\s+the\s+audit\s+cache", done.stdout), \
        done.stdout[-3000:]
    # Rows are selected for sepsis again only if v2 still predicts it, by the rule that stops training: F1 = 2p / (1 + p)
    # over v2's training sepsis notes, p = the share whose sepsis logit is within STOP_MARGIN of the boundary
    # (steu.method.already_forgotten). Where the demo trained in fp32 (a Zen 3 host, 2026-11-30) that was 0: rows for
    # pneumonia alone, 99 against 180. Under bf16 autocast (a Zen 4 host, the same day) one note of 196 sat 0.015
    # inside the margin, F1 0.0101 > 0.01, and the apply selected for both. The output must say what v2's own logits
    # decide; a note within 0.005 of the margin may fall either way with float rounding, and then either is right.
    from steuops.methods.steu.method import STOP_MARGIN, STEUConfig

    logits = sepsis_logits(home)
    limit = STEUConfig().stop_forget_f1
    alone = re.search(r"token-embedding\s+rows\s+for\s+pneumonia\s+\+\s+the\s+head;\s+none\s+for\s+sepsis",
                      done.stdout)
    both = re.search(r"\(\d[\d,]*\s+token-embedding\s+rows\s+\+\s+the\s+head\)", done.stdout)
    said = (sorted(logits)[-3:], done.stdout[-3000:])
    if _stop_f1(logits > -STOP_MARGIN + 0.005) > limit:
        assert both and not alone, said
    elif _stop_f1(logits > -STOP_MARGIN - 0.005) <= limit:
        assert alone and not both, said


def _stop_f1(hit: np.ndarray) -> float:
    p = float(np.mean(hit))
    return 2 * p / (1 + p)


def sepsis_logits(home) -> np.ndarray:
    """v2's sepsis logit on each of its training notes that carry sepsis, as the next apply's teacher pass gives
    them (fp32, the version's settings). The demo's head is multi-label: each logit is read against 0 on its own."""
    from steuops import cohort as cohorts
    from steuops import modeling
    from steuops.inference import InferenceSettings
    from steuops.pipeline.unlearn import split_of
    from steuops.registry import Registry

    registry = Registry(home)
    ref = registry.resolve("clinical-dx", alias=None, version="2")
    loaded = registry.load(ref)
    assert modeling.is_multi_label(loaded.model)
    settings = InferenceSettings.resolve(loaded.tags, loaded.tokenizer)
    settings.apply_to(loaded.tokenizer)
    train = cohorts.to_notes(split_of(registry, ref, registry.logged_dataset(ref))[0])
    notes = train.subset(train.has_any(["sepsis"]))
    z = modeling.logits(loaded.model, loaded.tokenizer, notes.texts, max_length=settings.max_length,
                        device=modeling.resolve_device("cpu"))
    return z[:, modeling.label_names(loaded.model).index("sepsis")].astype(np.float64)


def paraphrase_recall(home) -> dict[str, dict[str, float]]:
    """Per-class recall of v1 and v2 of the demo model on tests/data/paraphrases.jsonl."""
    from pathlib import Path

    from steuops import modeling
    from steuops.data import Notes
    from steuops.demo.model import DEMO_MAX_LENGTH
    from steuops.registry import Registry

    rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "paraphrases.jsonl").read_text().splitlines()
            if line.strip()]
    notes = Notes([r["text"] for r in rows], [r["labels"] for r in rows])
    registry = Registry(home)
    out = {}
    for version in ("1", "2"):
        loaded = registry.load(registry.resolve("clinical-dx", alias=None, version=version))
        labels = modeling.label_names(loaded.model)
        pred = modeling.predict(modeling.logits(loaded.model, loaded.tokenizer, notes.texts, max_length=DEMO_MAX_LENGTH,
                                                device=modeling.resolve_device("cpu")), True).astype(bool)
        truth = notes.multi_hot(labels).astype(bool)
        out[version] = {c: float(pred[truth[:, j], j].mean()) for j, c in enumerate(labels)}
    return out
