"""Cohort tables: load CSV / Parquet / JSONL into one normalised DataFrame.

Every cohort leaves `load` with a `text` column and a `labels` column holding a list of label
names per row, whatever the file used (`labels` as a list, a JSON list string or a `a|b` string,
or a single `label`). Optional columns (note_id, patient_id, split) pass through. pandas is
imported inside the functions so that `steuops --help` never loads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops.errors import CohortError

if TYPE_CHECKING:
    import pandas as pd

    from steuops.data import Notes

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
OPTIONAL_COLUMNS = ("note_id", "patient_id", "split")
_SUPPORTED = "csv, parquet/pq, jsonl/ndjson"


def load(path: str | Path) -> pd.DataFrame:
    """Read a cohort file and normalise it; CohortError (exit 2) names the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise CohortError(f"{path}: no such file", hint="check the --cohort path")
    if path.is_dir():
        raise CohortError(f"{path}: is a directory, not a cohort file", hint=f"pass one file ({_SUPPORTED})")
    frame = _read(path)
    return normalise(frame, source=str(path))


def _read(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    if suffix in PARQUET_SUFFIXES:
        return _read_with(path, "parquet")
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path)
    raise CohortError(
        f"{path}: unsupported file type '{suffix or '(none)'}'",
        hint=f"use one of: {_SUPPORTED}",
    )


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        # keep_default_na=False: an empty text stays "" (validation reports it), ids stay strings.
        return pd.read_csv(path, encoding="utf-8", dtype=str, keep_default_na=False)
    except UnicodeDecodeError as exc:
        raise CohortError(
            f"{path}: not UTF-8 (byte {exc.start} cannot be decoded)",
            hint="re-save the file as UTF-8 (e.g. in Excel: 'CSV UTF-8'; or iconv -f latin1 -t utf-8)",
        ) from None
    except pd.errors.EmptyDataError:
        raise CohortError(f"{path}: the file is empty", hint="export the cohort again; it has no rows") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise CohortError(f"{path}: cannot be read as CSV ({_first_line(exc)})", hint="check the file") from None


def _read_with(path: Path, kind: str) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001  (pyarrow raises many types for a corrupt file)
        raise CohortError(
            f"{path}: cannot be read as {kind} ({_first_line(exc)})",
            hint="the file may be truncated or not Parquet; export it again",
        ) from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise CohortError(
                        f"{path}: line {number} is not a JSON object",
                        hint="write one object per line, e.g. {\"text\": ..., \"labels\": [...]}",
                    )
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise CohortError(
            f"{path}: not UTF-8 (byte {exc.start} cannot be decoded)", hint="re-save the file as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise CohortError(
            f"{path}: line {number} is not valid JSON ({exc.msg})",
            hint="every line must be one JSON object",
        ) from None
    return pd.DataFrame(rows)


def normalise(frame: pd.DataFrame, source: str = "cohort") -> pd.DataFrame:
    """Check the columns and turn labels into a list column; `source` names the file in errors."""
    if frame.shape[0] == 0:
        raise CohortError(f"{source}: the table is empty (0 rows)", hint="export the cohort again; it has no rows")
    frame = frame.copy()
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("text",) if c not in frame.columns]
    if "labels" not in frame.columns and "label" not in frame.columns:
        missing.append("labels (or label)")
    if missing:
        found = ", ".join(frame.columns) or "(none)"
        raise CohortError(
            f"{source}: missing column(s) {', '.join(missing)}; found: {found}",
            hint="a cohort needs a 'text' column and a 'labels' (list or a|b) or 'label' column",
        )
    if "labels" in frame.columns:
        frame["labels"] = [_as_list(v) for v in frame["labels"]]
        if "label" in frame.columns:
            frame = frame.drop(columns=["label"])
    else:
        frame["labels"] = [_as_list(v) for v in frame.pop("label")]
    frame["text"] = [_as_text(v) for v in frame["text"]]
    for column in OPTIONAL_COLUMNS:
        if column in frame.columns:
            frame[column] = [None if _is_missing(v) else str(v) for v in frame[column]]
    return frame.reset_index(drop=True)


def _as_list(value: Any) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return [str(v).strip() for v in parsed if str(v).strip()]
        return [part.strip() for part in text.split("|") if part.strip()]
    if hasattr(value, "tolist"):  # numpy arrays from parquet list columns
        value = value.tolist()
    if isinstance(value, list | tuple | set):
        return [str(v).strip() for v in value if not _is_missing(v) and str(v).strip()]
    return [str(value).strip()]


def _as_text(value: Any) -> str | None:
    return None if _is_missing(value) else str(value)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def to_notes(df: pd.DataFrame) -> Notes:
    """The engine's view of a cohort (steuops.data.Notes): no pandas beyond this point."""
    from steuops.data import Notes

    def column(name: str) -> list[str] | None:
        if name not in df.columns:
            return None
        values = list(df[name])
        return None if all(v is None for v in values) else ["" if v is None else str(v) for v in values]

    meta = {"split": list(df["split"])} if "split" in df.columns else {}
    return Notes(
        texts=["" if t is None else str(t) for t in df["text"]],
        labels=[list(v) for v in df["labels"]],
        note_ids=column("note_id"),
        patient_ids=column("patient_id"),
        meta=meta,
    )


def sha256(df: pd.DataFrame) -> str:
    """Stable, order-sensitive content hash over note_id, text and labels. Safe to log; text is not."""
    digest = hashlib.sha256()
    ids = list(df["note_id"]) if "note_id" in df.columns else [None] * len(df)
    for note_id, text, labels in zip(ids, df["text"], df["labels"], strict=True):
        record = [note_id, text, list(labels)]
        digest.update(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def split(df: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split: the `split` column when present, else steuops.data's split (seeded,
    stratified, grouped by patient; the same indices split_notes uses)."""
    if not 0.0 < test_fraction < 1.0:
        raise CohortError(f"test_fraction: must be between 0 and 1, got {test_fraction}", hint="e.g. 0.2")
    if "split" in df.columns and df["split"].notna().all():
        kind = df["split"].str.strip().str.lower()
        test_mask = kind.isin(["test", "eval", "heldout", "held-out", "validation", "val"])
        train, test = df[~test_mask], df[test_mask]
        if len(train) and len(test):
            return train.reset_index(drop=True), test.reset_index(drop=True)
        raise CohortError(
            f"split: the column puts {len(train)} rows in train and {len(test)} in test",
            hint="mark held-out rows split=test and the rest split=train, or drop the column",
        )
    from steuops.data import split_indices

    train_idx, test_idx = split_indices(to_notes(df), test_fraction=test_fraction, seed=seed)
    return df.iloc[list(train_idx)].reset_index(drop=True), df.iloc[list(test_idx)].reset_index(drop=True)
