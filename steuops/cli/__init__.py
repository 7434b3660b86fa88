"""The `steuops` command: a thin typer app over the library.

Each command group lives in its own module and registers itself on `app`. Heavy libraries are
imported inside the command functions, so `steuops --help` stays fast. `main()` is the one place
where errors become exit codes: 0 done, 1 unexpected, 2 bad input, 3 gate rejected.
"""

from __future__ import annotations

import inspect
import sys

import typer

from steuops import env  # telemetry off before anything else loads

app = typer.Typer(
    name="steuops",
    help=(
        "Remove a diagnosis class from a deployed clinical text classifier.\n\n"
        "Typical use:  steuops demo  (set up a home with a demo model), then\n"
        "steuops apply --model clinical-dx --forget sepsis"
    ),
    epilog=(
        "Exit codes (every command): 0 done; 1 unexpected error (a bug: please report it); "
        "2 bad input or an unusable registry, nothing was changed; 3 the policy gate rejected the candidate.\n\n"
        "Shell completion: steuops --install-completion (or --show-completion [bash|zsh|fish|powershell] to print "
        "the script)."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def epilog(*examples: str, codes: str) -> str:
    """The help epilog of a command: its examples, then what its exit codes mean (shown by --help)."""
    shown = "\n\n".join(f"  {line}" for line in examples)
    return f"Example{'s' if len(examples) > 1 else ''}:\n\n{shown}\n\nExit codes: {codes}."


EXIT_BAD_INPUT = "2 bad input (unknown model/version, bad option or file), nothing was changed; 1 unexpected error"

# Command modules register themselves on import; keep this list in help order.
_COMMANDS = ("apply", "demo", "gate", "serve", "report")


def _register() -> None:
    import importlib

    for name in _COMMANDS:
        try:
            importlib.import_module(f"steuops.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"steuops.cli.{name}":
                raise
    for info in commands(app):
        info.help = reflow(info.help or inspect.getdoc(info.callback) or "")


def commands(typer_app: typer.Typer) -> list[typer.models.CommandInfo]:
    """Every command registered on `typer_app`, its groups' (`policy check`) included."""
    found = list(typer_app.registered_commands)
    for group in typer_app.registered_groups:
        found += commands(group.typer_instance)
    return found


def reflow(doc: str) -> str:
    """A command's docstring as its help: each paragraph one line, for the terminal to wrap.

    typer 0.29 keeps the line breaks inside a docstring's paragraphs, so help broke sentences where the
    source did and again at the terminal's width. A paragraph that starts with click's \\b keeps its lines.
    """
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def _print_version(value: bool) -> None:
    if value:
        from steuops import __version__

        typer.echo(f"steuops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Remove a diagnosis class from a deployed clinical text classifier."""
    env.cpu_bf16_allowed()  # a bad STEUOPS_CPU_BF16 is exit 2 before any command starts work


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def completion_shell(named: str | None) -> str:
    """The shell `--show-completion` writes for: the one named, else the one that started steuops, else $SHELL's.

    typer takes no name and only looks at the process tree, which fails where no shell started steuops (a
    provisioning script, a container's entry point) and finds sh under a Dockerfile's RUN.
    """
    import os

    from steuops.errors import UsageError

    shell = named
    if shell is None:
        try:
            import shellingham

            shell = shellingham.detect_shell()[0]
        except (ImportError, OSError):  # ShellDetectionFailure is an OSError
            shell = None
    if shell not in SHELLS and named is None:
        shell = os.path.basename(os.environ.get("SHELL", "")) or shell
    if shell not in SHELLS:
        found = repr(shell) if shell else "(none found: no shell started steuops and $SHELL is unset)"
        raise UsageError(f"--show-completion: no completion script for the shell {found}",
                         hint=f"name one: steuops --show-completion {{{','.join(SHELLS)}}}")
    return shell


def _show_completion(args: list[str]) -> None:
    from typer.completion import get_completion_script

    named = args[1] if len(args) > 1 else None
    typer.echo(get_completion_script(prog_name="steuops", complete_var="_STEUOPS_COMPLETE",
                                     shell=completion_shell(named)))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn errors into one line, a hint and an exit code."""
    from steuops.cli.render import report_error

    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["--show-completion"] and len(args) <= 2:
            _show_completion(args)
            return 0
        # standalone_mode=False: click *returns* typer.Exit's code instead of raising it, so keep it
        # (a rejected `gate --json` exits 3 through that path).
        code = app(args=args, prog_name="steuops", standalone_mode=False)
    except SystemExit as exc:  # --help and the like
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001  (the one place errors become exit codes)
        return report_error(exc, as_json="--json" in args)
    return code if isinstance(code, int) else 0


# The heavy imports (torch, transformers, mlflow) leave ~650k objects that the cyclic GC scans again each time the
# heap grows by a quarter, and once more as the interpreter exits. On 2 cores that was ~2.5 s of scans and ~3 s of
# exit in a 30-s `steuops export` (bench/cli_gc.py). A command process can do without both: rarer young collections
# (the threshold; cyclic garbage is still collected) and no final scan (gc.freeze). Only the process entry point
# does this: main() runs in-process in notebooks and tests, whose objects must stay collectable.
GC_THRESHOLD = (50_000, 10, 10)


def run() -> int:
    """The `steuops` process: main(), with the GC set for a short-lived command process (above)."""
    import gc

    gc.set_threshold(*GC_THRESHOLD)
    try:
        return main()
    finally:
        gc.freeze()


_register()
