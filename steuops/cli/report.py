"""`steuops report`: a thin command over steuops.pipeline.version_report (HTML + JSON report of a version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from steuops.cli import EXIT_BAD_INPUT, app, epilog


@app.command("report", epilog=epilog(
    "steuops report --model clinical-dx --version 2 --out report.html",
    "steuops report --model clinical-dx --version 2 --reference 3   (next to a retrained version)",
    codes="0 report written; " + EXIT_BAD_INPUT))
def report_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    version: str = typer.Option(..., "--version", help="Version made by `steuops apply`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default report-MODEL-vN.html)."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    audit: bool = typer.Option(True, "--audit/--no-audit", help="Audit the version now if it has no audit yet."),
    refresh_audit: bool = typer.Option(False, "--refresh-audit", help="Re-run the audit even if one is logged."),
    bypass_phrases: Path | None = typer.Option(
        None, "--bypass-phrases", help="Text file of extra rewordings of the class, one per line (for a new audit)."
    ),
    reference: str | None = typer.Option(
        None, "--reference", help="Version retrained without the same class(es) from the same parent "
        "(`steuops apply --method retrain`); the audit is run again next to it."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (for a new audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of a summary."),
) -> None:
    """Render the version's forgetting report: F1 before/after, confusion, tokens, audit, gate."""
    from steuops.cli.render import console, emit_json, progress_bar
    from steuops.pipeline import version_report

    with progress_bar(enabled=not as_json) as progress:
        result = version_report(model, version, out=out, home=home, audit=audit, refresh_audit=refresh_audit,
                                bypass_phrases=bypass_phrases, reference=reference, device=device,
                                progress=progress)
    if as_json:
        emit_json("report", result.to_dict())
        return
    console.print(f"report for {model} v{result.version}: [bold]{result.html}[/bold]", highlight=False)
    console.print(f"facts as JSON: {result.json}  (audit: {result.audit_source})", highlight=False)
    figures = dict(result.figures)
    reference = figures.pop("reference", None)
    if figures:
        console.print("  ".join(f"{k} {_fmt(v)}" for k, v in figures.items()), highlight=False)
    if reference:
        console.print("retrained reference: " + "  ".join(f"{k} {_fmt(v)}" for k, v in reference.items()),
                      highlight=False)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
