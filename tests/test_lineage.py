"""steuops.lineage: the one place that knows a version's tags. Lists are JSON; old comma-joined tags still read."""

from __future__ import annotations

import json

import pytest

from steuops import lineage
from steuops.lineage import VersionRecord, decode_list, encode_list

ODD = ["Sepsis, unspecified organism", "995.91", "null", 'Kidney injury, "acute"', "慢性阻塞性肺疾病 急性加重", "[x]"]


@pytest.mark.parametrize("labels", [ODD, ODD[:1], ["995.91"], ["null"], ["true"], ["0"], []])
def test_lists_round_trip_through_a_tag(labels):
    raw = encode_list(labels)
    assert json.loads(raw) == labels and decode_list(raw) == labels
    assert "\\u" not in raw  # readable in the MLflow UI


@pytest.mark.parametrize(("raw", "known", "expected"), [
    ("sepsis,pneumonia", None, ["sepsis", "pneumonia"]),
    ("995.91", None, ["995.91"]),  # json.loads would give a float
    ("null", None, ["null"]),  # ... and None
    ("Sepsis, unspecified organism", None, ["Sepsis", "unspecified organism"]),  # ambiguous without labels
    ("Sepsis, unspecified organism", ODD, ["Sepsis, unspecified organism"]),
    ("995.91,Sepsis, unspecified organism,null", ODD, ["995.91", "Sepsis, unspecified organism", "null"]),
    ("", ODD, []),
    (None, None, []),
])
def test_comma_joined_tags_from_before_json_lists_still_read(raw, known, expected):
    assert decode_list(raw, known) == expected


def test_a_record_round_trips_and_keeps_tags_it_does_not_know():
    tags = {lineage.PARENT: "3", lineage.FORGOTTEN: encode_list(ODD), lineage.METHOD: "steu",
            lineage.METHOD_CONFIG: json.dumps({"k": 16}), lineage.COHORT_ROWS: "240", lineage.GATE: "passed",
            lineage.GATE_SHORT: "passed", lineage.REQUIRED: encode_list(["edit", "onnx"]),
            lineage.FORGET_F1: "0", "team.owner": "cardiology", lineage.MAX_LENGTH: "128"}
    record = VersionRecord.from_tags(tags)
    assert record.parent_version == "3" and record.forgotten == ODD and record.method_config == {"k": 16}
    assert record.cohort_rows == 240 and record.forget_f1 == 0.0 and record.required_artifacts == ["edit", "onnx"]
    assert record.extra == {"team.owner": "cardiology", lineage.MAX_LENGTH: "128"}
    assert record.made_by_steuops and lineage.status(record.to_tags()) == lineage.STATUS_COMPLETE
    again = VersionRecord.from_tags(record.to_tags())
    assert again == record
    assert record.to_tags()[lineage.GATE_SHORT] == "passed"


def test_a_base_model_record_is_not_made_by_steuops_and_writes_no_steuops_tags():
    record = VersionRecord.from_tags({})
    assert not record.made_by_steuops and record.forgotten == [] and record.to_tags() == {}


def test_legacy_forgotten_tag_read_with_the_model_labels():
    tags = {lineage.FORGOTTEN: ",".join(["995.91", "Sepsis, unspecified organism"])}
    assert lineage.forgotten(tags) == ["995.91", "Sepsis", "unspecified organism"]
    assert lineage.forgotten(tags, ODD) == ["995.91", "Sepsis, unspecified organism"]
    assert VersionRecord.from_tags(tags, ODD).forgotten == ["995.91", "Sepsis, unspecified organism"]
