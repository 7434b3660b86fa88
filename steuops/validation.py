"""Cohort validation with Great Expectations: the only module that imports great_expectations.

The suite is built per call from the model's label set and the forget classes. Labels are lists,
which GX column expectations cannot look inside, so `check` first derives flat helper columns
(n_unknown_labels, has_forget, one 0/1 column per class, text length) and the suite runs on
those in GX. Every expectation runs; a failed cohort raises ValidationFailed listing all of them.
GX never receives note text (lengths and digests stand in for it) and the report holds counts
only, so it may be logged to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import env  # noqa: F401  (GX analytics off before great_expectations loads)
from steuops.errors import ForgetClassError, ValidationFailed

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_FORGET_ROWS_MIN = 20
DEFAULT_RETAIN_ROWS_MIN = 100
TEXT_CHARS_MIN = 1
TEXT_CHARS_MAX = 100_000
REQUIRED_COLUMNS = ("text", "labels")
_CLASS_PREFIX = "class::"


@dataclass
class Expectation:
    name: str
    success: bool
    observed: dict[str, Any]
    failure: str | None = None  # one line, only when success is False


@dataclass
class CohortReport:
    success: bool
    n_rows: int
    n_forget: int
    n_retain: int
    class_counts: dict[str, int]
    forget: list[str]
    expectations: list[Expectation] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        return [e.failure or e.name for e in self.expectations if not e.success]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n", encoding="utf-8")
        return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars from GX results
        return obj.item()
    return str(obj)


def _threshold(cohort_policy: Any, name: str, default: int) -> int:
    if cohort_policy is None:
        return default
    if hasattr(cohort_policy, "cohort"):  # a whole Policy was passed: use its cohort section
        cohort_policy = cohort_policy.cohort
    value = cohort_policy.get(name) if isinstance(cohort_policy, Mapping) else getattr(cohort_policy, name, None)
    return default if value is None else value


def check(
    df: pd.DataFrame,
    labels: Sequence[str],
    forget: Sequence[str],
    cohort_policy: Any = None,
    *,
    forget_rows_min: int | None = None,
    retain_rows_min: int | None = None,
    duplicate_text_fraction_max: float | None = None,
) -> CohortReport:
    """Validate a cohort (cohort.load output) against the model's labels and the forget classes.

    cohort_policy: the policy's cohort section (a pydantic model or a dict) or None for defaults;
    the keyword thresholds override it. Returns a CohortReport; raises ValidationFailed with one
    line per failed expectation (and the report on `.report`) when anything fails.
    """
    labels, forget = [str(x) for x in labels], [str(x) for x in forget]
    unknown_forget = [c for c in forget if c not in labels]
    if not forget or unknown_forget:
        raise ForgetClassError(
            f"forget: {', '.join(unknown_forget) or '(none given)'} is not a label of the model",
            hint=f"choose from: {', '.join(labels)}",
        )
    limits = {
        "forget_rows_min": forget_rows_min
        if forget_rows_min is not None
        else _threshold(cohort_policy, "forget_rows_min", DEFAULT_FORGET_ROWS_MIN),
        "retain_rows_min": retain_rows_min
        if retain_rows_min is not None
        else _threshold(cohort_policy, "retain_rows_min", DEFAULT_RETAIN_ROWS_MIN),
        "duplicate_text_fraction_max": duplicate_text_fraction_max
        if duplicate_text_fraction_max is not None
        else _threshold(cohort_policy, "duplicate_text_fraction_max", 0.0),
        "text_chars_min": TEXT_CHARS_MIN,
        "text_chars_max": TEXT_CHARS_MAX,
    }
    started = time.perf_counter()
    flat = _helper_columns(df, labels, forget)
    specs = _suite(df, labels, forget, limits)
    results = _run(flat, specs)
    expectations = [_interpret(spec, results.get(spec.key), flat, df, labels) for spec in specs]
    report = CohortReport(
        success=all(e.success for e in expectations),
        n_rows=int(len(df)),
        n_forget=int(flat["has_forget"].sum()) if len(flat) else 0,
        n_retain=int(flat["is_retain"].sum()) if len(flat) else 0,
        class_counts={c: int(flat[_CLASS_PREFIX + c].sum()) for c in labels} if len(flat) else {},
        forget=forget,
        expectations=expectations,
        thresholds=limits,
        seconds=round(time.perf_counter() - started, 4),
    )
    if not report.success:
        failures = report.failures
        error = ValidationFailed(
            f"cohort: {len(failures)} of {len(expectations)} expectations failed",
            failures=failures,
            hint="fix the cohort file (or the policy's cohort section) and run again; nothing was changed",
        )
        error.report = report  # type: ignore[attr-defined]  (the pipeline logs it)
        raise error
    return report


def _helper_columns(df: pd.DataFrame, labels: list[str], forget: list[str]) -> pd.DataFrame:
    """Flat columns GX can check: everything about the list-valued labels, as numbers."""
    import pandas as pd

    known, wanted = set(labels), set(forget)
    out = pd.DataFrame(index=df.index)
    if "text" in df.columns:
        # GX never sees note text: `text` stands in as its length, uniqueness runs on a digest.
        # A whitespace-only text carries nothing to learn from: it counts (and digests) as "", so
        # it fails the length check and the uniqueness check exactly as an empty text does.
        texts = [None if not isinstance(t, str) else t if t.strip() else "" for t in df["text"]]
        out["text"] = pd.array([None if t is None else len(t) for t in texts], dtype="Int64")
        out["text_sha256"] = [None if t is None else hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    if "note_id" in df.columns:
        out["note_id"] = df["note_id"]
    label_lists = [list(v) if isinstance(v, list | tuple) else [] for v in df["labels"]] if "labels" in df else []
    if not label_lists:
        label_lists = [[] for _ in range(len(df))]
    if "labels" in df.columns:  # so that ExpectColumnToExist("labels") sees the real table's columns
        out["labels"] = [len(names) for names in label_lists]
    out["n_unknown_labels"] = [sum(1 for name in names if name not in known) for names in label_lists]
    out["has_forget"] = [int(bool(wanted.intersection(names))) for names in label_lists]
    out["is_retain"] = 1 - out["has_forget"]
    for name in labels:
        out[_CLASS_PREFIX + name] = [int(name in names) for names in label_lists]
    return out


@dataclass
class _Spec:
    key: str
    name: str
    expectation: Any  # a GX expectation instance, or None when it cannot run (e.g. column missing)
    describe: Any  # (result dict, flat, df) -> failure line


def _suite(df: pd.DataFrame, labels: list[str], forget: list[str], limits: dict[str, Any]) -> list[_Spec]:
    import great_expectations.expectations as gxe

    specs: list[_Spec] = []
    has = set(df.columns)
    for column in REQUIRED_COLUMNS:
        specs.append(_Spec(f"column:{column}", f"column '{column}' exists", gxe.ExpectColumnToExist(column=column),
                           lambda r, f, d, c=column: f"{c}: column missing (found: {', '.join(map(str, d.columns))})"))
    if "text" in has:
        specs.append(_Spec("text:not_null", "text is not null", gxe.ExpectColumnValuesToNotBeNull(column="text"),
                           lambda r, f, d: f"text: {r.get('unexpected_count')} rows have no text"))
        specs.append(_Spec(
            "text:length", f"text length in {limits['text_chars_min']}..{limits['text_chars_max']} chars",
            gxe.ExpectColumnValuesToBeBetween(column="text", min_value=limits["text_chars_min"],
                                              max_value=limits["text_chars_max"]),
            lambda r, f, d: _length_line(f, limits)))
        mostly = 1.0 - float(limits["duplicate_text_fraction_max"])
        specs.append(_Spec(
            "text:unique", "texts are unique",
            gxe.ExpectColumnValuesToBeUnique(column="text_sha256", mostly=mostly),
            lambda r, f, d: f"text: {r.get('unexpected_count')} rows share their text with another row "
                            f"(allowed fraction {limits['duplicate_text_fraction_max']})"))
    if "note_id" in has:
        specs.append(_Spec(
            "note_id:unique", "note_id is unique", gxe.ExpectColumnValuesToBeUnique(column="note_id"),
            lambda r, f, d: f"note_id: {r.get('unexpected_count')} rows carry a duplicated id "
                            f"(e.g. {_examples(r.get('partial_unexpected_list'))})"))
    specs.append(_Spec(
        "labels:known", "every label is one of the model's",
        gxe.ExpectColumnValuesToBeBetween(column="n_unknown_labels", min_value=0, max_value=0),
        lambda r, f, d: f"labels: {r.get('unexpected_count')} rows carry labels outside the model's set "
                        f"(e.g. {_examples(_unknown_labels(d, labels))})"))
    for name in forget:
        specs.append(_Spec(
            f"forget:{name}", f"forget class '{name}' has >= {limits['forget_rows_min']} rows",
            gxe.ExpectColumnSumToBeBetween(column=_CLASS_PREFIX + name, min_value=limits["forget_rows_min"]),
            lambda r, f, d, n=name: f"forget: class '{n}' has {_observed(r)} rows, "
                                    f"policy needs at least {limits['forget_rows_min']}"))
    for name in (c for c in labels if c not in forget):
        specs.append(_Spec(
            f"retain_class:{name}", f"retained class '{name}' is present",
            gxe.ExpectColumnSumToBeBetween(column=_CLASS_PREFIX + name, min_value=1),
            lambda r, f, d, n=name: f"retain: class '{n}' has no rows; its F1 cannot be checked"))
    specs.append(_Spec(
        "retain:rows", f"retain rows >= {limits['retain_rows_min']}",
        gxe.ExpectColumnSumToBeBetween(column="is_retain", min_value=limits["retain_rows_min"]),
        lambda r, f, d: f"retain: {_observed(r)} rows carry no forget class, "
                        f"policy needs at least {limits['retain_rows_min']}"))
    return specs


def _run(flat: pd.DataFrame, specs: list[_Spec]) -> dict[str, dict[str, Any]]:
    """Run the suite in an ephemeral GX context; returns {spec key: result dict with 'success'}."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("cohort").add_dataframe_asset("cohort")
    batch = asset.add_batch_definition_whole_dataframe("whole cohort")
    suite = context.suites.add(gx.ExpectationSuite(name="steuops-cohort"))
    for spec in specs:
        spec.expectation.meta = {"steuops_key": spec.key}
        suite.add_expectation(spec.expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="steuops-cohort", data=batch, suite=suite)
    )
    outcome = definition.run(batch_parameters={"dataframe": flat}, result_format="SUMMARY")
    results: dict[str, dict[str, Any]] = {}
    for item in outcome.results:
        key = (item.expectation_config.meta or {}).get("steuops_key")
        results[key] = {"success": bool(item.success), **dict(item.result or {})}
    return results


def _interpret(spec: _Spec, result: dict[str, Any] | None, flat: pd.DataFrame, df: pd.DataFrame,
               labels: list[str]) -> Expectation:
    result = result or {"success": False}
    observed = _counts(result)
    if result["success"]:
        return Expectation(spec.key, True, observed)
    return Expectation(spec.key, False, observed, failure=spec.describe(result, flat, df))


def _counts(result: dict[str, Any]) -> dict[str, Any]:
    """Only numbers leave GX results: partial_unexpected_list may hold note text."""
    keep = ("observed_value", "element_count", "unexpected_count", "missing_count")
    out: dict[str, Any] = {}
    for key in keep:
        value = result.get(key)
        if isinstance(value, bool | int | float) or hasattr(value, "item"):
            out[key] = value.item() if hasattr(value, "item") else value
    return out


def _observed(result: dict[str, Any]) -> int:
    value = result.get("observed_value")
    return int(value) if value is not None else 0


def _length_line(flat: pd.DataFrame, limits: dict[str, Any]) -> str:
    lengths = flat["text"].dropna()
    short = int((lengths < limits["text_chars_min"]).sum())
    long = int((lengths > limits["text_chars_max"]).sum())
    parts = []
    if short:
        parts.append(f"{short} rows are empty")
    if long:
        parts.append(f"{long} rows are longer than {limits['text_chars_max']} chars")
    return "text: " + ("; ".join(parts) or "rows outside the length bounds")


def _unknown_labels(df: pd.DataFrame, labels: list[str]) -> list[str]:
    known, seen = set(labels), []
    for names in df["labels"] if "labels" in df.columns else []:
        for name in names if isinstance(names, list | tuple) else []:
            if name not in known and name not in seen:
                seen.append(name)
    return seen


def _examples(values: Any, limit: int = 3) -> str:
    unique = list(dict.fromkeys(str(v) for v in (values or [])))
    return ", ".join(repr(v) for v in unique[:limit]) or "?"
