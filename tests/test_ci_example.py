"""The commands of examples/github-actions-unlearning-gate.yml, run as the workflow runs them
(bash -eo pipefail, in the checkout, $GITHUB_OUTPUT), against a registry holding a real candidate."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from registry_helpers import FAST_STEU, MODEL

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "github-actions-unlearning-gate.yml"


def _steps() -> dict[str, dict]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = doc["jobs"].values()
    return {step["name"]: step for step in job["steps"] if "name" in step}


def _run(step: dict, env: dict[str, str]) -> subprocess.CompletedProcess:
    step_env = {**env, **{k: str(v) for k, v in (step.get("env") or {}).items() if "${{" not in str(v)}}
    return subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=ROOT, env=step_env,
                          capture_output=True, text=True, timeout=300)


def _output(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.mark.skipif(not WORKFLOW.exists(), reason="examples/ workflow not present")
def test_workflow_commands_gate_a_candidate(make_home, policies, tmp_path):
    from steuops.pipeline import apply, regate

    home, registry = make_home()
    apply(MODEL, ["sepsis"], home=home, policy=policies["manual"], method_config=FAST_STEU, device="cpu",
          export=False)  # the candidate the workflow gates (v2, not promoted)
    expected = 0 if regate(MODEL, "2", policy=ROOT / "policies" / "default.yaml", home=home).gate.passed else 3
    steps = _steps()
    output = tmp_path / "github_output"
    env = {**os.environ, "STEUOPS_HOME": str(home), "MLFLOW_TRACKING_URI": "", "MODEL": MODEL, "VERSION": "2",
           "GITHUB_OUTPUT": str(output)}
    for flag in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(flag, None)

    done = _run(steps["Check the policy file"], env)
    assert done.returncode == 0, done.stderr
    output.write_text("")
    done = _run(steps["Policy gate"], env)
    assert done.returncode == 0, done.stderr  # the step records the code and carries on
    code = _output(output)["exit_code"]
    assert code == str(expected), done.stdout + done.stderr
    assert (ROOT / "gate.xml").is_file()  # the workflow writes it in the checkout for the publisher
    (ROOT / "gate.xml").replace(tmp_path / "gate.xml")
    done = _run(steps["Fail unless the gate passed"], {**env, "CODE": code})
    assert done.returncode == expected

    # An unknown version: the gate step still completes, the last step fails the job with exit 2.
    output.write_text("")
    done = _run(steps["Policy gate"], {**env, "VERSION": "99"})
    assert done.returncode == 0 and _output(output)["exit_code"] == "2"
    done = _run(steps["Fail unless the gate passed"], {**env, "CODE": "2"})
    assert done.returncode == 2 and "bad input" in done.stdout
    assert registry.alias_version(MODEL, "production") == "1"  # gating never promotes
