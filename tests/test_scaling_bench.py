"""Smoke test of bench/scaling.py: `--quick` (n = 300 and 600, a 32-wide tiny BERT, one epoch) writes a sane
JSON file and a PNG. Run as a subprocess: the bench fixes torch's thread count for its whole process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["steu_cohort", "steu_split", "steu_cohort_fixed", "steu_split_fixed"]


def test_quick_scaling_bench_writes_json_and_png(tmp_path):
    out = tmp_path / "scaling-quick.json"
    proc = subprocess.run([sys.executable, "bench/scaling.py", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "n=300: original" in proc.stderr and "n=600 done" in proc.stderr  # progress lines go to stderr
    assert "wrote" in proc.stdout

    result = json.loads(out.read_text())
    assert result["complete"] is True and result["preset"] == "quick"
    assert result["forget"] == ["sepsis"] and result["prevalence"] == 0.05
    assert result["encoder"].startswith("tiny BERT") and result["threads"] == 1
    assert result["steu_config"]["early_stop"] is True and result["steu_config"]["retain_per_forget"] > 0
    assert result["train_config"]["epochs"] == 1
    rows = result["rows"]
    assert [r["n"] for r in rows] == [300, 600]
    assert result["fixed_forget_notes"] == rows[0]["forget_train"]
    for r in rows:
        assert r["n_train"] + r["n_test"] == r["n"]
        assert r["forget_train"] + r["forget_test"] == round(0.05 * r["n"])  # the forget class at 5% prevalence
        for key in ["original", "retrain", *VARIANTS]:
            block = r[key]
            assert block["seconds"] > 0 and block["cpu_seconds"] >= 0, key
            assert 0 <= block["forget_f1"] <= 1 and 0 <= block["retain_macro_f1"] <= 1, key
        assert r["retrain"]["forget_f1"] == 0.0  # never saw a forget note: never predicts the class
        assert r["ratio"] == round(r["retrain"]["seconds"] / r["steu_cohort"]["seconds"], 2)
        assert r["retain_gap"] == round(r["retrain"]["retain_macro_f1"] - r["steu_cohort"]["retain_macro_f1"], 4)
        cohort, split = r["steu_cohort"], r["steu_split"]
        assert cohort["forget_notes"] == split["forget_notes"] == r["forget_train"]
        assert cohort["notes"] == r["forget_train"] * 5  # every forget note + 4 retain notes per forget note
        assert split["notes"] == r["n_train"]
        assert r["steu_cohort_fixed"]["forget_notes"] == result["fixed_forget_notes"]
        assert r["steu_split_fixed"]["notes"] == r["n_train"] - r["forget_train"] + result["fixed_forget_notes"]
        for key in VARIANTS:
            assert 0 < r[key]["params_fraction"] < 0.5 and r[key]["epochs_run"] >= 1, key
    assert rows[0]["steu_cohort_fixed"]["same_as"] == "steu_cohort"  # the smallest n: the same notes, not rerun
    assert set(result["slopes"]) >= {"retrain", *VARIANTS}
    assert set(result["targets"]["retain_within_0.02_of_retrain"]) == {"300", "600"}

    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
