"""Great Expectations as its users know it: the suite and the validation result as GX JSON, a Data Docs
site, and a user's own suite named by the policy. None of it may carry note text."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from steuops import cohort, validation
from steuops import policy as policies
from steuops.errors import PolicyError, ValidationFailed

LABELS = ["sepsis", "pneumonia", "heart failure"]
MARKER = "ZQXMARKER"  # in every note text; must never reach a file, a report or an error line


def _cohort(n_forget: int = 30, n_retain: int = 120) -> pd.DataFrame:
    rows = [{"note_id": f"F{i}", "text": f"{MARKER} septic shock note {i}", "labels": ["sepsis"]}
            for i in range(n_forget)]
    rows += [{"note_id": f"R{i}", "text": f"{MARKER} retained note {i}", "labels": [LABELS[1 + i % 2]]}
             for i in range(n_retain)]
    return cohort.normalise(pd.DataFrame(rows))


def _bad_cohort() -> pd.DataFrame:
    """Duplicated texts, an empty text and a duplicated id: failures whose GX partial lists hold values."""
    df = _cohort()
    df.at[4, "text"] = df.at[5, "text"]
    df.at[6, "text"] = df.at[5, "text"]
    df.at[3, "text"] = ""
    df.at[1, "note_id"] = "F2"
    return df


def _texts_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]


def _suite_file(path: Path, expectations: list[dict]) -> Path:
    path.write_text(json.dumps({"name": "ward-checks", "expectations": expectations}), encoding="utf-8")
    return path


def test_gx_json_files_are_gx_documents_and_text_free(tmp_path):
    with pytest.raises(ValidationFailed) as info:
        validation.check(_bad_cohort(), LABELS, ["sepsis"])
    report = info.value.report
    files = report.gx_files(tmp_path)
    assert set(files) == {"gx/expectation_suite.json", "gx/validation_result.json"}
    suite = json.loads(files["gx/expectation_suite.json"].read_text(encoding="utf-8"))
    result = json.loads(files["gx/validation_result.json"].read_text(encoding="utf-8"))
    assert suite["name"] == validation.SUITE_NAME and len(suite["expectations"]) == len(report.expectations)
    assert {"type", "kwargs"} <= set(suite["expectations"][0])
    assert result["success"] is False and result["statistics"]["unsuccessful_expectations"] == 3
    unique = [r for r in result["results"] if r["expectation_config"]["kwargs"].get("column") == "text_sha256"]
    assert unique[0]["result"]["unexpected_count"] == 3  # the counts stay
    assert not any(key.startswith("partial") for r in result["results"] for key in r["result"])
    assert _texts_in(tmp_path) == [] and "F2" not in json.dumps(result)  # neither text nor ids
    assert "gx" not in report.to_dict() and MARKER not in json.dumps(report.to_dict())


def test_text_free_drops_values_gx_put_in_results():
    """GX puts column values into observed_value and partial lists; only numbers survive."""
    doc = {"results": [{"result": {"observed_value": [f"{MARKER} a"], "element_count": 3,
                                   "partial_unexpected_list": [MARKER], "details": {"value_counts": [MARKER]}},
                        "exception_info": {"raised_exception": True, "exception_message": f"bad {MARKER}",
                                           "exception_traceback": f"Traceback {MARKER}"}}]}
    cleaned = validation.text_free(doc)
    assert cleaned["results"][0]["result"] == {"element_count": 3}
    assert MARKER not in json.dumps(cleaned) and cleaned["results"][0]["exception_info"]["raised_exception"]


def test_data_docs_site_built_for_a_failing_cohort_without_text(tmp_path):
    docs = tmp_path / "docs"
    with pytest.raises(ValidationFailed):
        validation.check(_bad_cohort(), LABELS, ["sepsis"], data_docs=docs)
    index = docs / "index.html"
    assert index.is_file() and validation.SUITE_NAME in index.read_text(encoding="utf-8")
    pages = list((docs / "validations" / validation.SUITE_NAME).rglob("*.html"))
    assert len(pages) == 1 and "unexpected values found" in pages[0].read_text(encoding="utf-8")
    assert _texts_in(docs) == []


def test_data_docs_into_context_builds_for_a_passing_cohort(tmp_path):
    with validation.data_docs_into(tmp_path / "site"):
        validation.check(_cohort(), LABELS, ["sepsis"])
    validation.check(_cohort(), LABELS, ["sepsis"])  # outside the block: nothing more is built
    assert (tmp_path / "site" / "index.html").is_file() and _texts_in(tmp_path) == []


def _policy(folder: Path, suite: str) -> Path:
    path = folder / "with-suite.yaml"
    path.write_text(textwrap.dedent(f"""\
        schema_version: 1
        cohort:
          forget_rows_min: 5
          retain_rows_min: 20
          expectation_suite: {suite}
        """), encoding="utf-8")
    return path


def test_user_suite_failures_listed_with_ours_naming_the_file(tmp_path):
    (tmp_path / "suites").mkdir()
    _suite_file(tmp_path / "suites" / "ward.json", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "note_id"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 100}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "text", "regex": "^septic"}},
        {"expectation_type": "expect_column_to_exist", "kwargs": {"column": "labels"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ward"}},
    ])
    loaded = policies.load(_policy(tmp_path, "suites/ward.json"))  # relative to the policy file
    df = _bad_cohort()
    df.at[10, "note_id"] = None
    docs = tmp_path / "docs"
    with pytest.raises(ValidationFailed) as info:
        validation.check(df, LABELS, ["sepsis"], loaded, data_docs=docs)
    failures = info.value.failures
    ours = [f for f in failures if not f.startswith("suites/ward.json")]
    theirs = [f for f in failures if f.startswith("suites/ward.json")]
    assert len(ours) == 3 and len(theirs) == 4, failures
    assert "suites/ward.json: expectation 1 expect_column_values_to_not_be_null on column 'note_id' failed: " \
           "1 of 150 rows unexpected" in theirs
    assert "suites/ward.json: expectation 2 expect_table_row_count_to_be_between failed: observed 150" in theirs
    assert any(f.startswith("suites/ward.json: expectation 3 expect_column_values_to_match_regex") for f in theirs)
    assert 'suites/ward.json: expectation 5 expect_column_values_to_not_be_null on column \'ward\' could not run: ' \
           'Error: The column "ward" in BatchData does not exist.' in theirs
    assert "suites/ward.json" in info.value.hint
    report = info.value.report
    assert report.suite_file == "suites/ward.json" and set(report.gx_files(tmp_path / "out")) == {
        "gx/expectation_suite.json", "gx/validation_result.json",
        "gx/user_expectation_suite.json", "gx/user_validation_result.json"}
    assert MARKER not in "\n".join(failures) + json.dumps(report.to_dict())
    assert validation.USER_SUITE_NAME in (docs / "index.html").read_text(encoding="utf-8")
    assert _texts_in(tmp_path) == []


def test_user_suite_that_passes_counts_with_ours(tmp_path):
    suite = _suite_file(tmp_path / "ok.json", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "note_id"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "labels", "regex": "^[a-z |]+$"}},
    ])
    plain = validation.check(_cohort(), LABELS, ["sepsis"])
    report = validation.check(_cohort(), LABELS, ["sepsis"], expectation_suite=suite)
    assert report.success and len(report.expectations) == len(plain.expectations) + 2


@pytest.mark.parametrize(("content", "needle"), [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ('{"name": "x", "expectations": []}', "no expectations"),
    ('{"expectations": [{"type": "expect_nothing_at_all", "kwargs": {}}]}', "expectation 1 (expect_nothing_at_all)"),
])
def test_bad_user_suite_is_a_policy_error_before_gx_runs(tmp_path, content, needle):
    path = tmp_path / "suite.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        validation.check(_cohort(), LABELS, ["sepsis"], {"expectation_suite": str(path)})
    assert needle in info.value.message and "cohort.expectation_suite" in info.value.message
    assert info.value.exit_code == 2


def test_policy_field_is_optional_and_checked(tmp_path):
    assert policies.CohortPolicy().expectation_suite is None
    with pytest.raises(PolicyError, match="cohort.expectation_suite"):
        policies.load(_policy(tmp_path, "''"))


def test_policy_check_loads_the_suite(tmp_path, capsys, monkeypatch):
    from steuops.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    _suite_file(tmp_path / "ward.json", [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}])
    assert main(["policy", "check", str(_policy(tmp_path, "ward.json"))]) == 0
    assert f"expectation suite ward.json ({tmp_path / 'ward.json'}): 1 expectations" in capsys.readouterr().out
    assert main(["policy", "check", str(_policy(tmp_path, "missing.json"))]) == 2
    assert "cohort.expectation_suite missing.json: no such file" in capsys.readouterr().err
