"""Cohort tables: load CSV / Parquet / JSONL into one normalised DataFrame.

Every cohort leaves `load` with a `text` column and a `labels` column holding a list of label
names per row, whatever the file used (`labels` as a list, a JSON list string or a `a|b` string,
or a single `label`). Optional columns (note_id, patient_id, split) pass through. pandas is
imported inside the functions so that `steuops --help` never loads it.
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops.errors import CohortError, ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from steuops.data import Notes

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
OPTIONAL_COLUMNS = ("note_id", "patient_id", "split")
_SUPPORTED = "csv, parquet/pq, jsonl/ndjson"
MAX_BYTES_ENV = "STEUOPS_MAX_COHORT_BYTES"
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: far above any deletion cohort, far below what exhausts memory
_CHUNK = 1 << 20
# Column names shown in errors: a headerless CSV turns its first row (note text) into column
# names, so only names that look like identifiers are echoed.
_SHOWABLE_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


def load(path: str | Path) -> pd.DataFrame:
    """Read a cohort file and normalise it; CohortError (exit 2) names the file and the problem.

    Everything that can be checked without parsing (file kind, size, suffix, UTF-8) is checked
    first, so a bad --cohort fails in well under a second and needs no model."""
    path = Path(path)
    size = _check_file(path)
    suffix = _check_suffix(path)
    if size == 0:
        raise CohortError(f"{path}: the file is empty (0 bytes)", hint="export the cohort again; it has no rows")
    if suffix not in PARQUET_SUFFIXES:  # Parquet is binary; its own reader reports corruption
        _check_utf8(path)
    frame = _read(path)
    return normalise(frame, source=str(path))


def max_cohort_bytes() -> int:
    """The size limit: STEUOPS_MAX_COHORT_BYTES when set, else 2 GiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise ConfigError(f"{MAX_BYTES_ENV}: must be a positive number of bytes, got {raw[:40]!r}",
                          hint=f"e.g. {MAX_BYTES_ENV}={DEFAULT_MAX_BYTES} (2 GiB), or unset it")
    return value


def _check_file(path: Path) -> int:
    """Refuse anything but a regular file within the size limit, before opening it: opening a FIFO
    blocks and reading /dev/zero never ends. Returns the size in bytes."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CohortError(f"{path}: no such file", hint="check the --cohort path") from None
    except OSError as exc:
        raise CohortError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})",
                          hint="check the --cohort path and its permissions") from None
    if stat.S_ISDIR(info.st_mode):
        raise CohortError(f"{path}: is a directory, not a cohort file", hint=f"pass one file ({_SUPPORTED})")
    if not stat.S_ISREG(info.st_mode):
        raise CohortError(f"{path}: is a {_kind(info.st_mode)}, not a regular file",
                          hint=f"save the cohort to a file first ({_SUPPORTED}) and pass that file")
    limit = max_cohort_bytes()
    if info.st_size > limit:
        raise CohortError(f"{path}: {_size(info.st_size)} is over the cohort size limit of {_size(limit)}",
                          hint=f"split the cohort, or raise the limit with {MAX_BYTES_ENV}=BYTES")
    return info.st_size


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n} bytes"


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES:
        raise CohortError(
            f"{path}: unsupported file type '{suffix or '(none)'}'",
            hint=f"use one of: {_SUPPORTED}",
        )
    return suffix


def _check_utf8(path: Path) -> None:
    """Decode the whole file once, in chunks, so the error gives the offset in the FILE: pandas
    reports the offset within the line it was decoding (byte 16 for a bad byte at 63)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    fed = 0  # bytes handed to the decoder so far
    newlines = 0  # complete lines before the current chunk, for the line number
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            pending = decoder.getstate()[0]  # undecoded tail of the previous chunk
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                offset = fed - len(pending) + exc.start
                # pending never holds a newline (it is the start of one multi-byte character)
                line = newlines + chunk[: max(0, exc.start - len(pending))].count(b"\n") + 1
                raise _not_utf8(path, offset, line) from None
            fed += len(chunk)
            newlines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:  # the file ends inside a multi-byte character
            raise _not_utf8(path, fed - len(decoder.getstate()[0]), newlines + 1) from None


def _not_utf8(path: Path, offset: int, line: int) -> CohortError:
    return CohortError(
        f"{path}: not UTF-8 (byte {offset}, on line {line}, cannot be decoded)",
        hint="re-save the file as UTF-8 (e.g. in Excel: 'CSV UTF-8'; or iconv -f latin1 -t utf-8)",
    )


def _read(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    if suffix in PARQUET_SUFFIXES:
        return _read_with(path, "parquet")
    return _read_jsonl(path)


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
        with path.open(encoding="utf-8-sig") as handle:  # -sig: a BOM (Windows editors) is not JSON
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
        found = _columns_found(list(frame.columns))
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


def _columns_found(columns: list[str]) -> str:
    """The columns for an error line, without note text: a headerless file has data as its header."""
    shown = [c for c in columns if _SHOWABLE_COLUMN.match(c)]
    hidden = len(columns) - len(shown)
    parts = shown + ([f"{hidden} more not shown (they look like data: is the header row missing?)"] if hidden else [])
    return ", ".join(parts) or "(none)"


def _as_list(value: Any) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = _list_literal(text)
            if isinstance(parsed, list):
                return [str(v).strip() for v in parsed if str(v).strip()]
        return [part.strip() for part in text.split("|") if part.strip()]
    if hasattr(value, "tolist"):  # numpy arrays from parquet list columns
        value = value.tolist()
    if isinstance(value, list | tuple | set):
        return [str(v).strip() for v in value if not _is_missing(v) and str(v).strip()]
    return [str(value).strip()]


def _list_literal(text: str) -> Any:
    """A JSON list, or the Python repr pandas' to_csv writes for a list column (['a', 'b'])."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)  # literals only: never runs code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


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
