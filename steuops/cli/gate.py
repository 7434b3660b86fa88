"""Policy and gate commands: `steuops policy check` (gate/promote/rollback/history join later).

Imports of pydantic, yaml and the library stay inside the commands so that `steuops --help`
loads none of them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from steuops.cli import app

policy_app = typer.Typer(
    help="Inspect and check policy files (the rules the promotion gate applies).",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    file: Path = typer.Argument(..., help="Policy YAML file, e.g. policies/default.yaml."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of a table."),
) -> None:
    """Validate a policy file and print its thresholds; exit 2 naming each bad field."""
    from steuops import policy as policy_mod
    from steuops.cli.render import emit_json

    policy = policy_mod.load(file)
    summary = policy.summary()
    if as_json:
        emit_json("policy check", summary)
        return
    _print_policy(summary)


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
            table.add_row(f"{section}.{key}", str(shown))
    console.print(table)
    console.print(f"file {summary['path']}  sha256 {summary['sha256']}", highlight=False)
