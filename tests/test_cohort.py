"""cohort.load / to_notes / sha256 / split on real files in every supported format."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from steuops import cohort
from steuops.errors import CohortError

ROWS = [
    {"note_id": "N1", "patient_id": "P1", "text": "fever and hypotension", "labels": ["sepsis"]},
    {"note_id": "N2", "patient_id": "P2", "text": "cough, infiltrate on CXR", "labels": ["pneumonia", "sepsis"]},
    {"note_id": "N3", "patient_id": "P2", "text": "leg swelling, orthopnea", "labels": ["heart failure"]},
]
EXPECTED_LABELS = [["sepsis"], ["pneumonia", "sepsis"], ["heart failure"]]


def _frame(label_format: str) -> pd.DataFrame:
    frame = pd.DataFrame(ROWS)
    if label_format == "pipe":
        frame["labels"] = ["|".join(v) for v in frame["labels"]]
    elif label_format == "json":
        frame["labels"] = [json.dumps(v) for v in frame["labels"]]
    return frame


def _write(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)


@pytest.mark.parametrize(
    "name,label_format",
    [
        ("c.csv", "pipe"),
        ("c.csv", "json"),
        ("c.parquet", "list"),
        ("c.pq", "pipe"),
        ("c.jsonl", "list"),
        ("c.ndjson", "pipe"),
    ],
)
def test_load_formats_normalise_labels(tmp_path, name, label_format):
    path = tmp_path / name
    _write(_frame(label_format), path)
    df = cohort.load(path)
    assert list(df["labels"]) == EXPECTED_LABELS
    assert list(df["text"]) == [r["text"] for r in ROWS]
    assert list(df["note_id"]) == ["N1", "N2", "N3"]


def test_single_label_column(tmp_path):
    path = tmp_path / "single.csv"
    pd.DataFrame({"text": ["a b", "c d"], "label": ["sepsis", "copd exacerbation"]}).to_csv(path, index=False)
    df = cohort.load(path)
    assert list(df["labels"]) == [["sepsis"], ["copd exacerbation"]]
    assert "label" not in df.columns


def test_missing_file_names_it(tmp_path):
    with pytest.raises(CohortError, match="nope.csv: no such file"):
        cohort.load(tmp_path / "nope.csv")


def test_missing_columns_named_with_columns_found(tmp_path):
    path = tmp_path / "cols.csv"
    pd.DataFrame({"body": ["x"], "dx": ["sepsis"]}).to_csv(path, index=False)
    with pytest.raises(CohortError) as info:
        cohort.load(path)
    message = str(info.value)
    assert "cols.csv" in message and "text" in message and "labels (or label)" in message
    assert "found: body, dx" in message
    assert info.value.hint and info.value.exit_code == 2


def test_empty_table(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,labels\n", encoding="utf-8")
    with pytest.raises(CohortError, match=r"empty.csv: the table is empty"):
        cohort.load(path)
    blank = tmp_path / "blank.csv"
    blank.write_text("", encoding="utf-8")
    with pytest.raises(CohortError, match="blank.csv: the file is empty"):
        cohort.load(blank)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(CohortError, match="broken.parquet: cannot be read as parquet"):
        cohort.load(path)


def test_corrupt_jsonl_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "labels": ["sepsis"]}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(CohortError, match="bad.jsonl: line 2 is not valid JSON"):
        cohort.load(path)


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,labels\nfièvre et hypotension,sepsis\n".encode("latin-1"))
    with pytest.raises(CohortError, match="latin.csv: not UTF-8") as info:
        cohort.load(path)
    assert "UTF-8" in info.value.hint


def test_unsupported_extension(tmp_path):
    path = tmp_path / "cohort.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(CohortError, match="unsupported file type '.xlsx'"):
        cohort.load(path)


def test_sha256_is_stable_and_order_sensitive(tmp_path):
    a = cohort.normalise(_frame("list"))
    b = cohort.normalise(_frame("pipe"))
    assert cohort.sha256(a) == cohort.sha256(b)  # same content, different file spelling
    assert cohort.sha256(a) != cohort.sha256(a.iloc[::-1].reset_index(drop=True))
    changed = a.copy()
    changed.loc[0, "labels"] = ["pneumonia"]
    assert cohort.sha256(changed) != cohort.sha256(a)
    assert len(cohort.sha256(a)) == 64


def test_to_notes():
    notes = cohort.to_notes(cohort.normalise(_frame("list")))
    assert notes.texts[1] == ROWS[1]["text"]
    assert notes.labels == EXPECTED_LABELS
    assert notes.note_ids == ["N1", "N2", "N3"] and notes.patient_ids == ["P1", "P2", "P2"]


def test_split_uses_split_column():
    frame = cohort.normalise(_frame("list").assign(split=["train", "test", "train"]))
    train, test = cohort.split(frame)
    assert list(test["note_id"]) == ["N2"] and list(train["note_id"]) == ["N1", "N3"]


def test_split_without_column_is_seeded_and_grouped_by_patient():
    n = 200
    frame = cohort.normalise(pd.DataFrame({
        "note_id": [f"N{i}" for i in range(n)],
        "patient_id": [f"P{i // 2}" for i in range(n)],
        "text": [f"note {i}" for i in range(n)],
        "labels": [["sepsis"] if i % 4 == 0 else ["pneumonia"] for i in range(n)],
    }))
    train, test = cohort.split(frame, test_fraction=0.25, seed=3)
    again_train, again_test = cohort.split(frame, test_fraction=0.25, seed=3)
    assert list(test["note_id"]) == list(again_test["note_id"])
    assert len(train) + len(test) == n and 30 <= len(test) <= 70
    assert not set(train["patient_id"]) & set(test["patient_id"])
    assert test["labels"].map(lambda v: "sepsis" in v).any()
