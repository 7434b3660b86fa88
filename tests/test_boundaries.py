"""The import boundaries of docs/ARCHITECTURE.md ("Ground rules") are ruff rules that fire.

Each rule is fed a deliberately broken import through `ruff check --stdin-filename FILE -` (the file
need not exist: its name picks the config and the per-file ignores) and must be reported with its code;
each allowance has a control case that must stay clean. Ruff has no per-file ban list, so a file with a
per-file TID251 ignore is re-checked here against the bans it is not exempted from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY_BANS = ("mlflow", "bentoml", "great_expectations")
DEMO = "steuops.demo"
# Files with a per-file TID251 ignore in pyproject.toml -> the one banned module each may import.
# When the `steuops demo` command or its setup moves, edit this and that per-file-ignores line together.
EXEMPT = {
    "steuops/registry.py": "mlflow",
    "steuops/validation.py": "great_expectations",
    "steuops/serving/service.py": "bentoml",
    "steuops/cli/demo.py": DEMO,
}
ENGINE = ["steuops/data.py", "steuops/modeling.py", "steuops/tiny.py", "steuops/edit.py", "steuops/metrics.py",
          "steuops/features.py", "steuops/methods/__init__.py", "steuops/methods/baselines.py",
          "steuops/methods/loop.py", "steuops/methods/steu/method.py", "steuops/methods/hdsu.py", "steuops/hierarchy.py", "steuops/yamlfile.py",
          "steuops/tokens.py",
          "steuops/training.py", "steuops/audit/__init__.py", "steuops/audit/auditor.py",
          "steuops/audit/config.py", "steuops/audit/draw.py", "steuops/audit/passes.py", "steuops/audit/stats.py",
          "steuops/audit/summary.py",
          "steuops/export/__init__.py", "steuops/export/checks.py", "steuops/export/folder.py",
          "steuops/export/graph.py", "steuops/export/registered.py", "steuops/export/runtime.py",
          "steuops/inference.py", "steuops/policy.py", "steuops/gate.py", "steuops/bypass.py",
          "steuops/demo/notes.py", "steuops/demo/model.py", "steuops/demo/bypass.py"]
# Not the engine, but still not the one module allowed each package.
OTHER = ["steuops/pipeline/unlearn.py", "steuops/cli/report.py", "steuops/serving/schema.py", "steuops/lineage.py",
         "steuops/report.py", "steuops/cohort.py"]
CLI_HEAVY = ("torch", "transformers", "mlflow", "bentoml", "great_expectations", "onnx", "onnxruntime", "pandas",
             "numpy", "sklearn")


def _ruff_binary() -> str:
    here = Path(sys.executable).parent / "ruff"
    found = str(here) if here.is_file() else shutil.which("ruff")
    if not found:
        pytest.fail("ruff is not installed: it is in the dev extra (pip install -e '.[dev]')")
    return found


RUFF = _ruff_binary()


def ruff(source: str, filename: str, *options: str) -> list[tuple[str, int, str]]:
    """(code, line, message) of every diagnostic ruff reports on `source` checked as `filename`."""
    done = subprocess.run([RUFF, "check", "--no-cache", "--output-format", "json", *options,
                           "--stdin-filename", filename, "-"],
                          input=source, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return [(d["code"], d["location"]["row"], d["message"]) for d in json.loads(done.stdout)]


def codes(source: str, filename: str, code: str) -> list[int]:
    """The lines `code` is reported on."""
    return [line for c, line, _ in ruff(source, filename) if c == code]


def _in_function(*imports: str) -> str:
    body = "".join(f"    {line}\n" for line in imports)
    return f"def load():\n{body}    return None\n"


HEAVY_IMPORTS = _in_function("import mlflow.transformers", "from mlflow.exceptions import MlflowException",
                             "import bentoml", "from bentoml.exceptions import NotFound",
                             "import great_expectations as gx", "from great_expectations.core import run_identifier")


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]


# ---- (a) mlflow, bentoml, great_expectations: one module each, never the engine -------------------
@pytest.mark.parametrize("filename", ENGINE + OTHER)
def test_heavy_imports_are_banned_outside_their_one_module(filename):
    found = ruff(HEAVY_IMPORTS, filename)
    assert [line for code, line, _ in found if code == "TID251"] == [2, 3, 4, 5, 6, 7], found
    messages = " ".join(message for _, _, message in found)
    for module in HEAVY_BANS:
        assert f"`{module}` is banned" in messages


@pytest.mark.parametrize(("filename", "module"), [(f, m) for f, m in EXEMPT.items() if m in HEAVY_BANS])
def test_the_one_module_may_import_its_package(filename, module):
    source = _in_function(f"import {module}", f"from {module} import something")
    assert codes(source, filename, "TID251") == []


# ---- (b) steuops.demo stays in steuops/demo/ and the `steuops demo` command -----------------------
DEMO_IMPORTS = _in_function("from steuops.demo.bypass import bypass_sets", "from steuops import demo",
                            "import steuops.demo.notes")


@pytest.mark.parametrize("filename", ["steuops/audit/auditor.py", "steuops/export/folder.py", "steuops/pipeline/unlearn.py",
                                      "steuops/cli/report.py", "steuops/cli/gate.py", "steuops/bypass.py",
                                      "steuops/serving/schema.py", "steuops/cli/apply.py"])
def test_steuops_demo_is_banned_outside_the_demo(filename):
    assert codes(DEMO_IMPORTS, filename, "TID251") == [2, 3, 4]


def test_relative_imports_of_the_demo_are_banned_too():
    assert codes("from ..demo.notes import generate\n", "steuops/export/folder.py", "TID251") == [1]
    assert codes("from ..demo import bypass\n", "steuops/cli/report.py", "TID251") == [1]


@pytest.mark.parametrize("filename", ["steuops/demo/setup.py", "steuops/demo/model.py", "steuops/cli/demo.py"])
def test_the_demo_and_its_command_may_import_the_demo(filename):
    assert codes(DEMO_IMPORTS, filename, "TID251") == []


def test_the_demo_may_not_import_heavy_packages():
    """steuops/demo/ruff.toml replaces the banned-api table: it must keep the other bans."""
    assert codes(HEAVY_IMPORTS, "steuops/demo/setup.py", "TID251") == [2, 3, 4, 5, 6, 7]


def test_demo_ban_table_is_the_root_one_without_the_demo():
    demo = tomllib.loads((ROOT / "steuops/demo/ruff.toml").read_text(encoding="utf-8"))
    root = _config()["flake8-tidy-imports"]["banned-api"]
    assert demo["extend"] == "../../pyproject.toml"
    assert demo["lint"]["flake8-tidy-imports"]["banned-api"] == {k: v for k, v in root.items() if k != DEMO}
    assert set(root) == {*HEAVY_BANS, DEMO}


@pytest.mark.parametrize("filename", ["tests/test_anything.py", "bench/anything.py", "docs/anything.py"])
def test_tests_bench_and_docs_tooling_may_import_anything(filename):
    assert codes(HEAVY_IMPORTS + DEMO_IMPORTS, filename, "TID251") == []


# ---- exempted files: checked against every ban but their own -----------------------------------
def test_exemptions_are_the_ones_listed_here():
    ignores = _config()["per-file-ignores"]
    exempt = {path for path, rules in ignores.items() if "TID251" in rules} - {"tests/**", "bench/**", "docs/**"}
    assert exempt == set(EXEMPT), "update EXEMPT and pyproject.toml's per-file-ignores together"


def _residual_options(allowed: str) -> list[str]:
    bans = {k: v for k, v in _config()["flake8-tidy-imports"]["banned-api"].items() if k != allowed}
    table = ", ".join(f"{json.dumps(k)} = {{ msg = {json.dumps(v['msg'])} }}" for k, v in bans.items())
    return ["--isolated", "--select", "TID251", "--config", f"lint.flake8-tidy-imports.banned-api = {{ {table} }}"]


@pytest.mark.parametrize(("filename", "allowed"), EXEMPT.items())
def test_exempted_files_import_only_their_own_banned_module(filename, allowed):
    source = (ROOT / filename).read_text(encoding="utf-8")
    assert ruff(source, filename, *_residual_options(allowed)) == []
    # ...and that check does catch another banned import in the same file.
    other = next(m for m in (*HEAVY_BANS, DEMO) if m != allowed)
    found = ruff(source + _in_function(f"import {other}"), filename, *_residual_options(allowed))
    assert [code for code, _, _ in found] == ["TID251"] and f"`{other}` is banned" in found[0][2]


# ---- (c) steuops.cli: no heavy package at module level ------------------------------------------
@pytest.mark.parametrize("module", CLI_HEAVY)
@pytest.mark.parametrize("filename", ["steuops/cli/__init__.py", "steuops/cli/new_command.py", "steuops/cli/demo.py"])
def test_cli_imports_no_heavy_package_at_module_level(filename, module):
    source = f"import {module}.sub\nfrom {module} import thing\nimport {module} as alias\n"
    assert codes(source, filename, "TID253") == [1, 2, 3]


def test_cli_may_import_heavy_packages_inside_a_command():
    source = _in_function(*(f"import {module}" for module in CLI_HEAVY if module not in HEAVY_BANS))
    assert [code for code, _, _ in ruff(source, "steuops/cli/serve.py") if code.startswith("TID")] == []


def test_module_level_heavy_imports_are_fine_outside_the_cli():
    assert codes("import torch\nimport numpy as np\n", "steuops/tiny.py", "TID253") == []
