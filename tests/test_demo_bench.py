"""bench/demo.py's bookkeeping (the commands it times are the README's own, too slow for the suite): each target's
verdict is read off the figures it measured, every first audit counting, and its CPU probe measures a rate."""

from __future__ import annotations

from bench_helpers import load_bench


def _bench():
    return load_bench("demo")


def test_each_target_is_met_only_when_every_measured_figure_is_within_it():
    bench = _bench()
    rows = [{"name": "demo", "seconds": 250.0, "audit": None},
            {"name": "report", "seconds": 140.0, "audit": {"seconds": 58.0}},
            {"name": "report_refreshed", "seconds": 45.0, "audit": {"seconds": 33.0}},
            {"name": "export", "seconds": 31.0, "audit": None}]
    again = [{"name": "first_audit_1", "seconds": 70.0, "audit": {"seconds": 61.0}}]
    verdicts = bench.verdicts(rows, again)
    assert verdicts["demo"] == {"target": 300.0, "seconds": [250.0], "met": True}
    assert verdicts["export"] == {"target": 30.0, "seconds": [31.0], "met": False}
    assert verdicts["refreshed_audit"] == {"target": 60.0, "seconds": [33.0], "met": True}  # the audit's, not the command's
    assert verdicts["first_audit"] == {"target": 60.0, "seconds": [58.0, 61.0], "met": False}  # one over: not met
    assert bench.verdicts(rows, [])["first_audit"]["met"] is True


def test_the_cpu_probe_measures_a_rate():
    assert 0 < _bench().gflops(0.2) < 1e5


def test_no_more_first_audits_touch_no_home(tmp_path):
    """The default run (no --first-audits) copies nothing: the home may have no trained reference at all."""
    missing = tmp_path / "no-home"
    assert _bench().first_audits(0, missing, missing, tmp_path) == []
    assert list(tmp_path.iterdir()) == []
