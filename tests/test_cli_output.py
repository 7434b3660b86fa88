"""The CLI for CI: piped tables never wrap; `apply --data-docs`; a policy's own GX suite through `apply`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from registry_helpers import MODEL, registry_snapshot, write_policy

LONG_MODEL = "clinical-dx-" + "very-long-model-name-" * 5 + "end"
LONG_ALIAS = "production-approved-by-the-clinical-governance-board-of-the-hospital"
MARKER = "ZQXMARKER"
REASON = " ".join(["the ward reported a drop in recall"] * 4)


def test_history_piped_keeps_each_row_on_one_line(tmp_path, trained_tiny, tiny_tokenizer, capsys, monkeypatch):
    """`steuops history | grep production` must show the version number: no cell wraps when stdout
    is not a terminal, whatever the width of the terminal or COLUMNS would be."""
    from steuops.cli import main
    from steuops.registry import ModelRef, Registry

    monkeypatch.delenv("COLUMNS", raising=False)
    home = tmp_path / "home"
    registry = Registry(home)
    for _ in range(2):
        registry.log_base_model(LONG_MODEL, trained_tiny, tiny_tokenizer)
    registry.set_alias(LONG_MODEL, LONG_ALIAS, "1")
    registry.set_tags(ModelRef(LONG_MODEL, "1"), {"steuops.rollback_reason": REASON})
    assert main(["history", "--model", LONG_MODEL, "--home", str(home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(LONG_MODEL in line for line in lines)  # the title is not cut either
    rows = {m.group(1): line for line in lines if (m := re.match(r"\s*([0-9]+)\s", line))}
    assert set(rows) == {"1", "2"}, lines
    assert f"{LONG_ALIAS} (rollback: {REASON})" in rows["1"] and "production" in rows["2"]
    assert max(len(line) for line in lines) > 200  # wider than any terminal default: nothing folded


def _cohort_csv(frame, path: Path, *, duplicate: bool = False) -> Path:
    df = frame.copy()
    df["text"] = [f"{MARKER} {text}" for text in df["text"]]
    if duplicate:  # two notes with one text: our suite fails, and GX's partial lists would hold it
        df.loc[1, "text"] = df.loc[0, "text"]
    df["labels"] = ["|".join(labels) for labels in df["labels"]]
    df.to_csv(path, index=False)
    return path


def _dry_apply(home: Path, cohort: Path, policy: Path, *extra: str) -> list[str]:
    return ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--cohort", str(cohort),
            "--policy", str(policy), "--device", "cpu", "--dry-run", *extra]


def _files_with_marker(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]


def test_apply_data_docs_for_a_failing_cohort_has_no_text(make_home, notes_frame, tmp_path, capsys):
    from steuops.cli import main

    home, registry = make_home()
    before = registry_snapshot(registry)
    cohort = _cohort_csv(notes_frame, tmp_path / "cohort.csv", duplicate=True)
    policy = write_policy(tmp_path / "strict-dups.yaml")
    docs = tmp_path / "docs"
    text = policy.read_text(encoding="utf-8").replace("duplicate_text_fraction_max: 0.05",
                                                      "duplicate_text_fraction_max: 0.0")
    policy.write_text(text, encoding="utf-8")
    assert main(_dry_apply(home, cohort, policy, "--data-docs", str(docs))) == 2
    captured = capsys.readouterr()
    assert "2 rows share their text" in captured.err and f"data docs: {(docs / 'index.html').resolve()}" \
        in " ".join(captured.err.split())
    assert (docs / "index.html").is_file() and _files_with_marker(docs) == []
    assert MARKER not in captured.out + captured.err
    assert registry_snapshot(registry) == before


def test_apply_data_docs_for_a_passing_cohort_json_stdout_untouched(make_home, notes_frame, tmp_path, capsys):
    from steuops.cli import main

    home, _ = make_home()
    cohort = _cohort_csv(notes_frame, tmp_path / "cohort.csv")
    docs = tmp_path / "docs"
    argv = _dry_apply(home, cohort, write_policy(tmp_path / "loose.yaml"), "--data-docs", str(docs), "--json")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["result"]["dry_run"] is True  # stdout holds the envelope only
    assert (docs / "index.html").is_file() and _files_with_marker(docs) == []


def test_apply_data_docs_refuses_a_file_before_any_work(tmp_path, capsys):
    from steuops.cli import main

    target = tmp_path / "taken"
    target.write_text("x", encoding="utf-8")
    argv = ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(tmp_path / "none"),
            "--data-docs", str(target)]
    assert main(argv) == 2
    assert "--data-docs" in capsys.readouterr().err


@pytest.mark.parametrize("as_json", [False, True])
def test_policy_suite_failures_through_apply(make_home, notes_frame, tmp_path, capsys, as_json):
    from steuops.cli import main

    home, registry = make_home()
    before = registry_snapshot(registry)
    suite = tmp_path / "ward-suite.json"
    suite.write_text(json.dumps({"name": "ward", "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "text", "regex": "^Patient"}},
    ]}), encoding="utf-8")
    policy = write_policy(tmp_path / "with-suite.yaml")
    text = policy.read_text(encoding="utf-8").replace("cohort:\n", f"cohort:\n  expectation_suite: {suite}\n")
    policy.write_text(text, encoding="utf-8")
    cohort = _cohort_csv(notes_frame, tmp_path / "cohort.csv")
    assert main(_dry_apply(home, cohort, policy, *(["--json"] if as_json else []))) == 2
    captured = capsys.readouterr()
    if as_json:
        failures = json.loads(captured.out)["result"]["failures"]
    else:
        failures = [line.strip()[2:] for line in captured.err.splitlines() if line.strip().startswith("- ")]
    rows = len(notes_frame)
    assert failures == [
        f"{suite}: expectation 1 expect_table_row_count_to_be_between failed: observed {rows}",
        f"{suite}: expectation 2 expect_column_values_to_match_regex on column 'text' failed: "
        f"{rows} of {rows} rows unexpected",
    ], captured
    assert MARKER not in captured.out + captured.err and registry_snapshot(registry) == before


def test_a_ci_log_shows_steps_and_loops_with_counts_and_an_eta():
    """Without a terminal, progress is plain lines: a step's start and end, a loop's start with its count, a status
    line with percent and ETA at most every 10 s, and its end."""
    import io

    from steuops.cli.render import PlainProgress

    now = [100.0]
    log = io.StringIO()
    reporter = PlainProgress(log)
    reporter._clock = lambda: now[0]
    reporter.t0 = reporter.last_line = now[0]
    reporter("step audit", 0, 1)
    reporter("reference pass", 0, 4)
    now[0] += 5
    reporter("reference pass", 1, 4)  # within 10 s of the last line: no line
    now[0] += 6
    reporter("reference pass", 2, 4)
    now[0] += 11
    reporter("reference pass", 4, 4)
    reporter("edited pass", 0, 1)
    reporter("edited pass", 1, 1)
    reporter("step audit", 1, 1)
    assert log.getvalue().splitlines() == [
        "[   0.0s] audit started",
        "[   0.0s]   reference pass loop started (4 steps)",
        "[  11.0s]   reference pass loop 50% (2/4), ETA 11 s",
        "[  22.0s]   reference pass loop done in 22.0 s",
        "[  22.0s]   edited pass loop started (1 step)",
        "[  22.0s]   edited pass loop done in 0.0 s",
        "[  22.0s] audit done in 22.0 s",
    ]
