"""Rendering shared by all commands: the console, the --json envelope, errors."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

SCHEMA = "steuops/v1"

console = Console(stderr=False)
err_console = Console(stderr=True)


def envelope(command: str, result: Any, ok: bool = True) -> dict[str, Any]:
    from steuops import __version__

    return {"schema": SCHEMA, "steuops_version": __version__, "command": command, "ok": ok, "result": result}


def emit_json(command: str, result: Any, ok: bool = True) -> None:
    """Print one JSON envelope on stdout (the only thing on stdout in --json mode)."""
    sys.stdout.write(json.dumps(envelope(command, result, ok), indent=2, default=_default) + "\n")
    sys.stdout.flush()


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def report_error(exc: BaseException, as_json: bool = False) -> int:
    """Print one line (plus a hint) for a known error, a short traceback for a bug; return the exit code."""
    from steuops.errors import SteuopsError

    if isinstance(exc, typer.Abort):
        err_console.print("[red]aborted[/red]")
        return 1
    if _is_usage_error(exc):  # usage errors from typer's (vendored) click
        code = exc.exit_code if exc.exit_code else 2
        if as_json:
            emit_json("error", {"type": "UsageError", "message": exc.format_message(), "exit_code": code}, ok=False)
        else:
            exc.show(file=sys.stderr)
        return code
    if isinstance(exc, SteuopsError):
        detail: dict[str, Any] = {
            "type": type(exc).__name__,
            "message": exc.message,
            "hint": exc.hint,
            "exit_code": exc.exit_code,
        }
        failures = getattr(exc, "failures", None)
        if failures:
            detail["failures"] = failures
        decision = getattr(exc, "decision", None)
        if decision is not None:
            detail["decision"] = decision
        result = getattr(exc, "result", None)  # a rejected apply: what was measured and registered
        if result is not None:
            detail["result"] = result.to_dict() if hasattr(result, "to_dict") else result
        if as_json:
            emit_json("error", detail, ok=False)
        else:
            label = "rejected" if exc.exit_code == 3 else "error"
            err_console.print(f"[bold red]{label}:[/bold red] {exc.message}", highlight=False)
            for line in failures or []:
                err_console.print(f"  - {line}", highlight=False)
            if exc.hint:
                err_console.print(f"[dim]hint:[/dim] {exc.hint}", highlight=False)
        return exc.exit_code
    import traceback

    if as_json:
        emit_json("error", {"type": type(exc).__name__, "message": str(exc), "exit_code": 1}, ok=False)
    traceback.print_exception(exc, file=sys.stderr)
    err_console.print(f"[bold red]unexpected error:[/bold red] {type(exc).__name__}: {exc}", highlight=False)
    return 1


def _is_usage_error(exc: BaseException) -> bool:
    # typer >= 0.29 vendors click, so match the shape rather than a class from either package.
    return isinstance(exc, typer.exceptions.TyperException) and hasattr(exc, "format_message")


@contextmanager
def progress_bar(enabled: bool = True):
    """Yields a `progress(phase, done, total)` callback backed by a rich progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield None
        return
    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=False,
    ) as bar:

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update
