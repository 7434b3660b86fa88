"""validation.check: the Great Expectations suite on real DataFrames, every failure reported at once."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from steuops import cohort, validation
from steuops.errors import ForgetClassError, ValidationFailed
from steuops.policy import CohortPolicy

LABELS = ["sepsis", "pneumonia", "heart failure"]


def _cohort(n_forget: int = 30, n_retain: int = 120) -> pd.DataFrame:
    rows = []
    for i in range(n_forget):
        rows.append({"note_id": f"F{i}", "text": f"septic shock note {i}", "labels": ["sepsis"]})
    for i in range(n_retain):
        label = LABELS[1 + i % 2]
        rows.append({"note_id": f"R{i}", "text": f"retained note {i} about {label}", "labels": [label]})
    return cohort.normalise(pd.DataFrame(rows))


def test_valid_cohort_report_counts_and_is_text_free(tmp_path):
    df = _cohort()
    report = validation.check(df, LABELS, ["sepsis"])
    assert report.success and report.n_rows == 150
    assert report.n_forget == 30 and report.n_retain == 120
    assert report.class_counts == {"sepsis": 30, "pneumonia": 60, "heart failure": 60}
    assert all(e.success for e in report.expectations)
    names = {e.name for e in report.expectations}
    assert {"column:text", "text:length", "text:unique", "note_id:unique", "labels:known", "forget:sepsis",
            "retain_class:pneumonia", "retain:rows"} <= names
    path = report.save(tmp_path / "validation.json")
    saved = path.read_text(encoding="utf-8")
    assert json.loads(saved)["n_forget"] == 30
    assert "septic shock note" not in saved and "retained note" not in saved


def test_every_failure_listed_at_once():
    df = _cohort(n_forget=10, n_retain=40)
    df.at[0, "labels"] = ["flu"]  # label outside the model's set
    df.at[1, "note_id"] = "F2"  # duplicate id
    df.at[3, "text"] = ""  # empty text
    df.at[4, "text"] = df.at[5, "text"]  # duplicate text
    with pytest.raises(ValidationFailed) as info:
        validation.check(df, LABELS, ["sepsis"], {"forget_rows_min": 20, "retain_rows_min": 100})
    failures = info.value.failures
    joined = "\n".join(failures)
    assert "labels: 1 rows carry labels outside the model's set (e.g. 'flu')" in failures
    assert "note_id: 2 rows carry a duplicated id (e.g. 'F2')" in failures
    assert "text: 1 rows are empty" in failures
    assert "text: 2 rows share their text" in joined
    assert "forget: class 'sepsis' has 9 rows, policy needs at least 20" in failures
    assert "retain: 41 rows carry no forget class, policy needs at least 100" in failures
    assert len(failures) == 6
    assert info.value.exit_code == 2 and info.value.hint
    report = info.value.report
    assert not report.success and len(report.failures) == 6
    assert "septic shock" not in json.dumps(report.to_dict())


def test_no_forget_rows():
    df = _cohort(n_forget=0, n_retain=120)
    with pytest.raises(ValidationFailed) as info:
        validation.check(df, LABELS, ["sepsis"])
    assert info.value.failures == ["forget: class 'sepsis' has 0 rows, policy needs at least 20"]


def test_missing_retained_class_and_thresholds_from_policy_model():
    df = _cohort()
    df = df[df["labels"].map(lambda v: v != ["heart failure"])].reset_index(drop=True)
    with pytest.raises(ValidationFailed) as info:
        validation.check(df, LABELS, ["sepsis"], CohortPolicy(forget_rows_min=5, retain_rows_min=10))
    assert info.value.failures == ["retain: class 'heart failure' has no rows; its F1 cannot be checked"]


def test_threshold_boundary_exactly_at_minimum_passes():
    report = validation.check(_cohort(n_forget=20, n_retain=100), LABELS, ["sepsis"])
    assert report.success
    with pytest.raises(ValidationFailed):
        validation.check(_cohort(n_forget=19, n_retain=100), LABELS, ["sepsis"])


def test_missing_columns_reported_by_the_suite():
    df = pd.DataFrame({"note_id": ["a"], "labels": [["sepsis"]]})
    with pytest.raises(ValidationFailed) as info:
        validation.check(df, LABELS, ["sepsis"], forget_rows_min=1, retain_rows_min=0)
    assert info.value.failures[0].startswith("text: column missing (found: note_id, labels)")


def test_duplicate_fraction_allowed_by_policy():
    df = _cohort()
    df.at[4, "text"] = df.at[5, "text"]
    report = validation.check(df, LABELS, ["sepsis"], duplicate_text_fraction_max=0.05)
    assert report.success


def test_unknown_forget_class_is_a_forget_error():
    with pytest.raises(ForgetClassError, match="flu"):
        validation.check(_cohort(), LABELS, ["flu"])


def test_ten_thousand_rows_validate_quickly():
    n = 10_000
    df = cohort.normalise(pd.DataFrame({
        "note_id": [str(i) for i in range(n)],
        "text": [f"note number {i}" for i in range(n)],
        "labels": [[LABELS[i % 3]] for i in range(n)],
    }))
    validation.check(df.head(200), LABELS, ["sepsis"])  # warm the GX import
    report = validation.check(df, LABELS, ["sepsis"])
    assert report.success and report.n_forget == 3334
    assert report.seconds < 5.0


def test_whole_policy_accepted_for_thresholds():
    from steuops.policy import Policy

    strict = Policy.model_validate({"schema_version": 1, "cohort": {"forget_rows_min": 31}})
    with pytest.raises(ValidationFailed, match="1 of"):
        validation.check(_cohort(n_forget=30), LABELS, ["sepsis"], strict)
    assert validation.check(_cohort(n_forget=31), LABELS, ["sepsis"], strict).thresholds["forget_rows_min"] == 31


def _failed(df: pd.DataFrame) -> tuple[list[str], dict]:
    with pytest.raises(ValidationFailed) as info:
        validation.check(df, LABELS, ["sepsis"], {"duplicate_text_fraction_max": 0.0})
    report = info.value.report
    return info.value.failures, {e.name: (e.success, e.observed) for e in report.expectations}


@pytest.mark.parametrize("blank", [" ", "   \t\n  ", "\u00a0\u2003"])
def test_whitespace_only_text_fails_exactly_as_empty_text(blank):
    """Issue 16: a blank note is no note; it fails the length check (and, twice, the uniqueness
    check) with the same lines and counts as "" does."""
    empty, blanks = _cohort(), _cohort()
    for row in (3, 40):
        empty.at[row, "text"] = ""
        blanks.at[row, "text"] = blank if row == 3 else blank * 2  # different blanks are still "the same" text
    assert _failed(blanks) == _failed(empty)
    failures, _ = _failed(blanks)
    assert "text: 2 rows are empty" in failures and any("2 rows share their text" in f for f in failures)


def test_text_with_surrounding_whitespace_is_kept():
    df = _cohort()
    df.at[3, "text"] = "  septic shock, padded  "
    assert validation.check(df, LABELS, ["sepsis"]).success
