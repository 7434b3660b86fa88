"""`apply` killed with SIGKILL in each phase: production never changes to a half-made version, a
half-registered version is recognisably incomplete and refused by gate/promote, and a rerun succeeds
(marking the crashed version superseded)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import FAST_STEU, MODEL

pytestmark = pytest.mark.slow
PHASES = ("validate", "unlearn", "register", "export", "promote")


def _steuops(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("steuops")
    return [str(script), *args]


def _apply_argv(home: Path, policy: Path) -> list[str]:
    return _steuops("apply", "--model", MODEL, "--forget", "sepsis", "--home", str(home), "--policy", str(policy),
                    "--device", "cpu", "--config", json.dumps(FAST_STEU))


def _kill_at(argv: list[str], phase: str) -> bool:
    """Run until the log says `phase started`, then SIGKILL; True if it was killed (not finished first)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.rstrip().endswith(f"] {phase} started"):
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=300)
    return proc.returncode == -signal.SIGKILL


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_in_each_phase_leaves_production_safe_and_a_rerun_succeeds(phase, make_home, policies):
    from steuops.lineage import STATUS_COMPLETE, STATUS_INCOMPLETE, STATUS_SUPERSEDED

    home, registry = make_home()
    assert _kill_at(_apply_argv(home, policies["loose"]), phase), f"apply finished before {phase}"
    production = registry.alias_version(MODEL, "production")
    rows = {row.version: row for row in registry.versions(MODEL)}
    if production != "1":  # killed after the alias moved: only a complete version may be there
        assert phase == "promote" and rows[production].status == STATUS_COMPLETE
    half_made = [v for v, row in rows.items() if row.status == STATUS_INCOMPLETE]
    if phase in ("validate", "unlearn"):
        assert list(rows) == ["1"], "nothing is registered before the register phase"
    if phase == "export":
        assert half_made, "a version killed during export must read as incomplete"
    for version in half_made:
        assert registry.alias_version(MODEL, "candidate") != version
        for command in ("promote", "gate"):
            done = _run(_steuops(command, "--model", MODEL, "--version", version, "--home", str(home),
                                 "--policy", str(policies["loose"])))
            assert done.returncode == 2 and "incomplete" in done.stderr, (command, done.stderr[-2000:])
        shown = _run(_steuops("history", "--model", MODEL, "--home", str(home), "--json"))
        statuses = {r["version"]: r["status"] for r in json.loads(shown.stdout)["result"]["versions"]}
        assert statuses[version] == STATUS_INCOMPLETE
    rerun = _run(_apply_argv(home, policies["loose"]))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = {row.version: row for row in registry.versions(MODEL)}
    new = registry.alias_version(MODEL, "production")
    assert rows[new].status == STATUS_COMPLETE and "onnx" in {Path(n).name for n in registry.artifact_names(
        registry.resolve(MODEL, version=new))}
    for version in half_made:
        assert rows[version].status == STATUS_SUPERSEDED and rows[version].tags["steuops.superseded_by"] == new
