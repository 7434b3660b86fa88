"""Cohort validation with Great Expectations: the only module that imports great_expectations.

The suite is built per call from the model's label set and the forget classes. Labels are lists,
which GX column expectations cannot look inside, so `check` first derives flat helper columns
(n_unknown_labels, has_forget, one 0/1 column per class, text length) and the suite runs on
those in GX. Every expectation runs; a failed cohort raises ValidationFailed listing all of them.
Our suite never receives note text (lengths and digests stand in for it). A policy may name a user's
own suite (`cohort.expectation_suite`, GX suite JSON) that runs alongside ours on the cohort's own
columns (labels as "a|b" text), in memory, in the same ephemeral context. From both, only counts leave
GX: the report, the GX JSON (`CohortReport.gx_files`) and the Data Docs site (`build_data_docs`) keep
no partial lists, no observed values other than numbers and no GX exception text.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import env  # noqa: F401  (GX analytics off before great_expectations loads)
from steuops.errors import ForgetClassError, PolicyError, ValidationFailed

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_FORGET_ROWS_MIN = 20
DEFAULT_RETAIN_ROWS_MIN = 100
TEXT_CHARS_MIN = 1
TEXT_CHARS_MAX = 100_000
REQUIRED_COLUMNS = ("text", "labels")
_CLASS_PREFIX = "class::"
SUITE_NAME = "steuops-cohort"
USER_SUITE_NAME = "user-cohort"
# GX JSON names (relative to the folder gx_files writes into; logged on each version under gx/)
GX_SUITE = "gx/expectation_suite.json"
GX_RESULT = "gx/validation_result.json"
GX_USER_SUITE = "gx/user_expectation_suite.json"
GX_USER_RESULT = "gx/user_validation_result.json"
# The only per-expectation result keys that leave GX: counts and percentages, never values.
_RESULT_KEYS = ("observed_value", "element_count", "unexpected_count", "unexpected_percent",
                "unexpected_percent_total", "unexpected_percent_nonmissing", "missing_count", "missing_percent")
_SAFE_EXCEPTION = re.compile(r'^Error: The column "[^"\n]*" in BatchData does not exist\.$')
_DATA_DOCS: ContextVar[Path | None] = ContextVar("steuops_data_docs", default=None)


@contextmanager
def data_docs_into(directory: str | Path) -> Iterator[Path]:
    """Every `check` inside the block also builds a GX Data Docs site into `directory` (the CLI's
    `apply --data-docs DIR`, without threading the folder through the pipeline)."""
    token = _DATA_DOCS.set(Path(directory))
    try:
        yield Path(directory)
    finally:
        _DATA_DOCS.reset(token)


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
    suite_file: str | None = None  # the policy's own expectation suite, when one ran
    gx: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # GX JSON by file name, text-free

    @property
    def failures(self) -> list[str]:
        return [e.failure or e.name for e in self.expectations if not e.success]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("gx")
        return out

    def gx_files(self, directory: str | Path) -> dict[str, Path]:
        """Write the suites and validation results as GX JSON under `directory`; returns
        {"gx/expectation_suite.json": path, "gx/validation_result.json": path, ...}."""
        out: dict[str, Path] = {}
        for name, doc in self.gx.items():
            path = Path(directory) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n", encoding="utf-8")
            out[name] = path
        return out

    def build_data_docs(self, directory: str | Path) -> Path:
        """A GX Data Docs site (HTML) of this report's suites and results in `directory`; returns index.html."""
        return build_data_docs(self.gx, directory)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n", encoding="utf-8")
        return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars from GX results
        return obj.item()
    return str(obj)


def _setting(cohort_policy: Any, name: str) -> Any:
    if cohort_policy is None:
        return None
    if hasattr(cohort_policy, "cohort"):  # a whole Policy was passed: use its cohort section
        cohort_policy = cohort_policy.cohort
    return cohort_policy.get(name) if isinstance(cohort_policy, Mapping) else getattr(cohort_policy, name, None)


def _threshold(cohort_policy: Any, name: str, default: int) -> int:
    value = _setting(cohort_policy, name)
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
    expectation_suite: str | Path | None = None,
    policy_path: str | Path | None = None,
    data_docs: str | Path | None = None,
) -> CohortReport:
    """Validate a cohort (cohort.load output) against the model's labels and the forget classes.

    cohort_policy: the policy's cohort section (a pydantic model or a dict), a whole Policy, or None for
    defaults; the keyword thresholds override it. expectation_suite (default: the policy's
    cohort.expectation_suite): a GX suite JSON run alongside ours; a relative path is read from the
    folder of `policy_path` (default: the whole Policy's file). data_docs: build a GX Data Docs site
    there (also inside `data_docs_into`), before a failure is raised. Returns a CohortReport; raises
    ValidationFailed with one line per failed expectation (and the report on `.report`).
    """
    labels, forget = [str(x) for x in labels], [str(x) for x in forget]
    _check_forget(labels, forget)
    limits = _limits(cohort_policy, forget_rows_min, retain_rows_min, duplicate_text_fraction_max)
    suite_label, suite_file = suite_path(cohort_policy, expectation_suite, policy_path)
    user_suite = load_suite(suite_file, suite_label) if suite_file else None  # a bad file fails before GX runs
    started = time.perf_counter()
    flat = _helper_columns(df, labels, forget)
    specs = _suite(df, labels, forget, limits)
    context = _context()
    suite, outcome = _validate(context, SUITE_NAME, flat, [_tagged(spec.expectation, spec.key) for spec in specs])
    results = _by_key(outcome)
    expectations = [_interpret(spec, results.get(spec.key), flat, df, labels) for spec in specs]
    gx_docs = {GX_SUITE: suite.to_json_dict(), GX_RESULT: text_free(outcome.to_json_dict())}
    if user_suite is not None:
        suite, outcome = _validate(context, USER_SUITE_NAME, _user_frame(df), user_suite)
        expectations += _user_expectations(suite_label or "", outcome)
        gx_docs.update({GX_USER_SUITE: suite.to_json_dict(), GX_USER_RESULT: text_free(outcome.to_json_dict())})
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
        suite_file=suite_label,
        gx=gx_docs,
    )
    docs = data_docs if data_docs is not None else _DATA_DOCS.get()
    if docs is not None:
        report.build_data_docs(docs)
    if not report.success:
        _fail(report)
    return report


def _check_forget(labels: list[str], forget: list[str]) -> None:
    from steuops.modeling import labels_hint

    unknown_forget = [c for c in forget if c not in labels]
    if not forget or unknown_forget:
        raise ForgetClassError(
            f"forget: {', '.join(map(repr, unknown_forget)) or '(none given)'} is not a label of the model",
            hint=labels_hint(labels, unknown_forget),
        )


def _limits(cohort_policy: Any, forget_rows_min: int | None, retain_rows_min: int | None,
            duplicate_text_fraction_max: float | None) -> dict[str, Any]:
    given = {"forget_rows_min": forget_rows_min, "retain_rows_min": retain_rows_min,
             "duplicate_text_fraction_max": duplicate_text_fraction_max}
    defaults = {"forget_rows_min": DEFAULT_FORGET_ROWS_MIN, "retain_rows_min": DEFAULT_RETAIN_ROWS_MIN,
                "duplicate_text_fraction_max": 0.0}
    limits: dict[str, Any] = {
        name: value if value is not None else _threshold(cohort_policy, name, defaults[name])
        for name, value in given.items()
    }
    return {**limits, "text_chars_min": TEXT_CHARS_MIN, "text_chars_max": TEXT_CHARS_MAX}


def _fail(report: CohortReport) -> None:
    failures = report.failures
    where = " or the expectation suite " + report.suite_file if report.suite_file else ""
    error = ValidationFailed(
        f"cohort: {len(failures)} of {len(report.expectations)} expectations failed",
        failures=failures,
        hint=f"fix the cohort file (or the policy's cohort section{where}) and run again; nothing was changed",
    )
    error.report = report  # type: ignore[attr-defined]  (the pipeline logs it)
    raise error


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


def _context() -> Any:
    """An ephemeral GX context (nothing on disk), progress bars off."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _tagged(expectation: Any, key: str) -> Any:
    expectation.meta = {**(expectation.meta or {}), "steuops_key": key}
    return expectation


def _validate(context: Any, name: str, frame: pd.DataFrame, expectations: list[Any]) -> tuple[Any, Any]:
    """Run `expectations` as suite `name` on `frame` (SUMMARY results, in memory); returns (suite, result)."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    asset = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("whole cohort")
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return suite, definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY",
                                 run_id=RunIdentifier(run_name="steuops-apply"))


def _by_key(outcome: Any) -> dict[str, dict[str, Any]]:
    """{steuops_key: in-memory result dict with 'success'} (these may hold values: never saved)."""
    results: dict[str, dict[str, Any]] = {}
    for item in outcome.results:
        key = (item.expectation_config.meta or {}).get("steuops_key")
        results[key] = {"success": bool(item.success), **dict(item.result or {}),
                        "exception_info": item.exception_info or {}}
    return results


# ---- text-free GX JSON and Data Docs -----------------------------------------------------------
def text_free(result_doc: dict[str, Any]) -> dict[str, Any]:
    """A validation result's JSON (to_json_dict()) with nothing a cohort value can hide in: per
    expectation only counts, percentages and numeric observed values; GX error text only when it is
    GX's "column does not exist" line."""
    return {**result_doc, "results": [_text_free_item(item) for item in result_doc.get("results", [])]}


def _text_free_item(item: dict[str, Any]) -> dict[str, Any]:
    result = item.get("result") or {}
    kept = {key: result[key] for key in _RESULT_KEYS if _is_number(result.get(key))}
    info = item.get("exception_info") or {}
    if "raised_exception" in info:
        info = _text_free_exception(info)
    else:  # {metric id: exception info} when a metric failed
        info = {str(key): _text_free_exception(value) for key, value in info.items()}
    return {**item, "result": kept, "exception_info": info}


def _text_free_exception(info: dict[str, Any]) -> dict[str, Any]:
    raised = bool(info.get("raised_exception"))
    message = str(info.get("exception_message") or "")
    if raised and not _SAFE_EXCEPTION.match(message):
        message = "GX raised an error (message withheld: it may quote cohort values)"
    return {"raised_exception": raised, "exception_traceback": None, "exception_message": message or None}


def _is_number(value: Any) -> bool:
    return isinstance(value, bool | int | float)


def build_data_docs(gx_docs: Mapping[str, dict[str, Any]], directory: str | Path) -> Path:
    """A GX Data Docs site of the text-free suites and results in `gx_docs` (CohortReport.gx), built in
    a fresh ephemeral context, so only what was saved is rendered. Returns DIR/index.html."""
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    context = _context()
    context.add_data_docs_site("steuops", {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(directory)},
    })
    for suite_name, result_name in ((GX_SUITE, GX_RESULT), (GX_USER_SUITE, GX_USER_RESULT)):
        if suite_name in gx_docs and result_name in gx_docs:
            _store(context, gx_docs[suite_name], gx_docs[result_name])
    context.build_data_docs(site_names=["steuops"])
    return directory / "index.html"


def _store(context: Any, suite_doc: dict[str, Any], result_doc: dict[str, Any]) -> None:
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    context.suites.add(gx.ExpectationSuite(**suite_doc))
    result = ExpectationSuiteValidationResultSchema().load(result_doc)
    run = (result_doc.get("meta") or {}).get("run_id") or {}
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_doc["name"]),
        run_id=RunIdentifier(run_name=run.get("run_name") or "steuops", run_time=run.get("run_time")),
        batch_identifier="cohort",
    )
    context.validation_results_store.set(key, result)


# ---- the policy's own expectation suite --------------------------------------------------------
def suite_path(cohort_policy: Any, given: str | Path | None = None,
               policy_path: str | Path | None = None) -> tuple[str | None, Path | None]:
    """(the suite as the policy names it, its path); relative paths are read from the policy's folder."""
    value = given if given is not None else _setting(cohort_policy, "expectation_suite")
    if not value:
        return None, None
    path = Path(value).expanduser()
    base = policy_path or (getattr(cohort_policy, "path", None) if hasattr(cohort_policy, "cohort") else None)
    if not path.is_absolute() and base:
        path = Path(base).parent / path
    return str(value), path


def load_suite(path: str | Path, label: str | None = None) -> list[Any]:
    """The expectations of a GX suite JSON file (`suite.to_json_dict()` layout; `expectation_type` is
    read as `type` too). PolicyError (exit 2) naming the file and the expectation for anything wrong."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    where = f"cohort.expectation_suite {label or path}"
    items = _suite_items(Path(path), where)
    out = []
    for index, item in enumerate(items, 1):
        kind = item.get("type") or item.get("expectation_type") if isinstance(item, dict) else None
        try:
            config = ExpectationConfiguration(type=kind, kwargs=dict(item.get("kwargs") or {}),
                                              meta=dict(item.get("meta") or {}))
            out.append(_tagged(config.to_domain_obj(), f"suite:{index}:{kind}"))
        except Exception as exc:  # noqa: BLE001  (GX raises many types for a bad expectation)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PolicyError(f"{where}: expectation {index} ({kind}) is not valid: {first}",
                              hint="write it as GX writes suites: {\"type\": ..., \"kwargs\": {...}}") from None
    return out


def _suite_items(path: Path, where: str) -> list[Any]:
    if not path.is_file():
        raise PolicyError(f"{where}: no such file ({path})",
                          hint="a relative path is read from the policy file's folder")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{where}: not valid JSON ({exc})", hint="save the suite with suite.to_json_dict()") \
            from None
    items = raw.get("expectations") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise PolicyError(f"{where}: no expectations (a GX suite JSON has an 'expectations' list)",
                          hint="save the suite with suite.to_json_dict()")
    return items


def _user_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The cohort's own columns for the user's suite; list cells (labels) as "a|b" text."""
    frame = df.copy()
    for column in frame.columns:
        if any(isinstance(v, list | tuple) for v in frame[column]):
            frame[column] = ["|".join(map(str, v)) if isinstance(v, list | tuple) else v for v in frame[column]]
    return frame


def _user_expectations(label: str, outcome: Any) -> list[Expectation]:
    out = []
    for key, result in sorted(_by_key(outcome).items(), key=lambda kv: int(str(kv[0]).split(":")[1])):
        observed = _counts(result)
        if result["success"]:
            out.append(Expectation(key, True, observed))
            continue
        item = next(r for r in outcome.results if (r.expectation_config.meta or {}).get("steuops_key") == key)
        out.append(Expectation(key, False, observed, failure=_user_failure(label, key, item, result)))
    return out


def _user_failure(label: str, key: str, item: Any, result: dict[str, Any]) -> str:
    """One line naming the suite file and the expectation; counts or GX's column line, never values."""
    _, index, kind = key.split(":", 2)
    column = (item.expectation_config.kwargs or {}).get("column")
    what = f"{label}: expectation {index} {kind}" + (f" on column '{column}'" if column else "")
    info = _text_free_item({"exception_info": item.exception_info or {}})["exception_info"]
    infos = [info] if "raised_exception" in info else list(info.values())
    raised = [i["exception_message"] for i in infos if i.get("raised_exception")]
    if raised:
        return f"{what} could not run: {raised[0]}"
    counts = _counts(result)
    if "unexpected_count" in counts:
        return f"{what} failed: {counts['unexpected_count']} of {counts.get('element_count', '?')} rows unexpected"
    if _is_number(counts.get("observed_value")):
        return f"{what} failed: observed {counts['observed_value']}"
    return f"{what} failed"


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
