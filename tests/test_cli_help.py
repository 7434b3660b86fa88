"""The CLI for humans: every command's help shows an example and its exit codes; shell completion."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = (["apply"], ["demo"], ["gate"], ["promote"], ["rollback"], ["history"], ["policy", "check"],
            ["export"], ["pack"], ["serve"], ["report"])


def test_the_help_tests_cover_every_command():
    import typer

    from steuops.cli import app

    def paths(command, prefix: list[str]) -> list[list[str]]:
        if hasattr(command, "commands"):  # a group (typer 0.29 brings its own click)
            return [p for name, sub in command.commands.items() for p in paths(sub, [*prefix, name])]
        return [prefix]

    assert sorted(paths(typer.main.get_command(app), [])) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example_and_exit_codes(command, capsys, monkeypatch):
    from steuops.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and f"steuops {' '.join(command)} " in out, out
    assert "Exit codes:" in out and "0 " in out.split("Exit codes:")[1]
    assert "2 " in out.split("Exit codes:")[1]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_wraps_at_the_terminal_not_where_the_docstring_did(command, capsys, monkeypatch):
    """typer keeps a docstring's line breaks; each paragraph must reach the terminal as one line to wrap."""
    import inspect

    from steuops.cli import app, commands, main

    monkeypatch.setenv("COLUMNS", "1000")  # wider than any paragraph: each must print as one line
    assert main([*command, "--help"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    (info,) = [c for c in commands(app) if (c.name or c.callback.__name__) == command[-1]]
    for paragraph in inspect.getdoc(info.callback).split("\n\n"):
        assert " ".join(paragraph.split()) in lines, paragraph


def test_the_command_list_gives_each_commands_first_paragraph_on_one_line(capsys, monkeypatch):
    import inspect

    from steuops.cli import app, main

    monkeypatch.setenv("COLUMNS", "1000")
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for info in app.registered_commands:  # the root lists its own commands (and the policy group)
        first = " ".join(inspect.getdoc(info.callback).split("\n\n")[0].split())
        assert any(first in line for line in lines), first


def test_reflow_joins_lines_and_keeps_paragraphs_and_click_b_blocks():
    from steuops.cli import reflow

    doc = "First line\n    goes on.\n\n    Second\n    paragraph.\n\n    \b\n    kept\n    as is"
    assert reflow(doc) == "First line goes on.\n\nSecond paragraph.\n\n\b\nkept\nas is"


def test_root_help_lists_exit_codes_and_completion(capsys, monkeypatch):
    from steuops.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for needle in ("Exit codes", "3 the policy gate rejected", "--install-completion", "--show-completion"):
        assert needle in out, needle


def test_show_completion_prints_the_named_shells_script():
    """A named shell decides, wherever steuops runs: the process tree is not read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("_STEUOPS")}
    done = subprocess.run([sys.executable, "-m", "steuops", "--show-completion", "bash"], capture_output=True,
                          text=True, env={**env, "SHELL": "/bin/zsh"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "_steuops_completion()" in done.stdout and "complete " in done.stdout
    assert "_STEUOPS_COMPLETE" in done.stdout and "compdef" not in done.stdout


@pytest.mark.parametrize(("found", "shell_env", "expected"), [
    ("zsh", "/bin/bash", "zsh"),  # the shell that started steuops, over $SHELL
    (None, "/usr/bin/fish", "fish"),  # nothing found in the process tree (a provisioning script): $SHELL
    ("sh", "/bin/bash", "bash"),  # a Dockerfile's RUN: sh has no script, $SHELL does
])
def test_show_completion_without_a_name_reads_the_process_tree_then_shell(found, shell_env, expected, monkeypatch,
                                                                           capsys):
    import shellingham

    from steuops.cli import main

    def detect_shell():
        if found is None:
            raise shellingham.ShellDetectionFailure()
        return found, f"/bin/{found}"

    monkeypatch.setattr(shellingham, "detect_shell", detect_shell)
    monkeypatch.setenv("SHELL", shell_env)
    assert main(["--show-completion"]) == 0
    out = capsys.readouterr().out
    assert {"bash": "complete -o default", "zsh": "#compdef steuops", "fish": "complete --command steuops"}[
        expected] in out


def test_show_completion_for_an_unknown_shell_is_one_line_exit_2(monkeypatch, capsys):
    import shellingham

    from steuops.cli import main

    monkeypatch.setattr(shellingham, "detect_shell", lambda: ("sh", "/bin/sh"))
    monkeypatch.delenv("SHELL", raising=False)
    assert main(["--show-completion"]) == 2
    assert main(["--show-completion", "tcsh"]) == 2

    def no_shell():
        raise shellingham.ShellDetectionFailure()

    monkeypatch.setattr(shellingham, "detect_shell", no_shell)
    assert main(["--show-completion"]) == 2
    err = capsys.readouterr().err
    assert "'sh'" in err and "'tcsh'" in err and "none found" in err
    assert "steuops --show-completion {bash,zsh,fish,powershell,pwsh}" in err


def test_completion_completes_command_names():
    """What the shell does with the script: ask steuops for completions of `steuops his`."""
    env = {**os.environ, "_STEUOPS_COMPLETE": "complete_bash", "COMP_WORDS": "steuops his", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "steuops"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["history"]
