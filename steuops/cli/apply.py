"""`steuops apply`: a thin command over steuops.pipeline.apply.

Heavy imports (torch, mlflow, pandas) stay inside the functions so that `steuops --help` is instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from steuops.cli import app, epilog

if TYPE_CHECKING:
    from steuops.gate import GateDecision
    from steuops.pipeline import ApplyResult

@app.command(epilog=epilog(
    "steuops apply --model clinical-dx --forget sepsis",
    "steuops apply -m my-dx -f \"heart failure\" --cohort cohort.csv --policy strict --json --junit gate.xml",
    "steuops apply -m my-dx -f sepsis --dry-run --data-docs gx-docs   (validate only; GX Data Docs in gx-docs/)",
    codes="0 done (promoted, or registered when the policy promotes nothing, or nothing to do: the version "
          "already forgets every class named); 2 bad input or a cohort that fails "
          "validation, nothing was changed; 3 the gate rejected the candidate (kept as 'candidate', production "
          "unchanged); 1 unexpected error"))
def apply(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name, e.g. clinical-dx."),
    forget: list[str] = typer.Option(..., "--forget", "-f", help="Class to remove (repeat for several)."),
    alias: str = typer.Option("production", "--alias", help="Alias of the version to start from."),
    version: str | None = typer.Option(None, "--version", help="Version to start from (instead of --alias)."),
    cohort: Path | None = typer.Option(None, "--cohort", help="Deletion cohort (csv/parquet/jsonl: text, labels). "
                                       "Default: the dataset logged with the model."),
    method: str = typer.Option("steu", "--method", help="Unlearning method."),
    config: str | None = typer.Option(None, "--config", help="Method options as JSON, e.g. '{\"k\": 128}'."),
    hierarchy: Path | None = typer.Option(None, "--hierarchy", help="Concept hierarchy YAML (levels L1-L4 per class, "
                                          "docs/HIERARCHY.md) for --method hdsu; default: the built-in one when "
                                          "it has the class."),
    policy: str | None = typer.Option(None, "--policy", help="Policy file or name (default: policies/default.yaml)."),
    promote: bool | None = typer.Option(None, "--promote/--no-promote",
                                        help="Promote on a pass (default: what the policy says)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; write nothing."),
    export: bool = typer.Option(True, "--export/--no-export", help="Export the new version to ONNX."),
    audit: bool | None = typer.Option(None, "--audit/--no-audit", help="Run the forgetting audit + HTML report "
                                      "(default: when the policy sets audit limits)."),
    audit_depth: str = typer.Option(
        "standard", "--audit-depth", metavar="standard|thorough",
        help="When apply audits: how hard the audit's gradient attacks try (see `steuops report --help`); "
        "thorough takes about ten times their time."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of tables."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the gate decision as JUnit XML (one skipped testcase a class when there is nothing to do)."),
    data_docs: Path | None = typer.Option(None, "--data-docs", help="Also build a Great Expectations Data Docs "
                                          "site (HTML, no note text) of the cohort validation into this folder."),
) -> None:
    """Remove class(es) from a registered model, gate the result, register and promote it."""
    from steuops.cli.render import emit_json, progress_bar
    from steuops.errors import GateRejected
    from steuops.pipeline import apply as run_apply

    if version is not None and alias != "production":
        from steuops.errors import UsageError

        raise UsageError("--alias and --version both given", hint="start from one: --alias NAME or --version N")
    # Options that need no registry or model fail first, so a typo costs no model load.
    method_config = _with_hierarchy(_json_option(config, "--config"), hierarchy, method, forget)
    check_writable(junit, "--junit")
    check_folder(data_docs, "--data-docs")
    with progress_bar(enabled=not as_json) as progress, _data_docs(data_docs):
        try:
            result = run_apply(
                model, forget, alias=None if version else alias, version=version, cohort=cohort, method=method,
                method_config=method_config, policy=policy, promote=promote, device=device,
                dry_run=dry_run, home=home, export=export, audit=audit, audit_depth=audit_depth, progress=progress,
            )
        except GateRejected as exc:
            rejected = getattr(exc, "result", None)
            if rejected is not None:
                write_junit(rejected.gate, junit)
                if not as_json:
                    show_apply(rejected)
            raise
    write_junit(result.gate, junit)
    if junit is not None and result.nothing_to_do:
        from steuops.gate import write_junit_skipped

        write_junit_skipped(result.requested, {c: f"v{result.parent_version} already forgets {c} (since v{v}); no "
                                               "version was made" for c, v in result.already_forgotten.items()}, junit)
    if as_json:
        emit_json("apply", result.to_dict())
        return
    show_apply(result)


def _with_hierarchy(config: dict[str, Any] | None, path: Path | None, method: str,
                    forget: list[str]) -> dict[str, Any] | None:
    """--hierarchy into the method's options, the file read and checked first (exit 2 before any work)."""
    if path is None:
        return config
    import dataclasses

    from steuops.errors import UsageError
    from steuops.hierarchy import Hierarchy
    from steuops.methods import get

    if "hierarchy" not in {f.name for f in dataclasses.fields(get(method).config_class)}:
        raise UsageError(f"--hierarchy: method {method!r} takes no concept hierarchy",
                         hint="use it with --method hdsu, or leave --hierarchy out")
    Hierarchy.load(path).for_classes(forget)
    return {**(config or {}), "hierarchy": str(path.resolve())}


@contextmanager
def _data_docs(folder: Path | None) -> Iterator[None]:
    """Inside: every cohort validation also builds GX Data Docs into `folder`; after (pass or fail),
    one line on stderr says where (stdout stays the tables or the --json envelope)."""
    if folder is None:
        yield
        return
    from steuops.validation import data_docs_into

    try:
        with data_docs_into(folder):
            yield
    finally:
        index = Path(folder) / "index.html"
        if index.is_file():
            from steuops.cli.render import err_console

            err_console.print(f"data docs: {index.resolve()}", highlight=False)


def check_folder(path: Path | None, option: str) -> None:
    """UsageError (exit 2) unless `path` is a folder or can be made one; checked before any work."""
    if path is None:
        return
    problem = "is a file, not a folder" if path.exists() and not path.is_dir() else _write_problem(path / "index.html")
    if problem:
        from steuops.errors import UsageError

        raise UsageError(f"{option} {path}: {problem}", hint=f"pass a writable folder, e.g. {option} gx-docs")


def _json_option(text: str | None, option: str) -> dict[str, Any] | None:
    import json

    from steuops.errors import ConfigError

    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option}: not valid JSON ({exc.msg})", hint='e.g. --config \'{"k": 128}\'') from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: must be a JSON object, got {type(value).__name__}",
                          hint='e.g. --config \'{"k": 128}\'')
    return value


def check_writable(path: Path | None, option: str) -> None:
    """UsageError (exit 2) unless a file can be written at `path`; checked before any work so a
    run is not lost at its last step. Leaves nothing behind: an existing file is opened for append
    and closed unchanged; otherwise a nameless temporary file is made and dropped in the nearest
    existing folder (missing folders are fine: write_junit creates them)."""
    if path is None:
        return
    try:
        problem = _write_problem(Path(path))
    except OSError as exc:  # e.g. a folder on the way that cannot be searched
        problem = f"cannot be checked ({exc.strerror})"
    if problem:
        from steuops.errors import UsageError

        raise UsageError(f"{option} {path}: {problem}", hint=f"pass a file in a writable folder, e.g. {option} gate.xml")


def _write_problem(path: Path) -> str | None:
    import os
    import tempfile

    if path.is_dir():
        return "is a directory, not a file"
    if path.exists():
        try:  # O_NONBLOCK: a FIFO without a reader fails at once instead of hanging
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
        except OSError as exc:
            return f"cannot be written ({exc.strerror})"
        return None
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        return f"no file can be created in {folder} ({exc.strerror})"
    return None


def write_junit(decision: GateDecision | None, path: Path | None) -> None:
    if decision is None or path is None:
        return
    from steuops import gate

    gate.write_junit(decision, path)


# ---- rendering -------------------------------------------------------------------------------
def show_apply(result: ApplyResult) -> None:
    from steuops.cli.render import console

    requested = ", ".join(result.requested)
    inherited = f" (still forgetting {', '.join(result.inherited)})" if result.inherited else ""
    console.print(f"[bold]{result.model}[/bold] v{result.parent_version} -> forget [bold]{requested}[/bold]"
                  f"{inherited} with {result.method}", highlight=False)
    _show_cohort(result)
    if result.nothing_to_do:
        _show_nothing_to_do(result)
        return
    if result.dry_run:
        _show_plan(result)
        return
    if result.evaluation:
        console.print(class_table(result.evaluation))
        _show_params(result)
    _show_audit(result.audit)
    _show_reused(result.reused)
    _show_seconds(result.seconds)
    if result.gate is not None:
        from steuops.gate import render_table

        console.print(render_table(result.gate))
    _show_outcome(result)


def _show_cohort(result: ApplyResult) -> None:
    from steuops.cli.render import console

    c = result.cohort
    console.print(f"cohort: {c['rows']} notes from {c['source']} ({c['forget_rows']} carry a forget class, "
                  f"{c['retain_rows']} do not); split {c['split']}: {c['train_rows']} train / {c['test_rows']} "
                  f"held out; validation passed {result.validation['expectations']} expectations",
                  highlight=False)


def _show_nothing_to_do(result: ApplyResult) -> None:
    from steuops.cli.render import console

    since = ", ".join(f"{name} (since v{version})" for name, version in result.already_forgotten.items())
    console.print(f"[green]nothing to do:[/green] v{result.parent_version} already forgets {since}; "
                  "no version was made", highlight=False)
    console.print(f"hint: `steuops history --model {result.model}` shows the lineage; --version N starts from a "
                  "version that still predicts the class", highlight=False)


def _show_plan(result: ApplyResult) -> None:
    from steuops.cli.render import console

    p = result.policy
    k = result.params.get("k")
    size = f" k={k}" if k is not None else ""
    if result.params.get("param_fraction") is not None:  # hdsu: a share of every parameter, not k rows
        size = f" param_fraction={result.params['param_fraction']}, hierarchy={result.params.get('hierarchy')}"
    promote = f"alias {p.promote_alias!r} (now v{p.expected_version})" if p.promote_alias else "nothing"
    console.print(f"plan: {result.method}" + size +
                  f", epochs={result.params.get('epochs')}; policy {p.name} ({(p.sha256 or '')[:12]}); "
                  f"on a pass promote {promote}", highlight=False)
    console.print("[yellow]dry run: nothing was trained or written[/yellow]")


def class_table(evaluation: dict[str, Any]):
    from rich.table import Table

    table = Table(title="F1 per class on the held-out notes", title_justify="left")
    for column in ("class", "support", "F1 before", "F1 after", "delta", ""):
        table.add_column(column, justify="left" if column in ("class", "") else "right")
    forget = set(evaluation["forget"])
    before, after = evaluation["before"]["per_class_f1"], evaluation["after"]["per_class_f1"]
    for name in evaluation["labels"]:
        delta = after[name] - before[name]
        colour = "red" if delta < -0.005 and name not in forget else "default"
        table.add_row(name, str(evaluation.get("support", {}).get(name, "")), f"{before[name]:.3f}",
                      f"{after[name]:.3f}", f"[{colour}]{delta:+.3f}[/]", "[bold]forgotten[/]" if name in forget else "")
    b, a = evaluation["before"], evaluation["after"]
    table.add_row("retain macro", "", f"{b['retain_macro_f1']:.3f}", f"{a['retain_macro_f1']:.3f}",
                  f"{a['retain_macro_f1'] - b['retain_macro_f1']:+.3f}", "", style="bold")
    return table


def _show_params(result: ApplyResult) -> None:
    from steuops.cli.render import console

    e = result.evaluation or {}
    edit = result.edit or {}
    k = edit.get("k")
    rows = f" ({k} token-embedding rows + the head)" if k is not None else ""
    if edit.get("already_forgotten"):
        rows = (f" ({k} token-embedding rows for {', '.join(edit['rows_for'])} + the head; none for "
                f"{', '.join(edit['already_forgotten'])}, which the parent no longer predicts)")
    if edit.get("kind") == "sparse":
        rows = f" ({edit['values']:,} elements of {edit['tensors']} tensors; {k} token-embedding rows among them)"
    console.print(f"parameters modified: {e['params_modified']:,} of {e['params_total']:,} "
                  f"({100 * e['params_fraction']:.3f}%){rows}", highlight=False)


def _show_audit(audit: dict[str, Any] | None) -> None:
    from steuops.cli.render import console, show_audit_time

    if not audit:
        return
    parts = []
    for key in ("probe_f1", "relearn_f1", "membership_auc", "bypass_f1"):
        value = (audit.get(key) or {}).get("edited") if isinstance(audit.get(key), dict) else audit.get(key)
        parts.append(f"{key} {value:.3f}" if isinstance(value, int | float) else f"{key} not measured")
    console.print("audit of the edited model: " + ", ".join(parts), highlight=False)
    show_audit_time(audit.get("time"))


def _show_reused(reused: dict[str, int]) -> None:
    from steuops.cli.render import console

    if reused.get("held_out"):
        console.print(f"evaluate: the parent's pass over the {reused['held_out']:,} held-out notes was read back from "
                      "the audit cache (kept by the apply that made it); only the edited model ran", highlight=False)


def _show_seconds(seconds: dict[str, float]) -> None:
    from steuops.cli.render import console

    parts = ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    console.print(f"time: {parts} (total {sum(seconds.values()):.1f}s)", highlight=False)


def _show_outcome(result: ApplyResult) -> None:
    from steuops.cli.render import console

    new = result.new_version
    if new is None:
        return
    verdict = "passed" if result.passed else "rejected"
    console.print(f"registered {result.model} v{new} (alias candidate, gate={verdict})", highlight=False)
    promoted = result.promoted
    if promoted:
        was = f" (was v{promoted.previous})" if promoted.previous else ""
        console.print(f"[green]promoted:[/green] {promoted.alias} -> v{promoted.version}{was}", highlight=False)
    elif result.passed:
        console.print("not promoted (the policy or --no-promote says a person promotes): "
                      f"steuops promote --model {result.model} --version {new}", highlight=False)
    if result.export:
        ex = result.export
        console.print(f"exported ONNX ({ex.get('exporter')}), parity max |diff| {ex.get('parity_max_abs_diff')}",
                      highlight=False)
