"""bench/demo.py's bookkeeping (the commands it times are the README's own, too slow for the suite): each target's
verdict is read off the figures it measured, every first audit counting, its CPU probe measures a rate, and the CPU
is named with its family and model."""

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


def test_the_cpu_is_named_with_its_family_and_model(tmp_path):
    """A VM may name only "AMD EPYC"; the bench files carry the numbers that tell Zen 3, 4 and 5 apart."""
    cpu_model = load_bench("unlearn").cpu_model
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
                    "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\n")
    assert cpu_model(info) == "AMD EPYC (family 26 model 2)"
    info.write_text("model name\t: Apple M2\n")
    assert cpu_model(info) == "Apple M2"
    assert cpu_model(tmp_path / "none")  # no /proc/cpuinfo: the platform's name, never empty
