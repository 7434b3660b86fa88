"""bench/audit_error.py's bootstrap: each figure's value is the audit's own statistic on the whole sample, and its
sampling error grows as the sample shrinks (the bench's point: what halving the audit's test sample would cost)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from steuops.audit.stats import f1, roc_auc

BENCH = Path(__file__).resolve().parents[1] / "bench" / "audit_error.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("audit_error_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_f1_bootstrap_is_the_audits_f1_with_an_error_that_grows_on_half_the_notes(bench):
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.25).astype(np.int8)
    pred = np.where(rng.random(300) < 0.8, y, 1 - y).astype(np.int8)  # right on 80% of notes
    out = bench._boot_f1(y, pred, np.random.default_rng(0), 400)
    assert out["value"] == pytest.approx(f1(y, pred))
    assert 0.01 < out["se"] < out["se_half_test"] < 0.2
    assert bench._boot_f1(y, np.zeros(300, np.int8), np.random.default_rng(0), 50)["se"] == 0.0  # nothing found


def test_auc_bootstrap_is_the_audits_auc_with_an_error_that_grows_on_half_the_notes(bench):
    rng = np.random.default_rng(4)
    members = rng.normal(0.5, 1.0, 200)
    is_out = rng.random(300) < 0.25
    outsiders = rng.normal(0.0, 1.0, 300)
    out = bench._boot_auc(members, outsiders, is_out, np.random.default_rng(0), 400)
    assert out["value"] == pytest.approx(roc_auc(members, outsiders[is_out]))
    assert 0.01 < out["se"] < out["se_half_test"] < 0.2
