"""Issues 16 and 17 through the real CLI: every bad input is exit 2 with one line naming the
field or file (and a hint), no traceback, no note text, and nothing changed in the registry.

Cohort texts carry MARKER, a string that must never reach the output. The registry is a real
embedded one holding the tiny model (registry_helpers); bad options are shown to fail before any
work by pointing --home at a folder that must still not exist afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from registry_helpers import MODEL, write_policy

from steuops.cli import main
from steuops.methods import MethodConfig

MARKER = "ZQXMARKER"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_tokenizer, notes_frame) -> dict[str, Path]:
    """One home with clinical-dx v1 @production, shared: a refused input changes nothing in it.
    The model is untrained: these tests never get as far as training, and fine-tuning costs ~50 s."""
    from conftest import LABELS

    from steuops.registry import Registry
    from steuops.tiny import classifier

    root = tmp_path_factory.mktemp("input-cli")
    home = root / "home"
    model = classifier(LABELS, vocab_size=len(tiny_tokenizer), hidden=32, layers=2)
    Registry(home).log_base_model(MODEL, model, tiny_tokenizer, dataset=notes_frame)
    return {"home": home, "policy": write_policy(root / "loose.yaml")}


@pytest.fixture()
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps at 80 columns: keep each message on its line


def _marked(frame):
    """The demo cohort with MARKER in every note."""
    frame = frame.copy()
    frame["text"] = [f"{text} {MARKER}" for text in frame["text"]]
    return frame


def _apply(world: dict[str, Path], *extra: str) -> list[str]:
    return ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(world["home"]), "--policy",
            str(world["policy"]), "--device", "cpu", "--no-export", *extra]


def _usage_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; assert exit 2, a first line 'error: ...' holding every needle, a hint, no traceback
    and no MARKER. Returns that first line."""
    code = main(argv)
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert code == 2, both
    assert "Traceback" not in both and MARKER not in both
    return _error_line(captured.err, *needles)


def _error_line(err: str, *needles: str) -> str:
    """The one 'error: ' line (progress lines may come before it on stderr), followed by a hint."""
    lines = err.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error")]
    assert len(errors) == 1, err
    line = lines[errors[0]]
    assert line.startswith("error: "), err
    for needle in needles:
        assert needle in line, (needle, line)
    assert any(later.startswith("hint: ") for later in lines[errors[0] + 1:]), err
    return line


def _versions(world: dict[str, Path]) -> list[str]:
    from steuops.registry import Registry

    return [row.version for row in Registry(world["home"]).versions(MODEL)]


# ---- cohort files (issue 16) -------------------------------------------------------------------
def test_cohort_not_utf8_names_file_and_true_offset(world, notes_frame, tmp_path, capsys, wide):
    data = _marked(notes_frame.head(40)).to_csv(index=False).encode("utf-8")
    at = data.index(MARKER.encode(), 500)  # well past the first line: pandas reported an in-line offset
    path = tmp_path / "latin.csv"
    path.write_bytes(data[:at] + b"\xe9" + data[at + 1:])
    line_number = data[:at].count(b"\n") + 1
    line = _usage_error(capsys, _apply(world, "--cohort", str(path)), str(path), f"not UTF-8 (byte {at}, ")
    assert f"on line {line_number}" in line
    assert _versions(world) == ["1"]


def test_cohort_missing_text_column(world, notes_frame, tmp_path, capsys, wide):
    path = tmp_path / "body.csv"
    _marked(notes_frame.head(40)).rename(columns={"text": "body"}).to_csv(path, index=False)
    _usage_error(capsys, _apply(world, "--cohort", str(path)), str(path), "missing column(s) text", "found: ")


def test_cohort_without_header_row_shows_no_text(world, notes_frame, tmp_path, capsys, wide):
    path = tmp_path / "noheader.csv"
    _marked(notes_frame.head(40))[["text", "labels"]].to_csv(path, index=False, header=False)
    _usage_error(capsys, _apply(world, "--cohort", str(path)), str(path), "missing column(s) text")


@pytest.mark.parametrize("content", [b"", b"text,labels\n"])
def test_cohort_empty(world, tmp_path, capsys, wide, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    _usage_error(capsys, _apply(world, "--cohort", str(path)), str(path), "is empty")


def test_cohort_directory(world, tmp_path, capsys, wide):
    _usage_error(capsys, _apply(world, "--cohort", str(tmp_path)), str(tmp_path), "is a directory")


@pytest.mark.timeout(60)  # opening the FIFO for reading would block forever: fail, do not hang
def test_cohort_fifo(world, tmp_path, capsys, wide):
    fifo = tmp_path / "cohort.csv"
    os.mkfifo(fifo)
    _usage_error(capsys, _apply(world, "--cohort", str(fifo)), str(fifo), "FIFO")


def test_cohort_over_size_limit(world, notes_frame, tmp_path, capsys, wide, monkeypatch):
    path = tmp_path / "big.csv"
    _marked(notes_frame).to_csv(path, index=False)
    monkeypatch.setenv("STEUOPS_MAX_COHORT_BYTES", "4096")
    line = _usage_error(capsys, _apply(world, "--cohort", str(path)), str(path), "size limit of 4.0 KiB")
    assert f"{path.stat().st_size:,} bytes" in line


def test_cohort_whitespace_only_texts_rejected_like_empty(world, notes_frame, tmp_path, capsys, wide):
    frame = _marked(notes_frame)
    frame.loc[[3, 7, 11], "text"] = ["   ", "\t", " \n "]
    path = tmp_path / "blank.jsonl"
    frame.to_json(path, orient="records", lines=True)
    code = main(_apply(world, "--cohort", str(path), "--json"))
    envelope = json.loads(capsys.readouterr().out)
    assert code == 2 and envelope["result"]["type"] == "ValidationFailed"
    assert envelope["result"]["failures"] == ["text: 3 rows are empty"]  # the blank rows, nothing else
    assert MARKER not in json.dumps(envelope)
    assert _versions(world) == ["1"]


def test_dev_zero_cohort_in_a_real_process(world, tmp_path):
    """The installed entry point, as a user runs it: /dev/zero is refused at once, not read until
    memory runs out (the child gets a memory cap so a regression fails here instead)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30)); "
            "from steuops.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, *_apply(world, "--cohort", "/dev/zero")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "1000"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    _error_line(done.stderr, "/dev/zero: is a character device, not a regular file")


# ---- --config (issue 17) -----------------------------------------------------------------------
@pytest.mark.parametrize(("config", "needles"), [
    ('{"k": "x"}', ("STEUConfig.k", "expected an integer", "got string")),
    ('{"k": null}', ("STEUConfig.k", "expected an integer", "got null")),
    ('{"k": 2.5}', ("STEUConfig.k", "expected an integer", "got number 2.5")),
    ('{"lr": "fast"}', ("STEUConfig.lr", "expected a finite number", "got string")),
    ('{"cpu_bf16": 1}', ("STEUConfig.cpu_bf16", "expected true or false", "got integer")),
    ('{"epochs": true}', ("STEUConfig.epochs", "expected an integer", "got boolean")),
    ('[1]', ("--config", "must be a JSON object", "got list")),
    ('"k"', ("--config", "must be a JSON object", "got str")),
    ('{"k": 2', ("--config", "not valid JSON")),
])
def test_config_type_errors_before_any_work(tmp_path, capsys, wide, config, needles):
    home = tmp_path / "never-created"
    _usage_error(capsys, ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--config", config],
                 *needles)
    assert not home.exists()  # refused before the registry was opened


@pytest.mark.parametrize("command", [["apply", "--forget", "sepsis"], ["report", "--version", "2"]])
def test_unknown_audit_depth_before_any_work(tmp_path, capsys, wide, command):
    home = tmp_path / "never-created"
    line = _usage_error(capsys, [command[0], "--model", MODEL, *command[1:], "--home", str(home), "--audit-depth",
                                 "deep"], "unknown audit depth 'deep'")
    assert "standard" not in line  # the choices are in the hint, under the one error line
    assert not home.exists()


def test_config_retrain_optional_field(tmp_path, capsys, wide):
    argv = ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(tmp_path / "h"), "--method", "retrain",
            "--config", '{"head_lr": "x"}']
    _usage_error(capsys, argv, "RetrainConfig.head_lr", "a finite number or null", "got string")


@dataclass
class Typed(MethodConfig):
    """A method config with the annotation kinds the shipped ones do not use (yet)."""

    mode: Literal["fast", "slow"] = "fast"
    note: str | None = None


def test_config_typing_in_from_dict():
    from steuops.errors import ConfigError

    config = Typed.from_dict({"epochs": 2.0, "lr": 1, "mode": "slow", "note": None})
    assert config.epochs == 2 and type(config.epochs) is int and type(config.lr) is float and config.mode == "slow"
    for bad, field in (({"mode": "medium"}, "Typed.mode"), ({"note": 3}, "Typed.note"), ({"lr": None}, "Typed.lr"),
                       ({"seed": float("nan")}, "Typed.seed"), ({"lr": float("inf")}, "Typed.lr")):
        with pytest.raises(ConfigError) as info:
            Typed.from_dict(bad)
        assert str(info.value).startswith(f"{field}: expected "), info.value
        assert info.value.hint.startswith("e.g. --config")
    with pytest.raises(ConfigError, match="expected one of \"fast\", \"slow\", got string \"medium\""):
        Typed.from_dict({"mode": "medium"})


# ---- --junit (issue 17) ------------------------------------------------------------------------
def _bad_junit_paths(tmp_path: Path) -> list[tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    return [(tmp_path, "is a directory"), (Path("/proc/x.xml"), "no file can be created in /proc"),
            (Path("/proc/no-such-dir/x.xml"), "no file can be created in /proc"),
            (a_file / "gate.xml", "is not a folder")]


@pytest.mark.parametrize("case", range(4))
def test_apply_junit_unwritable_before_any_work(tmp_path, capsys, wide, case):
    path, needle = _bad_junit_paths(tmp_path)[case]
    home = tmp_path / "never-created"
    _usage_error(capsys, ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home),
                          "--junit", str(path)], f"--junit {path}", needle)
    assert not home.exists()


@pytest.mark.parametrize("case", range(4))
def test_gate_junit_unwritable_before_any_work(tmp_path, capsys, wide, case):
    path, needle = _bad_junit_paths(tmp_path)[case]
    home = tmp_path / "never-created"
    _usage_error(capsys, ["gate", "--model", MODEL, "--version", "1", "--home", str(home), "--junit", str(path)],
                 f"--junit {path}", needle)
    assert not home.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_junit_in_read_only_folder(tmp_path, capsys, wide):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    _usage_error(capsys, ["gate", "--model", MODEL, "--version", "1", "--home", str(tmp_path / "h"),
                          "--junit", str(folder / "gate.xml")], "--junit", "no file can be created")


def test_junit_check_leaves_nothing_behind(tmp_path):
    from steuops.cli.apply import check_writable

    existing = tmp_path / "old.xml"
    existing.write_text("<previous/>", encoding="utf-8")
    before = os.stat(existing)
    for path in (tmp_path / "gate.xml", existing, tmp_path / "new" / "sub" / "gate.xml"):
        check_writable(path, "--junit")  # a missing folder is fine: write_junit creates it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.xml"]
    assert existing.read_text(encoding="utf-8") == "<previous/>" and os.stat(existing).st_mtime == before.st_mtime


def test_gate_junit_in_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "steuops", "gate", "--model", MODEL, "--version", "1", "--home",
                           str(tmp_path / "h"), "--junit", "/proc/x.xml"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "1000"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert _error_line(done.stderr).startswith("error: --junit /proc/x.xml: ") and not (tmp_path / "h").exists()


# ---- policy (issue 17) -------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "# thresholds to follow\n", "null\n"])
def test_apply_with_empty_policy(tmp_path, capsys, wide, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")
    home = tmp_path / "never-created"
    _usage_error(capsys, ["apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy", str(path)],
                 str(path), "empty")
    assert not home.exists()
