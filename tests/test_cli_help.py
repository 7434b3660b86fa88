"""The CLI for humans: every command's help shows an example and its exit codes; shell completion."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = (["apply"], ["demo"], ["gate"], ["promote"], ["rollback"], ["history"], ["policy", "check"],
            ["export"], ["serve"], ["report"])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example_and_exit_codes(command, capsys, monkeypatch):
    from steuops.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and f"steuops {' '.join(command)} " in out, out
    assert "Exit codes:" in out and "0 " in out.split("Exit codes:")[1]
    assert "2 " in out.split("Exit codes:")[1]


def test_root_help_lists_exit_codes_and_completion(capsys, monkeypatch):
    from steuops.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for needle in ("Exit codes", "3 the policy gate rejected", "--install-completion", "--show-completion"):
        assert needle in out, needle


@pytest.mark.parametrize("how", ["argument", "SHELL"])
def test_show_completion_prints_a_bash_script(how):
    env = {k: v for k, v in os.environ.items() if not k.startswith("_STEUOPS")}
    argv = [sys.executable, "-m", "steuops", "--show-completion"]
    if how == "argument":
        argv.append("bash")
    else:
        env["SHELL"] = "/bin/bash"
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "_steuops_completion()" in done.stdout and "complete " in done.stdout
    assert "_STEUOPS_COMPLETE" in done.stdout


def test_completion_completes_command_names():
    """What the shell does with the script: ask steuops for completions of `steuops his`."""
    env = {**os.environ, "_STEUOPS_COMPLETE": "complete_bash", "COMP_WORDS": "steuops his", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "steuops"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["history"]
