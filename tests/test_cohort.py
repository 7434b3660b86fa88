"""cohort.load / to_notes / sha256 / split on real files in every supported format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from steuops import cohort
from steuops.errors import CohortError, ConfigError

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


# ---- inputs that must fail fast, before anything is parsed (issue 16) ----------------------------
MARKER = "ZQXMARKER"


def _load_in_child(path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """cohort.load in a child with a memory cap and a timeout: if the check regresses, reading
    /dev/zero or opening a FIFO fails this test instead of hanging or eating the machine's memory."""
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from steuops import cohort\n"
        "from steuops.errors import CohortError\n"
        "try:\n    cohort.load(sys.argv[1])\n"
        "except CohortError as exc:\n    print(exc.exit_code, exc, '|', exc.hint)\n"
    )
    return subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_character_device_refused_without_reading(device):
    done = _load_in_child(device)
    assert done.stdout.startswith(f"2 {device}: is a character device, not a regular file"), done.stdout + done.stderr


def test_fifo_refused_without_opening(tmp_path):
    fifo = tmp_path / "cohort.csv"
    os.mkfifo(fifo)  # opening it for reading would block forever: no writer
    done = _load_in_child(str(fifo))
    assert done.stdout.startswith(f"2 {fifo}: is a FIFO (named pipe), not a regular file"), done.stdout + done.stderr


def test_directory_refused(tmp_path):
    with pytest.raises(CohortError, match="is a directory"):
        cohort.load(tmp_path)


def test_size_limit_stated_and_overridable(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    pd.DataFrame({"text": [f"note {i}" for i in range(200)], "labels": ["sepsis"] * 200}).to_csv(path, index=False)
    monkeypatch.setenv(cohort.MAX_BYTES_ENV, "1000")
    with pytest.raises(CohortError) as info:
        cohort.load(path)
    assert "over the cohort size limit of 1000 bytes" in str(info.value)
    assert cohort.MAX_BYTES_ENV in info.value.hint and info.value.exit_code == 2
    monkeypatch.setenv(cohort.MAX_BYTES_ENV, str(path.stat().st_size))  # exactly at the limit is fine
    assert len(cohort.load(path)) == 200
    monkeypatch.delenv(cohort.MAX_BYTES_ENV)
    assert cohort.max_cohort_bytes() == 2 << 30


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_size_limit_env_must_be_a_positive_integer(tmp_path, monkeypatch, value):
    path = tmp_path / "c.csv"
    path.write_text("text,labels\na,sepsis\n", encoding="utf-8")
    monkeypatch.setenv(cohort.MAX_BYTES_ENV, value)
    with pytest.raises(ConfigError, match=cohort.MAX_BYTES_ENV):
        cohort.load(path)


@pytest.mark.parametrize("name", ["c.csv", "c.jsonl"])
def test_non_utf8_offset_is_the_byte_in_the_file(tmp_path, name):
    head = "text,labels\n" if name.endswith(".csv") else ""
    row = (lambda t, lab: f"{t},{lab}\n") if name.endswith(".csv") else \
        (lambda t, lab: json.dumps({"text": t, "labels": [lab]}) + "\n")
    data = (head + row("fever and hypotension overnight", "sepsis")
            + row(f"cough {MARKER} with fever", "pneumonia")).encode("utf-8")
    at = data.index(b"with fever")
    path = tmp_path / name
    path.write_bytes(data[:at] + b"\xe9" + data[at + 1:])  # one latin-1 byte in the middle of line 2/3
    with pytest.raises(CohortError) as info:
        cohort.load(path)
    line = data[:at].count(b"\n") + 1
    assert f"not UTF-8 (byte {at}, on line {line}," in str(info.value)
    assert MARKER not in str(info.value) and MARKER not in (info.value.hint or "")


def test_non_utf8_offset_across_chunks(tmp_path, monkeypatch):
    """A multi-byte character split across two read chunks is fine; a bad byte after many chunks
    is reported at its offset in the whole file."""
    monkeypatch.setattr(cohort, "_CHUNK", 7)  # tiny chunks: every boundary case within a few rows
    good = "text,labels\n" + "".join(f"fièvre {i} é,sepsis\n" for i in range(20))
    path = tmp_path / "c.csv"
    path.write_text(good, encoding="utf-8")
    assert len(cohort.load(path)) == 20
    data = good.encode() + b"bad \xff here,sepsis\n"
    bad = data.index(b"\xff")
    path.write_bytes(data)
    with pytest.raises(CohortError, match=rf"byte {bad}, on line 22,"):
        cohort.load(path)
    path.write_bytes(good.encode() + "é".encode()[:1])  # ends inside a character
    with pytest.raises(CohortError, match=rf"byte {len(good.encode())}, on line 22,"):
        cohort.load(path)


def test_jsonl_with_bom(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "a b", "labels": ["sepsis"]}).encode("utf-8") + b"\n")
    assert list(cohort.load(path)["text"]) == ["a b"]


def test_headerless_csv_never_echoes_note_text(tmp_path):
    """Without a header row the first note becomes the column names: the error must not show it."""
    path = tmp_path / "noheader.csv"
    path.write_text(f"patient {MARKER} febrile and hypotensive,sepsis\nproductive cough,pneumonia\n", encoding="utf-8")
    with pytest.raises(CohortError) as info:
        cohort.load(path)
    message = str(info.value)
    assert "noheader.csv: missing column(s) text" in message and "sepsis" in message  # 'sepsis' is a name
    assert MARKER not in message and "header row" in message


@pytest.mark.parametrize("content", [b"", b"text,labels\n", b"\n\n"])
def test_empty_files(tmp_path, content):
    path = tmp_path / "e.csv"
    path.write_bytes(content)
    with pytest.raises(CohortError, match="e.csv: the (file|table) is empty"):
        cohort.load(path)
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_bytes(content.replace(b"text,labels", b""))
    with pytest.raises(CohortError, match="e.jsonl: the (file|table) is empty"):
        cohort.load(jsonl)


def test_labels_from_pandas_to_csv_of_a_list_column(tmp_path):
    """pandas writes a list column as its Python repr (['a', 'b']), not JSON: both are read as lists."""
    path = tmp_path / "c.csv"
    _frame("list").to_csv(path, index=False)
    assert list(cohort.load(path)["labels"]) == EXPECTED_LABELS
