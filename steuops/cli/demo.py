"""`steuops demo`: a thin command over steuops.demo.setup.run_demo (the one CLI module that imports the demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from steuops.cli import app, epilog


@app.command(epilog=epilog(
    "steuops demo", "steuops demo --home /tmp/steuops-demo --device cpu",
    codes="0 done; 2 the home already holds the demo model (nothing was changed); 3 the gate rejected the "
          "demo's deletion; 1 unexpected error"))
def demo(
    home: Path | None = typer.Option(None, "--home", help="Home to create (default $STEUOPS_HOME or ~/.steuops)."),
    notes: int | None = typer.Option(None, "--notes", help="Number of synthetic notes (default: the demo's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of tables."),
) -> None:
    """Set up a home: synthetic notes, a MiniLM classifier registered as clinical-dx@production,
    then forget sepsis with the default policy."""
    from steuops.cli.apply import show_apply
    from steuops.cli.render import console, emit_json, progress_bar
    from steuops.demo.setup import DEMO_MODEL, run_demo
    from steuops.errors import GateRejected

    with progress_bar(enabled=not as_json) as progress:
        try:
            out = run_demo(home=home, n_notes=notes, device=device, progress=progress,
                           say=None if as_json else lambda text: console.print(text, highlight=False))
        except GateRejected as exc:  # show what was measured before the verdict, then exit 3
            rejected = getattr(exc, "result", None)
            if rejected is not None and not as_json:
                show_apply(rejected)
            raise
    if as_json:
        emit_json("demo", {**out, "apply": out["apply"].to_dict()})
        return
    show_apply(out["apply"])
    console.print(f"next: steuops apply --model {DEMO_MODEL} --forget pneumonia"
                  + (f" --home {out['home']}" if home else ""), highlight=False)
