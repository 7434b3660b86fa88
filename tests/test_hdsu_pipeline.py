"""HDSU through the whole pipeline like STEU: apply --method hdsu gates, registers a SparseEdit that rebuilds
the version from its parent bit for bit, exports ONNX, logs the paper's figures, and its report (audited now)
shows the edited tokens with their hierarchy levels."""

from __future__ import annotations

import copy

from registry_helpers import MODEL

HDSU = {"epochs": 2, "max_length": 64, "batch_size": 32, "param_fraction": 0.01, "fisher_notes": 16}


def test_apply_method_hdsu_end_to_end(make_home, policies, tmp_path):
    from steuops import lineage, modeling
    from steuops.edit import SparseEdit, load_edit
    from steuops.pipeline import apply
    from steuops.pipeline.report import version_report

    home, registry = make_home()
    result = apply(MODEL, ["sepsis"], home=home, policy=policies["loose"], method="hdsu", method_config=HDSU,
                   device="cpu", export=True)
    assert result.passed and result.new_version == "2"
    assert result.edit["kind"] == "sparse" and result.edit["values"] > 0
    ref = registry.resolve(MODEL, version=2)
    tags = registry.tags(ref)
    assert tags["steuops.method"] == "hdsu" and lineage.forgotten(tags) == ["sepsis"]
    assert {"edit", "evaluation.json", "gate.json", "onnx"} <= set(registry.artifact_names(ref))
    # the registered edit is a general sparse edit that turns the parent into this version exactly
    edit = load_edit(registry.download_artifact(ref, "edit"))
    assert type(edit) is SparseEdit and edit.method == "hdsu"
    parent, child = registry.load(registry.resolve(MODEL, version=1)), registry.load(ref)
    rebuilt = edit.apply(copy.deepcopy(parent.model))
    assert modeling.fingerprint(rebuilt) == modeling.fingerprint(child.model)
    evaluation = result.evaluation
    total = evaluation["params_total"]
    assert 0 < evaluation["params_modified"] <= int(HDSU["param_fraction"] * total)
    # the paper's figures, with preservation per level of the built-in hierarchy (the demo's classes)
    paper = evaluation["paper"]
    assert paper["params_percent"] == 100 * evaluation["params_fraction"]
    assert set(paper["preservation_by_level"]) == {"none", "L1", "L2", "L3", "L4"}
    run = registry._client.get_run(registry.run_id(ref))
    assert "paper.params_percent" in run.data.metrics
    # the report audits it now (full passes: the encoder moved) and lists the edited tokens with their levels
    report = version_report(MODEL, "2", home=home, out=tmp_path / "r.html", reference="none", device="cpu")
    html = (tmp_path / "r.html").read_text()
    assert report.audit_source == "computed now and logged"
    assert "<th>level</th>" in html and "The paper's figures" in html


def test_hierarchy_flag_is_checked_before_any_work(tmp_path, capsys):
    """--hierarchy: a bad file, a class it lacks, or a method without a hierarchy is exit 2 naming the
    file and the fix, before the home or the model is touched (the home does not even exist here)."""
    import json

    from steuops.cli import main

    home = tmp_path / "no-home"
    good = tmp_path / "h.yaml"
    good.write_text("format: steuops.hierarchy/v1\nclasses:\n  sepsis:\n    L4: [sepsis]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: steuops.hierarchy/v1\nclasses:\n  sepsis:\n    L5: [sepsis]\n")
    base = ["apply", "--model", MODEL, "--home", str(home), "--json"]
    cases = [([*base, "--forget", "sepsis", "--method", "hdsu", "--hierarchy", str(bad)], "L5"),
             ([*base, "--forget", "pneumonia", "--method", "hdsu", "--hierarchy", str(good)], "pneumonia"),
             ([*base, "--forget", "sepsis", "--method", "steu", "--hierarchy", str(good)], "takes no concept hierarchy")]
    for argv, needle in cases:
        assert main(argv) == 2
        envelope = json.loads(capsys.readouterr().out)
        assert needle in envelope["result"]["message"] and envelope["result"].get("hint")
    assert not home.exists()
