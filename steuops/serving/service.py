"""The BentoML service (the only module importing bentoml): /classify, /metadata, plus BentoML's /readyz, /livez.

    bentoml serve steuops.serving.service:Classifier --host 127.0.0.1 --port 3000

Configured by environment variables (see steuops.serving). The model is resolved and loaded in
__init__, so /readyz turns ready only once it can answer. Request limits are checked per request
by the input model (before adaptive batching merges requests), so one oversized request fails
alone with a 400 and a message naming the limit.
"""

from __future__ import annotations  # noqa: I001  (steuops.env must load before bentoml)

import json
import os
from typing import Annotated, Any

from steuops import env  # noqa: F401  (telemetry off before bentoml loads)

import bentoml  # noqa: E402
from pydantic import AfterValidator  # noqa: E402

from steuops.serving import OPEN_PATHS, Limits, _env_int, api_key_ok, from_env  # noqa: E402

LIMITS = Limits.from_env()
# Adaptive batching may merge several requests; one request alone must always fit.
MAX_BATCH = max(2 * LIMITS.max_texts, 64)
# BentoML's dispatcher answers 503 to requests it predicts will miss this deadline; 25 ms shed
# load on a busy 2-core CPU (measured), so the default is generous and configurable.
MAX_LATENCY_MS = _env_int("STEUOPS_MAX_LATENCY_MS", 2000)

Texts = Annotated[list[str], AfterValidator(LIMITS.check)]


class ApiKeyMiddleware:
    """401 on every API route unless the request carries STEUOPS_API_KEY; health probes stay open."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.key = os.environ.get("STEUOPS_API_KEY") or None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.key and scope["type"] == "http" and scope.get("path") not in OPEN_PATHS:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not api_key_ok(headers, self.key):
                await _deny(send)
                return
        await self.app(scope, receive, send)


async def _deny(send: Any) -> None:
    body = json.dumps({"error": "missing or wrong API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'"})
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
    await send({"type": "http.response.body", "body": body.encode()})


@bentoml.service(name="steuops-classifier", traffic={"timeout": 60})
class Classifier:
    """A clinical text classifier with its forgotten classes removed from every answer."""

    def __init__(self) -> None:
        self.model = from_env()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def classify(self, texts: Texts) -> list[dict[str, Any]]:
        """{"texts": [...]} -> per text {"labels": [...], "scores": {class: p}}; forgotten classes never appear."""
        return self.model.classify(list(texts))

    @bentoml.api
    def metadata(self) -> dict[str, Any]:
        """Model name, version, forgotten classes, lineage, ONNX sha256 and the runtime providers."""
        return self.model.metadata(LIMITS)


Classifier.add_asgi_middleware(ApiKeyMiddleware)
