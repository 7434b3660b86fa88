"""MLflow as its users read it: after `apply` against a real `mlflow server`, plain REST queries (no
mlflow client) find the unlearning run's metrics, the cohort dataset input (digest, counts, schema,
never note text), the report and gate artifacts, the version's description and tidy aliases."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pytest
from registry_helpers import FAST_STEU, MODEL

pytestmark = pytest.mark.slow

MARKER = "QUOKKA-MARKER-5521"  # in every note of the cohort; must reach no MLflow entity


def rest(base: str, endpoint: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
    """GET (or POST when body is given) /api/2.0/mlflow/<endpoint> and decode the JSON reply."""
    url = f"{base}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def _audited_policy(policies, tmp_path):
    text = policies["loose"].read_text().replace("promotion:", "audit:\n  relearn_f1_max: 1.0\npromotion:")
    path = tmp_path / "audited.yaml"
    path.write_text(text)
    return path


def _unlearning_run(base: str) -> dict[str, Any]:
    experiment = rest(base, "experiments/get-by-name", experiment_name="steuops")["experiment"]
    runs = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                      "filter": "tags.`steuops.parent_version` = '1'"})["runs"]
    assert len(runs) == 1
    return runs[0]


def test_rest_clients_see_metrics_dataset_description_and_aliases(mlflow_server, monkeypatch, tmp_path, trained_tiny,
                                                                  tiny_tokenizer, notes_frame, policies):
    from steuops.pipeline import apply
    from steuops.registry import Registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    Registry(tmp_path / "unused").log_base_model(MODEL, trained_tiny, tiny_tokenizer, dataset=notes_frame)
    cohort = tmp_path / "cohort.parquet"
    notes_frame.assign(text=notes_frame["text"] + f" {MARKER}").to_parquet(cohort, index=False)
    result = apply(MODEL, ["heart failure"], cohort=cohort, policy=_audited_policy(policies, tmp_path),
                   method_config=FAST_STEU, device="cpu", export=False)
    assert result.to_dict()["promoted"] == {"alias": "production", "version": "2", "previous": "1"}

    run = _unlearning_run(mlflow_server)
    _check_metrics(run, result)
    _check_dataset(run, result)
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["steuops.gate"] == "passed" and tags["steuops.cohort_sha256"] == result.cohort["sha256"]
    files = rest(mlflow_server, "artifacts/list", run_id=run["info"]["run_id"])["files"]
    assert {"report.html", "gate.json", "evaluation.json"} <= {f["path"] for f in files}
    assert MARKER not in json.dumps(run)  # params, tags, metrics, dataset inputs: no note text anywhere

    model = rest(mlflow_server, "registered-models/get", name=MODEL)["registered_model"]
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {"production": "2"}  # candidate retired
    version = rest(mlflow_server, "model-versions/get", name=MODEL, version="2")["model_version"]
    assert version["run_id"] == run["info"]["run_id"]
    description = version["description"]
    assert description.startswith(f"Forgets heart failure from {MODEL} v1 with steu") and "Gate passed" in description
    assert "policy 'loose'" in description and MARKER not in description
    shown = ("forget_f1_before", "forget_f1_after", "retain_macro_f1_after", "f1_after.heart_failure",
             "params_fraction", "audit.relearn_f1", "seconds.unlearn", "seconds.promote")
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"] if m["key"] in shown}
    print(json.dumps({"metrics": metrics, "dataset_inputs": run["inputs"]["dataset_inputs"],
                      "aliases": model["aliases"], "description": description}, indent=1))


def _check_metrics(run: dict[str, Any], result: Any) -> None:
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    evaluation = result.evaluation
    for when in ("before", "after"):
        assert metrics[f"forget_f1_{when}"] == pytest.approx(evaluation[when]["forget_f1"])
        assert metrics[f"retain_macro_f1_{when}"] == pytest.approx(evaluation[when]["retain_macro_f1"])
        assert metrics[f"f1_{when}.heart_failure"] == pytest.approx(evaluation[when]["per_class_f1"]["heart failure"])
        assert metrics[f"f1_{when}.acute_kidney_injury"] == pytest.approx(
            evaluation[when]["per_class_f1"]["acute kidney injury"])
    assert metrics["params_fraction"] == pytest.approx(evaluation["params_fraction"])
    assert metrics["audit.relearn_f1"] == pytest.approx(evaluation["audit"]["relearn_f1"]["edited"])
    for step in ("unlearn", "evaluate", "audit", "gate", "register", "promote"):
        assert metrics[f"seconds.{step}"] == pytest.approx(result.seconds[step])


def _check_dataset(run: dict[str, Any], result: Any) -> None:
    (item,) = run["inputs"]["dataset_inputs"]
    dataset = item["dataset"]
    assert dataset["digest"] == result.cohort["sha256"][:36]
    assert dataset["source_type"] == "steuops_cohort"
    assert json.loads(dataset["source"]) == {"cohort_sha256": result.cohort["sha256"]}
    profile = json.loads(dataset["profile"])
    assert profile["rows"] == result.cohort["rows"] and profile["forget_rows"] == result.cohort["forget_rows"]
    assert profile["test_rows"] == result.cohort["test_rows"]
    assert all(key.endswith("rows") for key in profile), profile  # counts only: no settings cast to int
    columns = {c["name"]: c["type"] for c in json.loads(dataset["schema"])["mlflow_colspec"]}
    assert columns["text"] == "string" and columns["labels"] == "array"
    assert {t["key"]: t["value"] for t in item["tags"]}["mlflow.data.context"] == "unlearning"
