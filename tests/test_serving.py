"""Serving: ServedModel in-process, and a real `bentoml serve` on 127.0.0.1 called over HTTP.

The end-to-end test trains a tiny classifier until it predicts sepsis, removes sepsis with STEU,
registers + exports the result in a real sqlite registry and serves it with `steuops serve`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import engine_data
import numpy as np
import pytest
from engine_data import LABELS
from server_helpers import bento_env, free_port, running_server

pytestmark = pytest.mark.filterwarnings("ignore")

@pytest.fixture(scope="module")
def trained():
    """(model, tokenizer, train notes, held-out notes): a tiny BERT that knows every class."""
    from steuops.tiny import classifier, wordpiece_tokenizer
    from steuops.training import TrainConfig, fine_tune

    train = engine_data.keyword_notes(160, seed=0, filler_words=5)
    test = engine_data.keyword_notes(80, seed=1, filler_words=5)
    tok = wordpiece_tokenizer(train.texts, vocab_size=300)  # every keyword one token
    model = classifier(LABELS, len(tok), seed=0)
    fine_tune(model, tok, train, TrainConfig(epochs=6, lr=1e-2, head_lr=3e-2, max_length=24, batch_size=16,
                                             warmup=0.0), device="cpu")
    return model, tok, train, test


@pytest.fixture(scope="module")
def export_dir(trained, tmp_path_factory):
    """The trained model exported as a folder with sepsis marked forgotten (serving must drop it)."""
    from steuops.export import write_export

    model, tok, _train, test = trained
    out = tmp_path_factory.mktemp("served")
    write_export(model, tok, out, name="dx", version="7", forgotten=["sepsis"], check_texts=test.texts[:16],
                 max_length=32)
    return out


# ---------------------------------------------------------------- in process


def test_served_model_drops_forgotten_and_matches_torch(trained, export_dir):
    import torch

    from steuops.export import sha256_file
    from steuops.serving import ServedModel

    model, tok, _train, test = trained
    served = ServedModel(export_dir, device="cpu")
    assert served.file.name == "model.opt.onnx" and served.session.get_providers() == ["CPUExecutionProvider"]
    out = served.classify(test.texts[:20])
    assert len(out) == 20
    for row in out:
        assert set(row["scores"]) == set(LABELS) - {"sepsis"}
        assert "sepsis" not in row["labels"]
        assert sorted(row["labels"]) == sorted(k for k, p in row["scores"].items() if p >= 0.5)
    enc = tok(test.texts[:20], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        probs = torch.sigmoid(model(**enc).logits).numpy()
    got = np.array([[row["scores"][c] for c in LABELS[1:]] for row in out])
    np.testing.assert_allclose(got, probs[:, 1:], atol=1e-4)
    meta = served.metadata()
    assert meta["forgotten"] == ["sepsis"] and "sepsis" not in meta["labels"]
    assert meta["version"] == "7" and meta["model"] == "dx"
    assert meta["onnx_sha256"] == sha256_file(export_dir / "model.onnx")
    assert meta["served_sha256"] == sha256_file(export_dir / "model.opt.onnx")


def test_served_model_truncates_as_the_manifest_says(trained, export_dir, tmp_path):
    """max_length and truncation side come from the exported folder (manifest.json), never a constant."""
    import json
    import shutil

    from steuops.serving import ServedModel

    _model, _tok, _train, test = trained
    served = ServedModel(export_dir, device="cpu")
    assert served.max_length == 32 and served.metadata()["max_length"] == 32
    folder = Path(shutil.copytree(export_dir, tmp_path / "left"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inference"] = {"max_length": 12, "truncation_side": "left"}
    manifest["max_length"], manifest["truncation_side"] = 12, "left"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    left = ServedModel(folder, device="cpu")
    assert (left.max_length, left.metadata()["truncation_side"]) == (12, "left")
    words = test.texts[0].split()
    tail = " ".join((words * 4)[-10:])  # 10 one-token words: [CLS] + 10 + [SEP] = 12 tokens
    long = " ".join(["orthopnea"] * 30) + " " + tail
    np.testing.assert_allclose(left.logits([long]), left.logits([tail]), atol=1e-5)  # only the end was kept
    assert not np.allclose(served.logits([long]), served.logits([tail]), atol=1e-3)  # 32 tokens from the start


def test_limits_and_api_key_rules():
    from steuops.serving import Limits, api_key_ok

    limits = Limits(max_texts=2, max_chars=5)
    assert limits.check(["ab", "abcde"]) == ["ab", "abcde"]
    assert limits.max_body_bytes == 2 * 5 * 6 + 65_536
    for bad, words in (([], "empty"), (["a", "b", "c"], "limit is 2"), (["ok", "toolong"], "texts[1] has 7"),
                       (["ok", ""], "texts[1] is empty"), ([" \n\t"], "texts[0] is empty or whitespace")):
        with pytest.raises(ValueError, match=re.escape(words)):
            limits.check(bad)
    assert api_key_ok({"authorization": "Bearer k1"}, "k1")
    assert api_key_ok({"x-api-key": "k1"}, "k1")
    assert not api_key_ok({"authorization": "Bearer k2"}, "k1")
    assert not api_key_ok({"authorization": "k1"}, "k1")
    assert not api_key_ok({}, "k1")


def test_settings_come_from_the_environment_and_name_a_bad_variable(monkeypatch):
    from steuops.errors import ConfigError
    from steuops.serving import Limits, from_env, serve_settings

    for name in [k for k in os.environ if k.upper().startswith("STEUOPS_")]:
        monkeypatch.delenv(name)
    s = serve_settings()
    assert (s.max_texts, s.max_chars, s.max_latency_ms, s.max_inflight, s.threshold, s.device, s.alias) == (
        64, 20_000, 2000, 32, 0.5, "auto", "production")
    assert Limits.from_env() == Limits() and Limits().max_body_bytes == 64 * 20_000 * 6 + 65_536
    monkeypatch.setenv("STEUOPS_MAX_TEXTS", "8")
    monkeypatch.setenv("STEUOPS_MAX_CHARS", " 500 ")
    monkeypatch.setenv("STEUOPS_MAX_INFLIGHT", "")  # empty = unset, as before
    monkeypatch.setenv("STEUOPS_THRESHOLD", "0.25")
    assert Limits.from_env() == Limits(max_texts=8, max_chars=500)
    assert Limits(max_texts=8, max_chars=500).max_body_bytes == 8 * 500 * 6 + 65_536
    assert serve_settings().max_inflight == 32 and serve_settings().threshold == 0.25
    monkeypatch.setenv("STEUOPS_MAX_BODY_BYTES", "1000")
    assert Limits.from_env().max_body_bytes == 1000
    for name, value, message in (("STEUOPS_MAX_TEXTS", "lots", "STEUOPS_MAX_TEXTS='lots' is not an integer"),
                                 ("STEUOPS_MAX_CHARS", "0", "STEUOPS_MAX_CHARS=0 must be at least 1"),
                                 ("STEUOPS_MAX_LATENCY_MS", "-5", "STEUOPS_MAX_LATENCY_MS=-5 must be at least 1"),
                                 ("STEUOPS_THRESHOLD", "high", "STEUOPS_THRESHOLD='high' is not a number")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ConfigError) as err:
                Limits.from_env()
            assert str(err.value) == message and "\n" not in str(err.value) and name in err.value.hint
    with pytest.raises(ConfigError, match="STEUOPS_MODEL .* is unset"):
        from_env()


# ---------------------------------------------------------------- a real server


@pytest.mark.slow
def test_bento_server_over_http(export_dir, trained, tmp_path):
    import httpx

    _model, _tok, _train, test = trained
    port = free_port()
    env = bento_env(tmp_path, STEUOPS_ONNX_DIR=str(export_dir), STEUOPS_API_KEY="k-123",
                      STEUOPS_MAX_TEXTS="8", STEUOPS_MAX_CHARS="500")
    cmd = [sys.executable, "-m", "bentoml", "serve", "steuops.serving.service:Classifier",
           "--host", "127.0.0.1", "--port", str(port)]
    key = {"Authorization": "Bearer k-123"}
    with running_server(cmd, env, port, tmp_path / "server.log") as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/livez").status_code == 200  # probes need no key
        for page in ("/", "/docs"):  # the Swagger UI, from local files only: no tracker, no CDN
            html = http.get(page, headers=key)
            assert html.status_code == 200 and "swagger-initializer.js" in html.text
            assert "googletagmanager" not in html.text and "https://" not in html.text

        r = http.post("/classify", json={"texts": test.texts[:5]}, headers=key)
        assert r.status_code == 200, r.text
        rows = r.json()
        assert len(rows) == 5 and all("sepsis" not in row["labels"] and "sepsis" not in row["scores"] for row in rows)
        assert http.post("/classify", json={"texts": test.texts[:2]}, headers={"x-api-key": "k-123"}).status_code == 200

        meta = http.post("/metadata", json={}, headers=key).json()
        assert meta["forgotten"] == ["sepsis"] and meta["model"] == "dx" and meta["version"] == "7"
        assert http.get("/metadata", headers=key).json() == meta  # GET too, same answer
        assert http.get("/metadata").status_code == 401
        _check_openapi(http.get("/docs.json", headers=key).json())
        description = http.get("/docs.json", headers=key).json()["info"]["description"]
        assert "version 7" in description and "sepsis" in description and "BentoML" not in description
        assert meta["providers"] == ["CPUExecutionProvider"] and meta["limits"] == {"max_texts": 8, "max_chars": 500}
        assert len(meta["onnx_sha256"]) == 64 and meta["fused_ops"]["Attention"] == 2

        too_many = http.post("/classify", json={"texts": ["a"] * 9}, headers=key)
        assert too_many.status_code == 400 and "limit is 8" in too_many.text
        too_long = http.post("/classify", json={"texts": ["ok", "x" * 501]}, headers=key)
        assert too_long.status_code == 400 and "texts[1] has 501 characters" in too_long.text
        assert http.post("/classify", json={"texts": []}, headers=key).status_code == 400
        for blank in ("", "   "):
            empty = http.post("/classify", json={"texts": ["ok", blank]}, headers=key)
            assert empty.status_code == 400 and "texts[1] is empty" in empty.text
        malformed = http.post("/classify", content=b'{"texts": ["a",', headers={**key, "content-type": "application/json"})
        assert malformed.status_code == 400 and "json" in malformed.text.lower()
        assert http.post("/classify", json={"text": ["a"]}, headers=key).status_code == 400

        for headers in ({}, {"Authorization": "Bearer nope"}, {"x-api-key": "nope"}):
            denied = http.post("/classify", json={"texts": ["a"]}, headers=headers)
            assert denied.status_code == 401 and "API key" in denied.json()["error"]
        assert http.post("/metadata", json={}).status_code == 401

        # concurrent requests go through adaptive batching and each gets its own answer back
        import concurrent.futures as cf

        def one(i: int):
            r = http.post("/classify", json={"texts": [test.texts[i]] * (1 + i % 3)}, headers=key)
            assert r.status_code == 200, r.text
            return r.json()

        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(16)))
        assert [len(a) for a in answers] == [1 + i % 3 for i in range(16)]
        solo = http.post("/classify", json={"texts": [test.texts[5]]}, headers=key).json()[0]
        assert answers[5][0]["labels"] == solo["labels"]


def _check_openapi(doc: dict) -> None:
    """Typed request/response schemas with the limits, the model version, GET /metadata and the key scheme."""
    schemas = doc["components"]["schemas"]
    request = doc["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    texts = request["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"]) == (1, 8)
    assert texts["items"] == {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"}
    answer = doc["paths"]["/classify"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}
    assert schemas["Prediction"]["properties"]["scores"]["additionalProperties"] == {"type": "number"}
    assert schemas["Prediction"]["properties"]["labels"]["items"] == {"type": "string"}
    meta = doc["paths"]["/metadata"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"version", "forgotten", "lineage", "onnx_sha256", "limits"} <= set(meta["properties"])
    assert doc["info"]["version"] == "7"
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for path, method in (("/classify", "post"), ("/metadata", "get"), ("/metadata", "post")):
        operation = doc["paths"][path][method]
        assert "401" in operation["responses"] and operation["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"413", "429", "503"} <= set(doc["paths"]["/classify"]["post"]["responses"])


@pytest.mark.slow
def test_steu_unlearned_model_served_from_registry(trained, tmp_path):
    """Train -> register -> STEU forget sepsis -> register child -> export -> `steuops serve` -> HTTP."""
    import httpx

    from steuops import modeling
    from steuops.export import export_version
    from steuops.methods import unlearn
    from steuops.registry import Registry

    model, tok, train, test = trained
    forget_split = test.subset(test.has_any(["sepsis"]))
    before = modeling.predict(modeling.logits(model, tok, forget_split.texts, max_length=32), True)[:, 0]
    assert before.mean() >= 0.8, "precondition: the base model predicts sepsis on the forget split"

    home = tmp_path / "home"
    reg = Registry(home=home)
    base = reg.log_base_model("dx", model, tok)
    result = unlearn("steu", model, tok, ["sepsis"], train,
                     {"k": 16, "epochs": 8, "max_length": 32, "lr": 5e-2, "head_lr": 1e-2}, device="cpu")
    child = reg.register("dx", result.model, tok, parent=base, alias="production",
                         tags={"steuops.forgotten": "sepsis", "steuops.method": "steu"})
    export_version(reg, child, check_texts=test.texts[:16], max_length=32)

    port = free_port()
    cmd = [sys.executable, "-m", "steuops", "serve", "--model", "dx", "--home", str(home), "--port", str(port)]
    with running_server(cmd, bento_env(tmp_path), port, tmp_path / "serve.log") as base_url, \
            httpx.Client(base_url=base_url, timeout=60) as http:
        meta = http.post("/metadata", json={}).json()
        assert meta["version"] == child.version and meta["forgotten"] == ["sepsis"]
        assert [step["version"] for step in meta["lineage"]] == [child.version, base.version]
        assert meta["source"]["mode"] == "registry" and meta["onnx_sha256"] == reg.tags(child)["steuops.onnx_sha256"]
        rows = []
        for start in range(0, len(forget_split), 8):
            r = http.post("/classify", json={"texts": forget_split.texts[start : start + 8]})
            assert r.status_code == 200, r.text
            rows += r.json()
    assert len(rows) == len(forget_split)
    assert not any("sepsis" in row["labels"] or "sepsis" in row["scores"] for row in rows)

    # not only filtered: the served weights themselves no longer predict sepsis
    from steuops.serving import ServedModel, download

    folder, _source = download("dx", alias="production", version=None, home=str(home), dst=tmp_path / "dl")
    raw = ServedModel(folder, device="cpu").logits(forget_split.texts)[:, 0]
    assert (raw > 0).mean() <= 0.1, f"sepsis still predicted on {(raw > 0).mean():.0%} of the forget split"
    retained = modeling.predict(modeling.logits(result.model, tok, test.texts, max_length=32), True)[:, 1:]
    assert retained.sum() > 0.5 * test.multi_hot(LABELS)[:, 1:].sum()  # other classes still predicted
