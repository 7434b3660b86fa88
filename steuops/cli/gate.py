"""Policy and gate commands: `steuops policy check` (gate/promote/rollback/history join later).

Imports of pydantic, yaml and the library stay inside the commands so that `steuops --help`
loads none of them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from steuops.cli import EXIT_BAD_INPUT, app, epilog

policy_app = typer.Typer(
    help="Inspect and check policy files (the rules the promotion gate applies).",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


@policy_app.command("check", epilog=epilog(
    "steuops policy check policies/default.yaml", "steuops policy check my-policy.yaml --json",
    codes="0 the policy is valid; 2 a bad field or file (each one named); 1 unexpected error"))
def policy_check(
    file: Path = typer.Argument(..., help="Policy YAML file, e.g. policies/default.yaml."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of a table."),
) -> None:
    """Validate a policy file and print its thresholds; exit 2 naming each bad field."""
    from steuops import policy as policy_mod
    from steuops.cli.render import emit_json

    policy = policy_mod.load(file)
    summary = policy.summary()
    suite = _check_suite(policy)
    if as_json:
        emit_json("policy check", summary)
        return
    _print_policy(summary)
    if suite:
        from steuops.cli.render import console

        console.print(f"expectation suite {suite}", highlight=False)


def _check_suite(policy) -> str | None:
    """The policy's own GX suite, loaded (exit 2 naming the file and the expectation when it is bad)."""
    if not policy.cohort.expectation_suite:
        return None
    from steuops import validation

    label, path = validation.suite_path(policy)
    return f"{label} ({path}): {len(validation.load_suite(path, label))} expectations, run alongside steuops' own"


def _print_policy(summary: dict) -> None:
    from rich.table import Table

    from steuops.cli.render import console

    table = Table(title=f"policy {summary['name']} - valid", title_justify="left")
    table.add_column("field")
    table.add_column("value", justify="right")
    for section in ("gate", "cohort", "promotion", "audit"):
        for key, value in summary[section].items():
            shown = "not checked" if value is None and section == "audit" else value
            if value is None and section == "promotion":
                shown = "never (register only)"
            if value is None and key == "expectation_suite":
                shown = "none (steuops' own expectations only)"
            table.add_row(f"{section}.{key}", str(shown))
    console.print(table)
    console.print(f"file {summary['path']}  sha256 {summary['sha256']}", highlight=False)


# ---- gate / promote / rollback / history (registry commands) ------------------------------------
@app.command("gate", epilog=epilog(
    "steuops gate --model clinical-dx --version 3 --policy strict --junit gate.xml",
    codes="0 the candidate passes; 3 the policy rejects it (nothing was changed); " + EXIT_BAD_INPUT))
def gate_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    version: str = typer.Option(..., "--version", help="Candidate version to gate."),
    policy: str | None = typer.Option(None, "--policy", help="Policy file or name (default: policies/default.yaml)."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the decision as JUnit XML."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of tables."),
) -> None:
    """Re-decide a registered candidate against a policy, without retraining; exit 3 on reject.

    Uses the evaluation the candidate was registered with (its evaluation.json artifact, measured on
    the held-out split): the measurement does not depend on the policy, so no model is re-loaded.
    """
    from steuops.cli.apply import check_writable, class_table, write_junit
    from steuops.cli.render import console, emit_json
    from steuops.errors import GateRejected
    from steuops.gate import render_table
    from steuops.pipeline import regate

    check_writable(junit, "--junit")  # before the registry is touched
    out = regate(model, version, policy=policy, home=home)
    write_junit(out.gate, junit)
    if as_json:
        emit_json("gate", out.to_dict(), ok=out.gate.passed)
    else:
        console.print(f"[bold]{model}[/bold] v{out.version} (parent v{out.parent_version}), "
                      f"from the {out.source}", highlight=False)
        console.print(class_table(out.evaluation))
        console.print(render_table(out.gate))
    if not out.gate.passed:
        if as_json:  # the envelope is already printed; only the exit code is left to give
            raise typer.Exit(GateRejected.exit_code)
        raise GateRejected(f"the policy {out.policy.name!r} rejects {model} v{out.version}",
                           hint="nothing was changed")


@app.command(epilog=epilog(
    "steuops promote --model clinical-dx --version 3",
    codes="0 promoted; 3 the gate rejects the candidate; 2 also when production moved since the candidate was "
          "made (compare-and-set refused) or the version is incomplete; " + EXIT_BAD_INPUT))
def promote(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    version: str = typer.Option(..., "--version", help="Candidate version to promote."),
    policy: str | None = typer.Option(None, "--policy", help="Policy file or name (default: policies/default.yaml)."),
    alias: str | None = typer.Option(None, "--alias", help="Alias to move (default: the policy's on_pass, "
                                     "else production)."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of text."),
) -> None:
    """Gate a candidate, then move the alias to it only if it still points at the candidate's parent."""
    from steuops.cli.render import console, emit_json
    from steuops.pipeline import promote as run_promote

    out = run_promote(model, version, policy=policy, alias=alias, home=home)
    if as_json:
        emit_json("promote", out.to_dict())
        return
    p = out.promoted
    console.print(f"[green]promoted:[/green] {model} {p.alias} -> v{p.version} (was v{p.previous}); "
                  f"gate passed under policy {out.policy.name}", highlight=False)


@app.command(epilog=epilog(
    'steuops rollback --model clinical-dx --reason "F1 drop reported by the ward"',
    'steuops rollback --model clinical-dx --to 1 --reason "audit request"',
    codes="0 rolled back; " + EXIT_BAD_INPUT))
def rollback(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded as a tag on both versions)."),
    to: str | None = typer.Option(None, "--to", help="Version to go back to (default: production's parent)."),
    alias: str = typer.Option("production", "--alias", help="Alias to move back."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of text."),
) -> None:
    """Move production back to an earlier version and record why."""
    from steuops.cli.render import console, emit_json
    from steuops.pipeline import rollback as run_rollback

    out = run_rollback(model, reason=reason, to=to, alias=alias, home=home)
    if as_json:
        emit_json("rollback", out.to_dict())
        return
    console.print(f"rolled back: {model} {out.alias} v{out.from_version} -> v{out.to_version} ({out.reason})",
                  highlight=False)
    if out.reinstated_classes:
        console.print(f"[bold yellow]warning:[/bold yellow] v{out.to_version} still predicts "
                      f"{', '.join(out.reinstated_classes)}, which v{out.from_version} had forgotten", highlight=False)


@app.command(epilog=epilog(
    "steuops history --model clinical-dx", "steuops history --model clinical-dx | grep production",
    "steuops history --model clinical-dx --json",
    codes="0 done; " + EXIT_BAD_INPUT + ". Piped, the table is never wrapped: one line per version"))
def history(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of a table."),
) -> None:
    """Every version: parent, forgotten classes, gate verdict, policy, created time, aliases."""
    from rich.table import Table

    from steuops import lineage
    from steuops.cli.render import console, emit_json
    from steuops.pipeline import history as versions

    rows = [row.to_dict() for row in versions(model, home=home)]
    if as_json:
        emit_json("history", {"model": model, "versions": rows})
        return
    from rich import box

    table = Table(title=f"{model}: {len(rows)} version(s)", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("version", "parent", "forgotten", "gate", "aliases", "policy", "created (UTC)"):
        table.add_column(column, overflow="fold")  # wrap, never elide: a cut alias name misleads
    for row in rows:
        gate = row["gate"] or "-"
        shown = f"[green]{gate}[/]" if gate == "passed" else f"[red]{gate}[/]" if gate == "rejected" else gate
        if row["status"] != "complete":  # a crash left it half-made: never gated or promoted as it is
            shown += f" [yellow]({row['status']})[/]"
        rolled = row["tags"].get(lineage.ROLLBACK_REASON)
        table.add_row(row["version"], row["parent"] or "-", ", ".join(row["forgotten"]) or "-", shown,
                      ", ".join(row["aliases"]) + (f" (rollback: {rolled})" if rolled else ""),
                      row["policy"] or "-", row["created"][:16].replace("T", " "))
    console.print(table)
