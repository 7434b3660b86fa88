"""`apply` and `export`: remove classes from a registered model, prove it against a policy, register, promote.

The flow of DESIGN.md as plain calls: resolve -> load -> cohort -> validate -> split -> unlearn ->
evaluate -> gate -> register (alias candidate) -> export -> promote (compare-and-set). Every check a
user can fail (model, alias, version, forget class, policy, method config, cohort, validation) runs
before the first write, so a bad input leaves the registry exactly as it was.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steuops import env, lineage  # noqa: F401  (env: telemetry off before heavy imports)
from steuops.errors import CohortError, GateRejected

if TYPE_CHECKING:
    from steuops.gate import GateDecision
    from steuops.modeling import Progress
    from steuops.registry import LoadedModel, ModelRef, Registry

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "production"
CANDIDATE_ALIAS = "candidate"


@dataclass
class PolicyInfo:
    """The policy an apply ran under, and the alias it promotes on a pass (None: register only)."""

    name: str
    path: str | None
    sha256: str
    promote_alias: str | None = None
    expected_version: str | None = None  # what promote_alias pointed at when apply started (compare-and-set)

    @classmethod
    def of(cls, policy: Any, promote_alias: str | None = None, expected_version: str | None = None) -> PolicyInfo:
        """From a loaded policy.Policy."""
        return cls(policy.name, None if policy.path is None else str(policy.path), policy.sha256, promote_alias,
                   expected_version)


@dataclass
class Promotion:
    alias: str
    version: str
    previous: str | None


@dataclass
class ApplyResult:
    """What one apply did. `evaluation` is metrics.Evaluation.to_dict() (plus "audit" when audited): the
    document the gate reads and evaluation.json stores. `to_dict()` is the --json / apply.json form."""

    model: str
    parent_version: str
    forget: list[str]
    requested: list[str]
    inherited: list[str]
    method: str
    params: dict[str, Any]
    policy: PolicyInfo
    cohort: dict[str, Any]  # counts and hashes only (split.json): never note text
    validation: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    new_version: str | None = None
    evaluation: dict[str, Any] | None = None
    gate: GateDecision | None = None
    promoted: Promotion | None = None
    export: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    edit: dict[str, Any] | None = None
    tokens: list[dict[str, Any]] = field(default_factory=list)
    precision: str | None = None  # "bf16" / "fp32": what the method's training steps ran in
    # notes whose parent pass was read back from the audit cache instead of run, by split ({"held_out": 1200})
    reused: dict[str, int] = field(default_factory=dict)
    # requested classes the parent already forgets -> the version of its lineage that forgot each
    already_forgotten: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return None if self.gate is None else self.gate.passed

    @property
    def nothing_to_do(self) -> bool:
        """Every requested class is already forgotten: apply made no version (a repeated deletion request)."""
        return bool(self.requested) and len(self.already_forgotten) == len(self.requested)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nothing_to_do"] = self.nothing_to_do
        data["gate"] = self.gate.to_dict() if self.gate is not None else None
        return json.loads(json.dumps(data, default=_json_default))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


_QUIET_STEPS = frozenset({"check", "gate"})  # under a second: a progress line would be noise


class Clock:
    """Seconds per step, in the order the steps ran; each step is also a progress phase (0/1, then 1/1),
    so a terminal shows it as a bar and a CI log as a start line and an end line."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        shown = self.progress is not None and name not in _QUIET_STEPS
        if shown:
            self.progress(f"step {name}", 0, 1)
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)
        if shown:
            self.progress(f"step {name}", 1, 1)


@dataclass
class _Prepared:
    """Everything checked and loaded before the first write."""

    registry: Registry
    parent: ModelRef
    loaded: LoadedModel
    policy: Any
    config: Any
    forget: list[str]
    requested: list[str]
    inherited: list[str]
    frame: Any
    train: Any
    test: Any
    report: Any
    cohort_info: dict[str, Any]
    promote_alias: str | None
    expected_version: str | None
    settings: Any = None  # InferenceSettings: evaluation, export, parity and serving all use these


def apply(
    model_name: str,
    forget: list[str],
    *,
    alias: str | None = DEFAULT_ALIAS,
    version: str | int | None = None,
    cohort: str | Path | None = None,
    method: str = "steu",
    method_config: dict[str, Any] | None = None,
    policy: str | Path | None = None,
    promote: bool | None = None,
    device: str = "auto",
    dry_run: bool = False,
    home: str | Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    export: bool = True,
    audit: bool | None = None,
    audit_depth: str = "standard",
    progress: Progress | None = None,
    registry: Registry | None = None,
) -> ApplyResult:
    """Forget `forget` in the model `alias`/`version` names. Raises GateRejected (exit 3) after
    registering a rejected candidate; typed UsageErrors (exit 2) before writing anything.

    A request for classes the parent already forgets (every one of them) returns after the cohort check, with
    `already_forgotten` and `nothing_to_do` set and nothing trained or written.

    audit: run the forgetting audit (probe, relearn, membership, bypass) and the HTML report before
    the gate. None = only when the policy sets an audit limit (the gate then needs the figures);
    otherwise `steuops report` audits a version later, so apply stays quick. audit_depth: a name in
    steuops.audit.DEPTHS (how hard its gradient attacks try)."""
    from steuops.audit import AuditConfig

    depth = AuditConfig.at_depth(audit_depth)  # a bad name fails before anything is loaded
    clock = Clock(progress)
    prep = _prepare(
        model_name, forget, alias=alias, version=version, cohort=cohort, method=method,
        method_config=method_config, policy=policy, promote=promote, device=device, home=home,
        test_fraction=test_fraction, seed=seed, clock=clock, progress=progress, registry=registry, export=export,
    )
    result = _result(prep, method, clock)
    result.already_forgotten = _forgotten_since(prep)
    if dry_run or result.nothing_to_do:
        result.dry_run = dry_run
        return result
    edited = _unlearn(prep, method, device, clock, progress, result)
    evaluated = _evaluate(prep, edited.model, device, clock, progress, result)
    with tempfile.TemporaryDirectory(prefix="steuops-audit-") as audit_dir:
        audited = _audit(prep, edited, device, clock, progress, result, Path(audit_dir), depth) \
            if _wants_audit(prep.policy, audit) else None
        decision = _decide(prep, result, clock)
        audit_files = _report_with_gate(audited, result, Path(audit_dir)) if audited else {}
        ref = _register(prep, edited, method, result, clock, audit_files, onnx=export and decision.passed,
                        evaluated=evaluated)
    result.new_version = ref.version
    if not decision.passed:
        _complete(prep, ref)
        error = GateRejected(
            f"the policy {prep.policy.name!r} rejected {model_name} v{ref.version}: "
            f"{', '.join(r.name for r in decision.failed)} failed",
            decision=decision,
            hint=f"v{ref.version} is kept with gate=rejected and alias {CANDIDATE_ALIAS!r}; production is unchanged",
        )
        error.result = result  # type: ignore[attr-defined]  (the CLI renders what happened before the verdict)
        raise error
    if export:  # before the alias moves: whatever production points at can be served
        _export(prep, ref, result, clock, evaluated)
    _complete(prep, ref)
    _promote(prep, ref, result, clock)
    return result


def _complete(prep: _Prepared, ref: ModelRef) -> None:
    """Every required artifact is logged: mark the version complete, make it the candidate, and mark
    versions a crash left half-made on the same lineage and forget set as superseded by it."""
    from steuops import registry as reg

    registry = prep.registry
    _make_candidate(registry, ref)
    for row in registry.versions(ref.name):
        if (row.status == lineage.STATUS_INCOMPLETE and row.version != ref.version
                and row.parent == prep.parent.version and sorted(row.forgotten) == sorted(prep.forget)):
            registry.set_tags(reg.ModelRef(ref.name, row.version), {lineage.STATUS: lineage.STATUS_SUPERSEDED,
                                                                   lineage.SUPERSEDED_BY: ref.version})


# ---- before the first write ------------------------------------------------------------------
def _prepare(model_name: str, forget: list[str], *, alias, version, cohort, method, method_config, policy,
             promote, device, home, test_fraction, seed, clock: Clock, progress, registry,
             export: bool = True) -> _Prepared:
    from steuops import methods, modeling
    from steuops import policy as policies
    from steuops.registry import Registry

    requested = list(dict.fromkeys(c.strip() for c in forget if c and c.strip()))
    if not requested:
        from steuops.errors import ForgetClassError

        raise ForgetClassError("no forget class given", hint="name one with --forget CLASS")
    with clock.step("check"):
        loaded_policy = policies.load(policies.resolve(policy))
        early = _cohort_file(cohort)  # a broken cohort file fails before MLflow or the model loads
        impl = methods.get(method)
        impl.config_class.from_dict(method_config)  # a bad option fails before the registry is touched
        modeling.resolve_device(device)
        registry = registry or Registry(home)
        _check_writable(registry)
        parent = registry.resolve(model_name, alias=alias, version=version)
        options = _config_for(registry, parent, method, method_config)
        config = _with_selection_policy(impl.config_class.from_dict(options), loaded_policy)
        promote_alias = _promote_alias(loaded_policy, promote)
        _check_export_for_promotion(loaded_policy, promote_alias, export)
        expected = registry.alias_version(model_name, promote_alias) if promote_alias else None
    with clock.step("cohort"):
        frame, source = early or _logged_cohort(registry, parent)
    with clock.step("load"):
        loaded = registry.load(parent)
    modeling.check_forget(loaded.model, requested)
    if hasattr(config, "check_model"):  # e.g. a k over the vocabulary: refused before any validation or training
        config.check_model(loaded.model, loaded.tokenizer)
    from steuops.inference import InferenceSettings

    settings = InferenceSettings.resolve(loaded.tags, loaded.tokenizer,
                                         default_max_length=getattr(config, "max_length", 256))
    settings.check_model(loaded.model)
    config = _at_read_length(config, options, settings)
    inherited = [c for c in loaded.forgotten if c not in requested and c in loaded.labels]
    all_forget = requested + inherited
    with clock.step("validate"):
        from steuops import validation

        report = validation.check(frame, loaded.labels, all_forget, loaded_policy)  # suite paths: policy-relative
    with clock.step("split"):
        from steuops import cohort as cohorts

        train_df, test_df = cohorts.split(frame, test_fraction=test_fraction, seed=seed)
        train, test = cohorts.to_notes(train_df), cohorts.to_notes(test_df)
    if not train.has_any(all_forget).any():
        raise CohortError(
            f"cohort: the training split has no notes carrying {', '.join(all_forget)}",
            hint="add forget-class notes to the cohort (or mark fewer of them split=test)",
        )
    cohort_info = {
        "source": source,
        "sha256": cohorts.sha256(frame),
        "rows": int(len(frame)),
        "train_rows": len(train),
        "test_rows": len(test),
        "forget_rows": int(report.n_forget),
        "retain_rows": int(report.n_retain),
        "train_forget_rows": int(train.has_any(all_forget).sum()),
        "test_forget_rows": int(test.has_any(all_forget).sum()),
        "split": "column" if "split" in frame.columns and frame["split"].notna().all() else
                 f"carved (test_fraction={test_fraction}, seed={seed})",
        "test_fraction": test_fraction,
        "seed": seed,
    }
    return _Prepared(registry, parent, loaded, loaded_policy, config, all_forget, requested, inherited, frame,
                     train, test, report, cohort_info, promote_alias, expected, settings)


def _config_for(registry: Registry, parent: ModelRef, method: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """Options given now win; otherwise the ones the parent records for this method (tag
    steuops.method_config, e.g. the CPU-sized settings `steuops demo` chose), so that a later
    `steuops apply` on the same lineage runs the way the previous one did."""
    record = lineage.VersionRecord.from_tags(registry.tags(parent))
    recorded = record.method_config if (record.method_config_for or method) == method else {}
    return {**recorded, **(given or {})}


def _at_read_length(config: Any, options: dict[str, Any], settings: Any) -> Any:
    """The method config trained at the length the version reads (its inference settings), unless the options
    set max_length. A method tokenizing at its own default (256) spent its work on tokens the served model never
    sees, or never saw the end of a longer note the model reads; the evaluation and the gate read the version's
    length either way."""
    import dataclasses

    if "max_length" in options or getattr(config, "max_length", settings.max_length) == settings.max_length:
        return config
    return dataclasses.replace(config, max_length=settings.max_length)


def _make_candidate(registry: Registry, ref: ModelRef) -> None:
    """The last write of a version: it is complete, and the candidate."""
    registry.mark_complete(ref)
    registry.set_alias(ref.name, CANDIDATE_ALIAS, ref.version)


def _check_export_for_promotion(policy: Any, promote_alias: str | None, export: bool) -> None:
    from steuops.errors import UsageError

    if promote_alias and not export and policy.promotion.require_onnx:
        raise UsageError(
            f"--no-export would promote {promote_alias!r} without an ONNX export, which the policy "
            f"{policy.name!r} requires (promotion.require_onnx)",
            hint="drop --no-export, or add --no-promote and run `steuops export` + `steuops promote` later",
        )


def _check_writable(registry: Registry) -> None:
    """An embedded home on a read-only disk fails now, not after minutes of unlearning."""
    import os

    from steuops.errors import RegistryError

    if not registry.embedded:
        return
    home = registry.home
    targets = [home / "mlflow.db", home] if (home / "mlflow.db").exists() else [home]
    for target in targets:
        if target.exists() and not os.access(target, os.W_OK):
            raise RegistryError(f"the steuops home {home} is not writable ({target.name})",
                                hint="fix its permissions, or pass --home DIR on a writable disk")


def _promote_alias(policy: Any, promote: bool | None) -> str | None:
    if promote is False:
        return None
    on_pass = policy.promotion.on_pass
    if promote is True:
        return on_pass or DEFAULT_ALIAS
    return on_pass


def _with_selection_policy(config: Any, policy: Any) -> Any:
    """The policy's selection rules bind every token-selecting method: its min_patients is a floor
    (a token from fewer patients' notes could name one), and it can only hide token strings. Its forget
    limit caps the early-stopping threshold of methods that stop early."""
    if hasattr(config, "min_patients"):
        config.min_patients = max(config.min_patients, policy.selection.min_patients)
    if hasattr(config, "show_tokens"):
        config.show_tokens = config.show_tokens and policy.selection.show_tokens
    if hasattr(config, "stop_forget_f1"):
        # early stopping never ends training before the held-out forget notes meet the gate's forget limit
        config.stop_forget_f1 = min(config.stop_forget_f1, policy.gate.forget_f1_max)
    return config


def _cohort_file(path: str | Path | None) -> tuple[Any, str] | None:
    from steuops import cohort as cohorts

    return (cohorts.load(path), str(path)) if path is not None else None


def _logged_cohort(registry: Registry, parent: ModelRef) -> tuple[Any, str]:
    from steuops import cohort as cohorts

    frame = registry.logged_dataset(parent)
    if frame is None:
        raise CohortError(
            f"no cohort given and {parent} has no logged dataset to use",
            hint="pass the deletion cohort with --cohort FILE (csv, parquet or jsonl with text + labels)",
        )
    return cohorts.normalise(frame, source=f"the dataset logged with {parent.name} v{parent.version}"), \
        f"logged dataset of {parent.name} v{parent.version}"


def _result(prep: _Prepared, method: str, clock: Clock) -> ApplyResult:
    policy = prep.policy
    return ApplyResult(
        model=prep.parent.name,
        parent_version=prep.parent.version,
        forget=prep.forget,
        requested=prep.requested,
        inherited=prep.inherited,
        method=method,
        params=prep.config.to_dict(),
        policy=PolicyInfo.of(policy, prep.promote_alias, prep.expected_version),
        cohort=prep.cohort_info,
        validation=_validation_summary(prep.report),
        seconds=clock.seconds,
    )


def _forgotten_since(prep: _Prepared) -> dict[str, str]:
    """Each requested class the parent already forgets -> the earliest version of its lineage that does.
    When that is every requested class, a new version would only copy the parent (its edit re-selects the
    same tokens), so apply stops there: a deletion request that arrives twice is done, not done again."""
    from steuops.export.registered import lineage_of

    done = _already_gone(prep)
    if not done:
        return {}
    chain = lineage_of(prep.registry, prep.parent, prep.loaded.tags, prep.loaded.labels)  # the parent, then up
    since = {}
    for name in done:
        for link in chain:
            if name not in link["forgotten"]:
                break
            since[name] = link["version"]
    return since


def _already_gone(prep: _Prepared) -> list[str]:
    """The requested classes the parent forgot (its lineage says so) to this policy's forget limit: its own
    evaluation measured each on held-out notes at an F1 within forget_f1_max. A class forgotten under a looser
    policy than this one (or with no such measurement) is forgotten again, from the parent, as before."""
    from steuops.errors import UsageError
    from steuops.gate import TOLERANCE

    tagged = [c for c in prep.requested if c in prep.loaded.forgotten]
    if not tagged:
        return []
    try:
        evaluation = prep.registry.read_json_artifact(prep.parent, lineage.EVALUATION_FILE)
    except UsageError:  # a version steuops did not make has no evaluation.json
        return []
    after = (evaluation.get("after") or {}).get("forget_f1_per_class") or {}
    support = evaluation.get("support") or {}
    limit = prep.policy.gate.forget_f1_max
    return [c for c in tagged if support.get(c) and isinstance(after.get(c), int | float)
            and after[c] <= limit + TOLERANCE]


def _validation_summary(report: Any) -> dict[str, Any]:
    return {"success": bool(report.success), "n_rows": report.n_rows, "n_forget": report.n_forget,
            "n_retain": report.n_retain, "expectations": len(report.expectations),
            "class_counts": dict(report.class_counts)}


# ---- the work --------------------------------------------------------------------------------
def _unlearn(prep: _Prepared, method: str, device: str, clock: Clock, progress, result: ApplyResult):
    from steuops.methods import unlearn

    with clock.step("unlearn"):
        out = unlearn(method, prep.loaded.model, prep.loaded.tokenizer, prep.forget, prep.train, prep.config,
                      device=device, progress=progress)
    _keep_teacher_for_audit(prep, out, device)
    result.tokens = list(out.info.get("tokens", []))[:50]
    result.precision = out.info.get("precision")
    if out.edit is not None:
        from steuops.edit import TokenEdit

        result.edit = {"k": out.edit.k, "values": out.edit.num_changed_values(),
                       "kind": "token" if isinstance(out.edit, TokenEdit) else "sparse",
                       "tensors": len(out.edit.entries)}
        chosen = out.info.get("selection") or {}
        if chosen.get("already_forgotten"):  # rows were selected for the other classes only (choose_rows)
            result.edit.update(rows_for=chosen["classes"], already_forgotten=chosen["already_forgotten"])
    return out


def _evaluate(prep: _Prepared, edited: Any, device: str, clock: Clock, progress, result: ApplyResult) -> Any:
    """Evaluate into result.evaluation; returns the edited model's fp32 logits on the held-out notes (None when
    they were not fp32), which the export checks its files against."""
    from steuops.hierarchy import AUTO, resolve
    from steuops.metrics import evaluate

    with clock.step("evaluate"):
        # the paper's preservation by hierarchy level: the method's hierarchy, else the built-in one if it has the class
        hierarchy = resolve(getattr(prep.config, "hierarchy", AUTO), prep.forget)
        known = _recall_for_evaluation(prep, device)
        result.reused = {"held_out": len(prep.test)} if known is not None else {}
        evaluation = evaluate(prep.loaded.model, edited, prep.loaded.tokenizer, prep.test, prep.forget,
                              device=device, settings=prep.settings, progress=progress, hierarchy=hierarchy,
                              original_pass=known,
                              on_original=lambda logits, cache: _keep_for_audit(prep, prep.test.texts, logits, cache,
                                                                                device),
                              on_edited=lambda logits, cache: _keep_for_audit(prep, prep.test.texts, logits, cache,
                                                                              device, model=edited))
    result.evaluation = evaluation.to_dict()
    return evaluation.edited_logits


def _keep_for_audit(prep: _Prepared, texts: Any, logits: Any, cache: Any, device: str, rows: Any = None, *,
                    model: Any = None) -> None:
    """The parent's pass (or the edited `model`'s) over `texts` (or their `rows`) that apply ran anyway, into the
    audit cache at the audit's settings: an audit of this version (apply's, `steuops report`'s), or for the parent
    of any other made from it, reads it back instead of running it again."""
    from steuops import auditcache
    from steuops.audit import remember_pass

    settings = _audit_settings(prep)
    with settings.applied(prep.loaded.tokenizer):
        remember_pass(auditcache.root(prep.registry.home), prep.loaded.model if model is None else model,
                      prep.loaded.tokenizer, texts, logits, cache, max_length=settings.max_length, device=device,
                      rows=rows)


def _recall_for_evaluation(prep: _Prepared, device: str) -> Any:
    """The parent's pass over the held-out notes, from the audit cache (audit.recall_pass), or None. An apply keeps
    the pass of the version it makes over its held-out notes there, and the next apply from that version splits
    the same cohort the same way: its evaluation then runs only the edited model."""
    from steuops import auditcache
    from steuops.audit import recall_pass

    if prep.settings is None:  # evaluate would tokenize at its own default, not at the settings the cache is keyed by
        return None
    with prep.settings.applied(prep.loaded.tokenizer):
        return recall_pass(auditcache.root(prep.registry.home), prep.loaded.model, prep.loaded.tokenizer,
                           prep.test.texts, max_length=prep.settings.max_length, device=device)


def _keep_teacher_for_audit(prep: _Prepared, out: Any, device: str) -> None:
    """The parent's pass over the training notes that the method ran as its teacher (STEU), kept like the held-out
    pass: the first audit then runs the parent on its bypass notes only. Kept only when the method tokenized as an
    audit will (the version's max length and truncation side)."""
    settings, teacher = _audit_settings(prep), out.teacher
    if teacher is None or teacher.max_length != settings.max_length \
            or getattr(prep.loaded.tokenizer, "truncation_side", "right") != settings.truncation_side:
        return
    _keep_for_audit(prep, prep.train.texts, teacher.logits, teacher.cache, device, rows=teacher.rows)


def _audit_settings(prep: _Prepared) -> Any:
    """The settings an audit of this apply tokenizes at: the ones the gate evaluated at and the server serves."""
    from steuops.inference import InferenceSettings

    return prep.settings or InferenceSettings.from_tokenizer(prep.loaded.tokenizer)


def _wants_audit(policy: Any, audit: bool | None) -> bool:
    if audit is not None:
        return audit
    return any(value is not None for value in policy.audit.model_dump().values())


def _audit(prep: _Prepared, edited: Any, device: str, clock: Clock, progress, result: ApplyResult,
           out_dir: Path, depth: Any) -> dict[str, Any]:
    """The forgetting audit + HTML report, next to the reference (steuops.reference: a registered
    retrain of the same parent and classes, else the cached or a newly trained one; a retrain is its
    own). Its figures go into the evaluation the gate reads. No reference to be had (no base encoder)
    does not stop apply: the audit records why, and the report says it. `depth`: the AuditConfig of the
    chosen depth."""
    import dataclasses

    from steuops import auditcache
    from steuops.audit import audit_and_report, audit_time
    from steuops.pipeline.report import compliance_fields, fingerprints, with_reference_source

    meta = {"model": prep.parent.name, "parent_version": prep.parent.version, "method": result.method,
            "policy": prep.policy.name, "cohort_sha256": prep.cohort_info["sha256"], **fingerprints(edited.edit)}
    # at the settings the gate evaluated and the server serves, as `steuops report` audits (and so sharing
    # its audit-cache entries)
    settings = _audit_settings(prep)
    config = dataclasses.replace(depth, max_length=settings.max_length)
    with clock.step("audit"), settings.applied(prep.loaded.tokenizer):
        reference, reference_info = _audit_reference(prep, edited, result.method, device, progress)
        out = audit_and_report(prep.loaded.model, edited.model, prep.loaded.tokenizer, prep.forget, prep.train,
                               prep.test, result.evaluation, None, edited.edit, meta, out_dir, reference,
                               config=config, device=device, progress=progress, tokens=result.tokens,
                               cache_dir=auditcache.root(prep.registry.home))
    out["audit"] = with_reference_source(out["audit"], reference_info)
    if lineage.AUDIT_FILE in out.get("files", {}):  # the logged audit.json says where its reference came from
        _write(Path(out["files"][lineage.AUDIT_FILE]), out["audit"])
    result.evaluation["audit"] = {k: out["audit"].get(k) for k in
                                  ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1")}
    result.audit = {**result.evaluation["audit"], "skipped": out["audit"].get("skipped"),
                    "reference": reference_info, "time": audit_time(out["audit"])}
    return {**out, "meta": meta, "reference": reference_info, "compliance": compliance_fields(policy=prep.policy)}


def _audit_reference(prep: _Prepared, edited: Any, method: str, device: str,
                     progress) -> tuple[Any, dict[str, Any]]:
    """(reference model or None, where it came from or why there is none) for apply's audit."""
    from steuops import reference as references
    from steuops.pipeline.report import unavailable

    if method == references.METHOD:
        chosen = references.Reference(edited.model, references.SOURCE_ITSELF)
        return chosen.model, chosen.to_dict()
    try:
        chosen = references.get_or_train(
            prep.loaded.model, prep.loaded.tokenizer, prep.forget, prep.train, model_name=prep.parent.name,
            parent_version=prep.parent.version, home=prep.registry.home, registry=prep.registry,
            max_length=prep.settings.max_length if prep.settings is not None else None, device=device,
            progress=progress)
    except references.ReferenceUnavailable as exc:
        return None, unavailable(exc)
    return chosen.model, chosen.to_dict()


def _report_with_gate(audited: dict[str, Any], result: ApplyResult, out_dir: Path) -> dict[str, Path]:
    """Render the report again now that the verdict exists, so the logged page carries the gate table."""
    from steuops.report import write_report

    write_report(out_dir, result.evaluation, audit=audited["audit"], gate=result.gate.to_dict(), confusion=audited["confusion"],
                 tokens=audited["tokens"], meta=audited["meta"], compliance=audited.get("compliance"),
                 reference=audited.get("reference"))
    return {name: Path(path) for name, path in audited["files"].items()}


def _decide(prep: _Prepared, result: ApplyResult, clock: Clock) -> dict[str, Any]:
    from steuops import gate

    with clock.step("gate"):
        decision = gate.decide(result.evaluation, prep.policy, cohort_counts=_cohort_counts(prep))
    result.gate = decision
    return decision


def _cohort_counts(prep: _Prepared) -> dict[str, Any]:
    counts = prep.report.class_counts
    return {"n_rows": prep.report.n_rows, "n_forget": prep.report.n_forget, "n_retain": prep.report.n_retain,
            "forget_rows": {c: int(counts.get(c, 0)) for c in prep.forget}}


def _register(prep: _Prepared, edited: Any, method: str, result: ApplyResult, clock: Clock,
              extra_files: dict[str, Path] | None = None, *, onnx: bool = False, evaluated: Any = None) -> ModelRef:
    """Register the version as incomplete, naming every artifact it still needs; `_complete` ends it.
    `evaluated`: the fp32 logits the gate scored, logged for a later `steuops export` (gated_logits)."""
    from steuops import registry as reg

    verdict = "passed" if result.gate.passed else "rejected"
    after = result.evaluation["after"]
    record = lineage.VersionRecord(
        forgotten=prep.forget, forget_requested=prep.requested, method=method, method_config=result.params,
        method_config_for=method, policy=prep.policy.name, policy_sha256=prep.policy.sha256,
        cohort_sha256=prep.cohort_info["sha256"], cohort_rows=prep.cohort_info["rows"], gate=verdict,
        status=lineage.STATUS_INCOMPLETE, forget_f1=after["forget_f1"], retain_macro_f1=after["retain_macro_f1"],
        params_fraction=result.evaluation["params_fraction"], precision=result.precision,
        extra=prep.settings.to_tags(),
    )
    params = {"method": method, "forget": lineage.encode_list(prep.forget), **result.params,
              "n_train": prep.cohort_info["train_rows"], "n_test": prep.cohort_info["test_rows"]}
    with clock.step("register"), tempfile.TemporaryDirectory(prefix="steuops-apply-") as tmp:
        files = {**_artifact_files(Path(tmp), prep, edited, result), **(extra_files or {})}
        if evaluated is not None:
            files[lineage.EVALUATION_LOGITS] = _logits_file(Path(tmp) / lineage.EVALUATION_LOGITS, prep, evaluated)
        record.required_artifacts = sorted(files) + ([lineage.ONNX_DIR] if onnx else [])
        ref = prep.registry.register(
            prep.parent.name, edited.model, prep.loaded.tokenizer, parent=prep.parent, tags=record.to_tags(),
            artifacts=files, alias=None, params=params,
            run_name=f"forget-{'+'.join(prep.requested)}-from-v{prep.parent.version}",
            settings=prep.settings, metadata=_model_metadata(prep, method), metrics=_run_metrics(result),
            cohort=reg.CohortSummary.from_frame(prep.frame, prep.cohort_info["sha256"], prep.cohort_info),
            description=_version_description(prep, method, verdict),
        )
    prep.registry.log_metrics(ref, {"seconds.register": clock.seconds["register"]})
    return ref


def _run_metrics(result: ApplyResult) -> dict[str, float]:
    """What the unlearning run shows as MLflow metrics: F1 before/after (overall and per class), the
    changed-parameter fraction, the audit figures measured on the edited model, and seconds per step."""
    evaluation = result.evaluation
    out: dict[str, float] = {"params_fraction": evaluation["params_fraction"]}
    for when in ("before", "after"):
        scores = evaluation[when]
        out[f"forget_f1_{when}"] = scores["forget_f1"]
        out[f"retain_macro_f1_{when}"] = scores["retain_macro_f1"]
        out.update({f"f1_{when}.{label}": f1 for label, f1 in scores["per_class_f1"].items()})
    paper = evaluation.get("paper") or {}
    for key in ("forgetting_rate", "knowledge_preservation", "params_percent"):
        if paper.get(key) is not None:
            out[f"paper.{key}"] = paper[key]
    for level, entry in (paper.get("preservation_by_level") or {}).items():
        if entry.get("preservation") is not None:
            out[f"paper.preservation.{level}"] = entry["preservation"]
    for figure, values in (evaluation.get("audit") or {}).items():
        if isinstance(values, dict) and values.get("edited") is not None:
            out[f"audit.{figure}"] = values["edited"]
    out.update({f"seconds.{step}": seconds for step, seconds in result.seconds.items()})
    return out


def _version_description(prep: _Prepared, method: str, verdict: str) -> str:
    """The model version's description: what was forgotten, from which parent, how, and the verdict."""
    inherited = f" ({', '.join(prep.inherited)} kept forgotten from the parent)" if prep.inherited else ""
    policy = prep.policy
    return (f"Forgets {', '.join(prep.requested)}{inherited} from {prep.parent.name} v{prep.parent.version} "
            f"with {method} (steuops). Gate {verdict} under policy {policy.name!r} (sha256 {policy.sha256[:12]}). "
            f"Deletion cohort sha256 {prep.cohort_info['sha256'][:12]}, {prep.cohort_info['rows']} rows.")


def _model_metadata(prep: _Prepared, method: str) -> dict[str, Any]:
    """What a user of the bare MLflow model sees in its MLmodel file (no note text)."""
    return {"forgotten": prep.forget, "parent_version": prep.parent.version, "method": method,
            "policy": {"name": prep.policy.name, "sha256": prep.policy.sha256}}


def _artifact_files(tmp: Path, prep: _Prepared, edited: Any, result: ApplyResult) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if edited.edit is not None:
        edited.edit.save(tmp / lineage.EDIT_DIR)
        files[lineage.EDIT_DIR] = tmp / lineage.EDIT_DIR
    files[lineage.EVALUATION_FILE] = _write(tmp / lineage.EVALUATION_FILE, result.evaluation)
    files[lineage.VALIDATION_FILE] = _write(tmp / lineage.VALIDATION_FILE, prep.report.to_dict())
    if prep.report.gx_files(tmp):  # GX's own JSON (suite + validation result, text-free), logged as gx/
        files[lineage.GX_DIR] = tmp / lineage.GX_DIR
    files[lineage.GATE_FILE] = _write(tmp / lineage.GATE_FILE, result.gate.to_dict())
    # Which rows were held out, by position and note id (ids only, no text): `steuops gate` can re-check.
    files[lineage.SPLIT_FILE] = _write(tmp / lineage.SPLIT_FILE, {**prep.cohort_info,
                                                  "test_note_ids": prep.test.note_ids or []})
    files[lineage.APPLY_FILE] = _write(tmp / lineage.APPLY_FILE, {k: v for k, v in result.to_dict().items() if k != "tokens"})
    return files


def _logits_file(path: Path, prep: _Prepared, logits: Any) -> Path:
    """The gate's logits with what they belong to: a hash of the held-out texts (never the texts) and the settings."""
    import numpy as np

    from steuops.auditcache import texts_sha

    np.savez(path, logits=np.asarray(logits, dtype=np.float32), texts_sha256=np.array(texts_sha(prep.test.texts)),
             inference=np.array(json.dumps(prep.settings.to_dict(), sort_keys=True)))
    return path


def gated_logits(registry: Registry, ref: ModelRef, held_out: Any) -> Any:
    """The fp32 logits `steuops apply` scored on `held_out` (logged as EVALUATION_LOGITS), when the version has them
    for exactly these notes at its recorded settings; else None (an older version, a GPU apply: bf16)."""
    import numpy as np

    from steuops.auditcache import texts_sha
    from steuops.inference import InferenceSettings

    if held_out is None or lineage.EVALUATION_LOGITS not in set(registry.artifact_names(ref)):
        return None
    with np.load(registry.download_artifact(ref, lineage.EVALUATION_LOGITS), allow_pickle=False) as data:
        logits, sha, inference = data["logits"], str(data["texts_sha256"]), json.loads(str(data["inference"]))
    settings = InferenceSettings.from_tags(registry.tags(ref))
    if len(logits) != len(held_out) or sha != texts_sha(held_out.texts) or settings is None \
            or inference != settings.to_dict():
        log.warning("%s: its logged evaluation logits are not of these held-out notes and settings; "
                    "parity is checked against a PyTorch pass", ref)
        return None
    return logits


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _promote(prep: _Prepared, ref: ModelRef, result: ApplyResult, clock: Clock) -> None:
    result.promoted = None
    if prep.promote_alias:
        with clock.step("promote"):
            prep.registry.move_alias(ref.name, prep.promote_alias, ref.version,
                                     expected_version=prep.expected_version)
            retire_candidate(prep.registry, ref.name, prep.promote_alias, ref.version)
        result.promoted = Promotion(prep.promote_alias, ref.version, prep.expected_version)
    prep.registry.log_metrics(ref, {f"seconds.{step}": clock.seconds[step] for step in ("export", "promote")
                                    if step in clock.seconds})


def retire_candidate(registry: Registry, name: str, promoted_to: str, version: str) -> None:
    """A promoted version is no longer a candidate: drop `candidate` if it still names that version."""
    if promoted_to != CANDIDATE_ALIAS:
        registry.clear_alias(name, CANDIDATE_ALIAS, version)


def _export(prep: _Prepared, ref: ModelRef, result: ApplyResult, clock: Clock, evaluated: Any = None) -> None:
    """`evaluated`: the logits the gate scored (fp32), for the parity check: the registered version's ONNX files
    must give them on every held-out note."""
    from steuops.export import export_version

    with clock.step("export"):  # scored on the held-out notes: a disagreeing file stops promotion here
        exported = export_version(prep.registry, ref, settings=prep.settings, held_out=prep.test,
                                  torch_eval=result.evaluation, evaluated=evaluated)
    data = exported.to_dict()
    result.export = {k: data.get(k) for k in ("onnx_sha256", "exporter", "files", "fused_ops", "inference",
                                              "agreement") if k in data}
    result.export["scores"] = {name: {k: s.get(k) for k in ("forget_f1", "retain_macro_f1", "macro_f1")}
                               for name, s in (data.get("scores") or {}).items()}
    result.export["parity_max_abs_diff"] = data.get("parity", {}).get("fp32", {}).get("max_abs_diff")


# ---- for `steuops export` ----------------------------------------------------------------------
def export(
    model_name: str,
    *,
    alias: str | None = DEFAULT_ALIAS,
    version: str | int | None = None,
    out_dir: str | Path | None = None,
    max_length: int | None = None,
    home: str | Path | None = None,
    registry: Registry | None = None,
    fp16: bool | None = None,
    rescore: bool = False,
) -> dict[str, Any]:
    """Export a version (ONNX + parity, logged under onnx/); a steuops version left incomplete by a
    crash during its export becomes complete (and the candidate) once nothing it needs is missing.
    `fp16` None: model.fp16.onnx only where a CUDA device is visible; True/False: make it or not.
    `rescore`: score the served file on every held-out note even when an earlier export scored the same bytes."""
    from steuops import registry as reg
    from steuops.export import export_version

    registry = registry or reg.Registry(home)
    ref = registry.resolve(model_name, alias=alias, version=version)
    held_out = held_out_notes(registry, ref)  # parity on the version's own notes, not someone else's
    # against the logits its gate scored, where apply logged them (no PyTorch pass then)
    result = export_version(registry, ref, out_dir=out_dir, max_length=max_length, held_out=held_out,
                            fp16=fp16, evaluated=gated_logits(registry, ref, held_out), rescore=rescore).to_dict()
    tags = registry.tags(ref)
    if lineage.status(tags) == lineage.STATUS_INCOMPLETE and not registry.missing_artifacts(ref, tags):
        _make_candidate(registry, ref)
        result["completed"] = True
    return result


def held_out_notes(registry: Registry, ref: ModelRef) -> Any:
    """The notes `ref` was evaluated on (Notes), from its logged cohort; None when it has none."""
    from steuops import cohort as cohorts

    frame = registry.logged_dataset(ref)
    if frame is None:
        return None
    try:
        frame = cohorts.normalise(frame, source=f"the dataset logged with {ref.name} v{ref.version}")
    except CohortError:  # a dataset steuops cannot read gives no parity notes, not a failed export
        return None
    test = split_of(registry, ref, frame)[1]
    return cohorts.to_notes(test) if len(test) else None


def split_of(registry: Registry, ref: ModelRef, frame: Any) -> tuple[Any, Any]:
    """(train, held out) rows of `frame` as `ref` was made: split.json's held-out note ids, else the
    split recorded there, else the cohort's own split (column or the apply defaults)."""
    from steuops import cohort as cohorts

    names = set(registry.artifact_names(ref))
    split = registry.read_json_artifact(ref, lineage.SPLIT_FILE) if lineage.SPLIT_FILE in names else {}
    ids = split.get("test_note_ids")
    if ids and "note_id" in frame.columns:
        held = frame["note_id"].astype(str).isin({str(i) for i in ids})
        return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)
    return cohorts.split(frame, test_fraction=float(split.get("test_fraction", 0.2)), seed=int(split.get("seed", 0)))
