"""Run a child Python as if some packages were not installed: BLOCKER becomes the child's sitecustomize.py, so every
process it starts (BentoML's workers too) has them unimportable and writes each attempt down."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BLOCKER = '''
import importlib.abc, importlib.util, os, sys
BLOCKED = frozenset(os.environ["STEUOPS_TEST_BLOCK"].split(","))

def _absent(name):
    return name.partition(".")[0] in BLOCKED

class _Absent(importlib.abc.MetaPathFinder):
    """`import torch` fails as if torch were not installed, and the attempt is written down."""
    def find_spec(self, name, path=None, target=None):
        if _absent(name):
            with open(os.environ["STEUOPS_TEST_BLOCK_LOG"], "a") as fh:
                fh.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: None if _absent(name) else _find_spec(name, package)
sys.meta_path.insert(0, _Absent())
'''


def blocking(folder: Path, modules: Iterable[str], log: Path) -> dict[str, str]:
    """Environment variables for a child in which `modules` cannot be imported (attempts go to `log`). `folder`
    receives the sitecustomize.py and becomes the child's PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": str(folder), "STEUOPS_TEST_BLOCK": ",".join(modules), "STEUOPS_TEST_BLOCK_LOG": str(log)}


def attempted(log: Path) -> set[str]:
    """The module names the child tried to import and was refused."""
    return set(log.read_text().split()) if log.exists() else set()
