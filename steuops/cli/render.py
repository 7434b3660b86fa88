"""Rendering shared by all commands: the console, the --json envelope, errors."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions

SCHEMA = "steuops/v1"
PIPED_WIDTH = 100_000  # "no limit": a table row is one line however long its cells are


class _StdoutConsole(Console):
    """stdout. On a terminal, its width (cells fold, never cut). Piped or captured (`steuops history |
    grep production`, a CI log), no width limit whatever COLUMNS or the terminal on stderr say: a table
    row stays one line, so grep keeps a version's number on the line of its aliases."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        return size if self.is_terminal else ConsoleDimensions(PIPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = _StdoutConsole(stderr=False)
err_console = Console(stderr=True, soft_wrap=True)  # an error line stays one line in a log


def show_audit_time(timing: dict[str, Any] | None) -> None:
    """The line `report` and `apply --audit` print for an audit run now (steuops.audit.audit_time): its encoder
    passes, with the notes per model, apart from the attacks."""
    if not timing:
        return
    ran = ", ".join(f"{role} {n:,} notes" for role, n in timing["encoder_notes"].items()) or "all read back"
    console.print(f"audit: {timing['seconds']:.1f} s; encoder passes {timing['passes']:.1f} s ({ran}), attacks and "
                  f"bookkeeping {timing['attacks']:.1f} s", highlight=False)


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
    """Yields a `progress(phase, done, total)` callback: rich bars on a terminal, plain lines in a CI log.

    Phases named "step NAME" are the pipeline's steps (0/1 at the start, 1/1 at the end); others are
    loops with a count (train, unlearn, predict, audit attacks)."""
    if not enabled:
        yield None
        return
    if err_console.is_terminal:
        with _rich_progress() as update:
            yield update
        return
    reporter = PlainProgress(sys.stderr)
    with reporter.heartbeat():
        yield reporter


@contextmanager
def _rich_progress():
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    started: dict[str, float] = {}
    with Progress(
        TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=False,
    ) as bar:

        def update(phase: str, done: int, total: int) -> None:
            if phase.startswith("step "):  # a line when a step ends, not a bar
                name = phase[5:]
                if done == 0:
                    started[name] = time.monotonic()
                elif name in started:
                    bar.console.print(f"[green]done[/green] {name} ({time.monotonic() - started.pop(name):.1f} s)",
                                      highlight=False)
                return
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


def _shown(phase: str) -> str:
    """Steps read as their name ("unlearn"); loops inside them as "unlearn: loop"."""
    return phase[5:] if phase.startswith("step ") else f"  {phase} loop"


class PlainProgress:
    """Progress for logs (no terminal): a line when a phase starts and ends, and one at least every
    `every` seconds while anything runs (percent and ETA where the phase has a count)."""

    def __init__(self, stream: Any, every: float = 10.0) -> None:
        import threading
        import time

        self.stream, self.every, self._clock = stream, every, time.monotonic
        self.t0 = self._clock()
        self.last_line = self.t0
        self.active: dict[str, tuple[float, int, int]] = {}  # phase -> (started, done, total)
        self._lock = threading.Lock()

    def __call__(self, phase: str, done: int, total: int) -> None:
        with self._lock:
            now = self._clock()
            step = phase.startswith("step ")
            if phase not in self.active:
                if step and done >= total:
                    return  # the end of a step whose start was not shown
                self.active[phase] = (now, done, total)
                self._line(f"{_shown(phase)} started" + ("" if step else f" ({total} step{'' if total == 1 else 's'})"))
                return
            started, _, _ = self.active[phase]
            self.active[phase] = (started, done, total)
            if done >= total:
                del self.active[phase]
                self._line(f"{_shown(phase)} done in {now - started:.1f} s")
            elif now - self.last_line >= self.every:
                self._line(self._status(phase, now))

    def _status(self, phase: str, now: float) -> str:
        started, done, total = self.active[phase]
        if total <= 1 or done <= 0:
            return f"{_shown(phase)} running for {now - started:.0f} s"
        eta = (now - started) / done * (total - done)
        return f"{_shown(phase)} {100 * done / total:.0f}% ({done}/{total}), ETA {eta:.0f} s"

    def _line(self, text: str) -> None:
        now = self._clock()
        self.last_line = now
        self.stream.write(f"[{now - self.t0:6.1f}s] {text}\n")
        self.stream.flush()

    @contextmanager
    def heartbeat(self):
        """A line every `every` seconds even when no loop reports (loading, registering, exporting)."""
        import threading

        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.every / 2):
                with self._lock:
                    now = self._clock()
                    if self.active and now - self.last_line >= self.every:
                        self._line(self._status(list(self.active)[-1], now))

        thread = threading.Thread(target=beat, name="steuops-progress", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=1)
