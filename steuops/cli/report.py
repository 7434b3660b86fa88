"""`steuops report`: a thin command over steuops.pipeline.version_report (HTML + JSON report of a version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from steuops.cli import app, epilog


@app.command("report", epilog=epilog(
    "steuops report --model clinical-dx --version 2 --out report.html",
    "steuops report --model clinical-dx --version 2 --requester 'Privacy office, ticket DPO-118' "
    "--reason 'consent withdrawn' --approver 'Dr A. Jones, CMIO'",
    "steuops report --model clinical-dx --version 2 --reference 3   (next to registered retrain v3)",
    "steuops report --model clinical-dx --version 2 --reference-config '{\"base\": \"/models/minilm\", \"epochs\": 2}'",
    "steuops report --model clinical-dx --version 2 --reference none --no-audit   (quick: no model is loaded)",
    "steuops report --model clinical-dx --version 2 --refresh-audit --audit-depth thorough   (for a sign-off)",
    codes="0 report written; 2 bad input (unknown model/version, bad option or file; --reference auto given and "
          "no reference can be had), nothing was changed; 1 unexpected error"))
def report_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    version: str = typer.Option(..., "--version", help="Version made by `steuops apply`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default report-MODEL-vN.html)."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    audit: bool = typer.Option(True, "--audit/--no-audit", help="Audit the version now if it has no audit yet."),
    refresh_audit: bool = typer.Option(False, "--refresh-audit", help="Re-run the audit even if one is logged."),
    audit_cache: bool = typer.Option(
        True, "--audit-cache/--no-audit-cache",
        help="A new audit reads encoder passes (the parent's, the reference's, the version's) and the parent's and "
        "the reference's attacks back from HOME/cache/audit (a few notes are run again to check them) and keeps new "
        "ones there; the version's attacks always run. --no-audit-cache computes everything again."),
    audit_depth: str = typer.Option(
        "standard", "--audit-depth", metavar="standard|thorough",
        help="How hard a new audit's two gradient attacks (the embedding-rows re-fit, the retain-only fine-tune) "
        "try. standard: their measured budget, on the first seed. thorough: twice the optimiser steps at half the "
        "rate, on every seed, with the original and the reference fine-tuned too as controls (about ten times the "
        "attacks' time; for a sign-off)."),
    bypass_phrases: Path | None = typer.Option(
        None, "--bypass-phrases", help="Text file of extra rewordings of the class, one per line (for a new audit)."
    ),
    reference: str | None = typer.Option(
        None, "--reference", metavar="auto|N|none",
        help="The model the audit is read against, retrained without the same class(es) from the same parent. "
        "auto (default): a registered retrain of the same parent and classes, else one trained now with the "
        "method `retrain` on the version's train split and cached under HOME/references (never registered); "
        "a logged audit without reference figures is run again next to it. N: registered version N. "
        "none: no reference. Given explicitly, auto fails (exit 2) when no base encoder can be found; by "
        "default the report then says why it has none.",
    ),
    reference_config: str | None = typer.Option(
        None, "--reference-config", metavar="JSON",
        help="Retrain options for a reference trained now, e.g. '{\"base\": \"ENCODER_DIR\", \"epochs\": 2}' "
        "(base: the pretrained encoder the model was fine-tuned from).",
    ),
    requester: str | None = typer.Option(
        None, "--requester", help="Who requested the removal (person, team or ticket); wins over the policy's "
        "compliance.requester. Never note text."),
    reason: str | None = typer.Option(
        None, "--reason", help="Why the class is removed (e.g. 'consent withdrawn'); wins over compliance.reason."),
    approver: str | None = typer.Option(
        None, "--approver", help="Who approves and signs the report; wins over compliance.approver."),
    policy: str | None = typer.Option(
        None, "--policy", help="Policy file (or name) to read compliance: {requester, reason, approver} from "
        "(default: the one the version was gated with, if found unchanged)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (for a new audit or reference)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of a summary."),
) -> None:
    """Render the version's forgetting report: a plain-language verdict, F1 before/after (retained classes
    and all), confusion, tokens, the audit next to a retrained reference, the gate, ONNX + alias, sign-off."""
    from steuops.cli.render import console, emit_json, err_console, progress_bar, show_audit_time
    from steuops.pipeline import version_report

    options = _options(reference_config)
    with progress_bar(enabled=not as_json) as progress:
        result = version_report(model, version, out=out, home=home, audit=audit, refresh_audit=refresh_audit,
                                audit_cache=audit_cache, audit_depth=audit_depth, bypass_phrases=bypass_phrases,
                                reference="auto" if reference is None else reference,
                                reference_config=options, require_reference=reference is not None,
                                requester=requester, reason=reason, approver=approver, policy=policy,
                                device=device, progress=progress)
    if as_json:
        emit_json("report", result.to_dict())
        return
    console.print(f"report for {model} v{result.version}: [bold]{result.html}[/bold]", highlight=False)
    console.print(f"facts as JSON: {result.json}  (audit: {result.audit_source})", highlight=False)
    figures = dict(result.figures)
    shown_reference = figures.pop("reference", None)
    if figures:
        console.print("  ".join(f"{k} {_fmt(v)}" for k, v in figures.items()), highlight=False)
    if shown_reference:
        console.print("retrained reference: " + "  ".join(f"{k} {_fmt(v)}" for k, v in shown_reference.items()),
                      highlight=False)
    info = result.reference or {}
    if info.get("source") == "unavailable":
        err_console.print(f"warning: the audit has no retrained reference: {info.get('reason')}", highlight=False)
        if info.get("hint"):
            err_console.print(f"  hint: {info['hint']}", highlight=False)
    elif info.get("description"):
        console.print(f"reference: {info['description']}", highlight=False)
    reused = (result.audit_cache or {}).get("reused") or {}
    if reused:
        from steuops.auditcache import describe

        console.print(f"audit cache: read back {describe(reused)} ({result.audit_cache.get('dir')})", highlight=False)
    show_audit_time(result.audit_time)
    for line in (result.audit_cache or {}).get("rejected") or []:
        err_console.print(f"warning: audit cache: {line}", highlight=False)
    served = result.serving or {}
    aliases = ", ".join(served.get("aliases") or []) or "none"
    console.print(f"served by alias: {aliases}  onnx sha256: {served.get('onnx_sha256') or 'none'}", highlight=False)


def _options(text: str | None) -> dict[str, Any] | None:
    import json

    from steuops.errors import ConfigError

    if not text:
        return None
    hint = 'e.g. --reference-config \'{"base": "/models/encoder", "epochs": 2}\''
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--reference-config: not valid JSON ({exc.msg})", hint=hint) from None
    if not isinstance(value, dict):
        raise ConfigError(f"--reference-config: must be a JSON object, got {type(value).__name__}", hint=hint)
    return value


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
