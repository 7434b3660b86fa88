"""The BentoML service (the only module importing bentoml): /classify, /metadata, plus BentoML's /readyz, /livez.

    bentoml serve steuops.serving.service:Classifier --host 127.0.0.1 --port 3000

Requests and answers are pydantic models (steuops.serving.schema), so /docs.json types them and shows the
limits; it also carries the model version, GET /metadata (answered like POST) and, with STEUOPS_API_KEY, the
key scheme and its 401. `pack(onnx_dir)` saves an export in BentoML's model store; STEUOPS_BENTO_MODEL=TAG
serves it, and `bentoml build` with that variable set puts it into the Bento.

Configured by environment variables (see steuops.serving). The model is resolved and loaded in
__init__, so /readyz turns ready only once it can answer. Request limits are checked per request
by the input model (before adaptive batching merges requests), so one oversized request fails
alone with a 400 and a message naming the limit.

It sheds load like a service: `RequestGuard` answers 413 to a body over the limit before reading it,
429 + Retry-After once STEUOPS_MAX_INFLIGHT requests are in flight, and turns BentoML's
adaptive-batching overload (the max_latency_ms deadline) into 503 + Retry-After. Shed requests are
logged as one aggregate line a second at most; rejected requests as one text-free line each
(BentoML's own traceback would print pydantic's `input_value=`, i.e. the start of the note).
"""

from __future__ import annotations  # noqa: I001  (steuops.env must load before bentoml)

import asyncio
import contextvars
import json
import logging
import os
import traceback
import re
import shutil
from pathlib import Path
from typing import Any

from steuops import env  # noqa: F401  (telemetry off before bentoml loads)

import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException, ServiceUnavailable  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from steuops.errors import ConfigError  # noqa: E402
from steuops.serving import OPEN_PATHS, Limits, ServedModel, api_key_ok, from_env, serve_settings  # noqa: E402
from steuops.serving.schema import Metadata, Prediction, request_model  # noqa: E402

LIMITS = Limits.from_env()
# Adaptive batching may merge several requests; one request alone must always fit.
MAX_BATCH = max(2 * LIMITS.max_texts, 64)
# BentoML's dispatcher answers 503 to requests it predicts will miss this deadline; 25 ms shed
# load on a busy 2-core CPU (measured), so the default is generous and configurable.
MAX_LATENCY_MS = serve_settings().max_latency_ms
# Requests one worker holds at once (reading, queued for a batch, running). Batching absorbs ~16
# concurrent single-note clients within the deadline on 2 cores; far beyond that, queueing only adds latency.
MAX_INFLIGHT = serve_settings().max_inflight
MAX_BODY_BYTES = LIMITS.max_body_bytes
RETRY_AFTER_S = 1
log = logging.getLogger("steuops.serving")

ClassifyRequest = request_model(LIMITS)
SERVED: dict[str, Any] = {}  # what this worker serves (model, version), for /docs.json


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


class ShedLog:
    """Counts shed requests and writes one line a second at most (a flood must not flood the log)."""

    def __init__(self, logger: logging.Logger = log, interval: float = 1.0) -> None:
        self.logger, self.interval = logger, interval
        self.counts: dict[str, int] = {}
        self.scheduled = False

    def note(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if not self.scheduled:  # the first shed request of a window schedules the window's one line
            self.scheduled = True
            # an empty context: the line is about many requests, not the trace of the one that opened the window
            asyncio.get_running_loop().call_later(self.interval, self.flush, context=contextvars.Context())

    def flush(self) -> None:
        counts, self.counts, self.scheduled = self.counts, {}, False
        total = sum(counts.values())
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        if total:
            self.logger.warning("shed %d requests in the last %.0f s (%s)", total, self.interval, detail)


def _json_response(status: int, reason: str, *, retry: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a one-line JSON error answer."""
    body = json.dumps({"error": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


async def _answer(send: Any, status: int, reason: str, *, retry: bool = False) -> None:
    for message in _json_response(status, reason, retry=retry):
        await send(message)


def _content_length(scope: dict[str, Any]) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _TooLarge(Exception):
    pass


async def _read_bounded(receive: Any, limit: int) -> list[dict[str, Any]]:
    """Read a body of unknown length (chunked) counting bytes; stop and raise once it passes `limit`."""
    messages, seen = [], 0
    while True:
        message = await receive()
        messages.append(message)
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        if message["type"] != "http.request" or not message.get("more_body"):
            return messages


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    """A receive() that gives the buffered body first, then whatever the connection says next."""
    pending = list(messages)

    async def replay() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replay


class RequestGuard:
    """Bounds what one worker takes on: body size (413), requests in flight (429), batching deadline (503).

    Health probes pass untouched, so an overloaded server still reports itself alive and ready.
    """

    def __init__(self, app: Any, max_inflight: int = MAX_INFLIGHT, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_inflight, self.max_body = app, max_inflight, max_body
        self.inflight = 0
        self.shed = ShedLog()
        install_log_filters()  # here, not at import: BentoML configures the worker's logging before the app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _answer(send, 413, self._too_large())
            return
        if self.inflight >= self.max_inflight:
            self.shed.note("over capacity (429)")
            await _answer(send, 429, f"server at capacity ({self.max_inflight} requests in flight); retry later",
                          retry=True)
            return
        self.inflight += 1
        try:
            await self._admitted(scope, receive, send, chunked=length is None)
        finally:
            self.inflight -= 1

    def _too_large(self) -> str:
        return f"request body over {self.max_body} bytes (STEUOPS_MAX_BODY_BYTES); send fewer or shorter texts"

    async def _admitted(self, scope: dict[str, Any], receive: Any, send: Any, *, chunked: bool) -> None:
        if chunked and scope.get("method") in {"POST", "PUT", "PATCH"}:
            try:
                receive = _replay(await _read_bounded(receive, self.max_body), receive)
            except _TooLarge:
                await _answer(send, 413, self._too_large())
                return
        await self.app(scope, receive, self._deadline_send(send))

    def _deadline_send(self, send: Any) -> Any:
        """BentoML answers a request its batcher dropped with 503 'unexpected error': say what it is instead."""
        replaced = False

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 503:
                replaced = True
                self.shed.note("past the batching deadline (503)")
                await send(DEADLINE_ANSWER[0])
            elif not replaced:
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await send(DEADLINE_ANSWER[1])  # BentoML's own body is dropped, ours sent once at its end

        return guarded


DEADLINE_ANSWER = _json_response(503, f"server overloaded: the request would miss its {MAX_LATENCY_MS} ms deadline "
                                      "(STEUOPS_MAX_LATENCY_MS); retry later", retry=True)


# ---------------------------------------------------------------- logs without note text

ERROR_LOGGERS = ("bentoml._internal.server.http_app", "uvicorn.error")  # BentoML's log_exception; uvicorn's
ACCESS_LOGGER = "bentoml.access"
SHED_STATUSES = ("status=429", "status=503")
FIELDS = frozenset({"texts", "body", "root"})


def validation_summary(exc: ValidationError) -> str:
    """`texts.3: value_error` per error: field path and error type only. Unknown keys become `?`
    (a client may put anything in a key); pydantic's own str() would echo the start of the text."""
    parts = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(p) if isinstance(p, int) or p in FIELDS else "?" for p in err.get("loc", ()))
        parts.append(f"{loc or '-'}: {err.get('type', 'error')}")
    return "; ".join(parts)


def redacted_traceback(exc: BaseException) -> str:
    """The stack of an error with every exception message withheld: messages may quote the request."""
    lines = ["Traceback (most recent call last):\n", *traceback.format_tb(exc.__traceback__)]
    return "".join(lines) + f"{type(exc).__module__}.{type(exc).__qualname__}: <message withheld>"


class TextFreeErrors(logging.Filter):
    """Rewrites BentoML's per-request error records: shed requests are dropped (RequestGuard counts them),
    a rejected request becomes one text-free line, any other error keeps its stack but not its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if isinstance(exc, ServiceUnavailable):
            return False
        path = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        if isinstance(exc, ValidationError) or _client_error(exc):
            detail = validation_summary(exc) if isinstance(exc, ValidationError) else type(exc).__name__
            record.msg, record.args, record.levelno, record.levelname = "rejected %s: %s", (path, detail), \
                logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
            return True
        record.exc_text, record.exc_info = redacted_traceback(exc), None
        return True


def _client_error(exc: BaseException) -> bool:
    code = getattr(getattr(exc, "error_code", None), "value", 500)
    return isinstance(exc, BentoMLException) and 400 <= int(code) < 500


class NoShedAccessLines(logging.Filter):
    """Drops the access line of a shed request: ShedLog's aggregate line already counts it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) >= 3 and str(args[2]).startswith(SHED_STATUSES))


def install_log_filters() -> None:
    """Idempotent: one filter of each kind per logger, whatever number of times the app is built."""
    for name, cls in [*((n, TextFreeErrors) for n in ERROR_LOGGERS), (ACCESS_LOGGER, NoShedAccessLines)]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())


# ---------------------------------------------------------------- the model store (a Bento carries its model)

STORE_PREFIX = "steuops-"


def store_name(name: str) -> str:
    """BentoML model name for registered model `name`: lowercase letters, digits, `-`, `_`, `.` only."""
    safe = re.sub(r"[^a-z0-9._-]", "-", name.lower()).strip("-._") or "model"
    return f"{STORE_PREFIX}{safe}"


def pack(onnx_dir: str | Path) -> str:
    """Save an exported onnx/ folder in BentoML's model store ($BENTOML_HOME/models); returns the tag.

    The tag is `steuops-<model>:v<version>-<sha8 of model.onnx>`, so packing the same export twice
    returns the existing entry. Serve it with STEUOPS_BENTO_MODEL=<tag>; `bentoml build` with that
    variable set puts the model into the Bento, and the container then needs no registry.
    """
    from steuops.serving import verify_folder

    folder = Path(onnx_dir)
    if not verify_folder(folder, None):
        raise ConfigError(f"{folder}: not an export whose files match manifest.json",
                          hint="point at a folder written by `steuops export`")
    manifest = json.loads((folder / "manifest.json").read_text())
    tag = f"{store_name(str(manifest.get('name') or 'model'))}:{_store_version(manifest)}"
    try:
        return str(bentoml.models.get(tag).tag)
    except bentoml.exceptions.NotFound:
        pass
    meta = {k: manifest.get(k) for k in ("name", "version", "forgotten")}
    with bentoml.models.create(tag, labels={"project": "steuops"}, metadata=meta) as model:
        shutil.copytree(folder, model.path, dirs_exist_ok=True)
    return str(model.tag)


def pack_version(name: str, *, alias: str | None = "production", version: str | None = None,
                 home: str | None = None) -> str:
    """pack() the ONNX export of models:/NAME@ALIAS (or /VERSION) from the registry."""
    from steuops.serving import download

    folder, _source = download(name, alias=None if version else alias, version=version, home=home)
    return pack(folder)


def _store_version(manifest: dict[str, Any]) -> str:
    sha = str((manifest.get("files") or {}).get("model.onnx") or "")[:8]
    version = re.sub(r"[^A-Za-z0-9._-]", "-", str(manifest.get("version") or "0"))
    return f"v{version}-{sha}" if sha else f"v{version}"


def packed_tag() -> str | None:
    """STEUOPS_BENTO_MODEL, else the steuops model the Bento being served carries (None: not packed)."""
    if os.environ.get("STEUOPS_BENTO_MODEL"):
        return os.environ["STEUOPS_BENTO_MODEL"]
    bento = getattr(Classifier, "bento", None)
    tags = [str(m.tag) for m in (bento.info.all_models if bento else []) if m.tag.name.startswith(STORE_PREFIX)]
    return tags[0] if tags else None


def packed_model(tag: str) -> Any:
    """The entry `tag` names in the local BentoML model store (a bare name: its latest); ConfigError if none."""
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise ConfigError(f"STEUOPS_BENTO_MODEL={tag} is not in the BentoML model store",
                          hint="pack it first (steuops pack --model NAME) or check BENTOML_HOME") from None
    except (BentoMLException, ValueError) as exc:  # `a:b:c` and the like
        raise ConfigError(f"STEUOPS_BENTO_MODEL={tag} is not a model tag ({exc})",
                          hint="a tag is NAME:VERSION, as `steuops pack` prints it") from None


def load_model() -> ServedModel:
    """A packed model (packed_tag) first; else the export folder or registry `from_env` names."""
    tag = packed_tag()
    if not tag:
        return from_env()
    stored = packed_model(tag)
    source = {"mode": "bento", "tag": str(stored.tag), "path": stored.path}
    settings = serve_settings()
    return ServedModel(stored.path, device=settings.device, source=source, file_name=settings.onnx_file,
                       threshold=settings.threshold)


# ---------------------------------------------------------------- GET /metadata and the OpenAPI document

DOCS_PATH = "/docs.json"
DOCS_PAGES = ("/", "/docs")
# The Swagger UI page, served from BentoML's own static files. BentoML's index page also loads Google Tag
# Manager (a third-party tracker a hospital network must not call) and links out; this one loads nothing remote.
INDEX_HTML = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>steuops classifier</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"> </script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"> </script>
    <script src="./static_content/swagger-initializer.js" charset="UTF-8"> </script>
  </body>
</html>
"""
ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


class HttpExtras:
    """GET /metadata (BentoML routes APIs as POST only: answered as POST {}) and /docs.json completed
    with the model version, GET /metadata, the API key scheme (401) and the load-shedding answers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") in DOCS_PAGES:
            await _send(send, INDEX_HTML.encode(), b"text/html; charset=utf-8")
        elif scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == "/metadata":
            await self.app(_as_empty_post(scope), _empty_json_body, send)
        elif scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == DOCS_PATH:
            await _send_json(send, openapi_document(Classifier.openapi_spec.asdict(), SERVED,
                                                    bool(os.environ.get("STEUOPS_API_KEY"))))
        else:
            await self.app(scope, receive, send)


def _as_empty_post(scope: dict[str, Any]) -> dict[str, Any]:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"2")]
    return {**scope, "method": "POST", "headers": headers}


async def _empty_json_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def _send_json(send: Any, doc: dict[str, Any]) -> None:
    await _send(send, json.dumps(doc).encode(), b"application/json")


async def _send(send: Any, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def openapi_document(spec: dict[str, Any], served: dict[str, Any], api_key: bool) -> dict[str, Any]:
    """BentoML's generated spec plus what it cannot know: version, GET /metadata, 401/413/429/503."""
    spec["info"]["version"] = str(served.get("version") or "unknown")
    # BentoML's own text (badges, help links, "created with BentoML") says nothing about this model.
    spec["info"]["description"] = (f"Clinical text classifier {served.get('model')} version {served.get('version')} "
                                   f"({served.get('mode')}), served by steuops. Forgotten classes "
                                   f"({', '.join(served.get('forgotten') or []) or 'none'}) never appear in an answer.")
    spec["info"].pop("contact", None)
    metadata = spec["paths"]["/metadata"]
    metadata["get"] = {k: v for k, v in metadata["post"].items() if k != "requestBody"} | {
        "operationId": f"{metadata['post']['operationId']}_get"}
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    _add_answers(spec["paths"]["/classify"]["post"], {
        413: "request body over STEUOPS_MAX_BODY_BYTES", 429: "STEUOPS_MAX_INFLIGHT requests in flight; "
        "retry after Retry-After seconds", 503: "the request would miss STEUOPS_MAX_LATENCY_MS; retry after Retry-After"})
    if api_key:
        _secure(spec)
    return spec


def _add_answers(operation: dict[str, Any], answers: dict[int, str]) -> None:
    for status, description in answers.items():
        operation["responses"][str(status)] = {
            "description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _secure(spec: dict[str, Any]) -> None:
    """Every API operation needs the key (Bearer or x-api-key) and may answer 401; health probes stay open."""
    spec["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer STEUOPS_API_KEY"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
    for path in ("/classify", "/metadata"):
        for operation in spec["paths"][path].values():
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            _add_answers(operation, {401: "missing or wrong API key"})


# ---------------------------------------------------------------- the service


@bentoml.service(name="steuops-classifier", traffic={"timeout": 60})
class Classifier:
    """A clinical text classifier with its forgotten classes removed from every answer."""

    # Declared, so that `bentoml build` with STEUOPS_BENTO_MODEL set puts the packed model into the Bento.
    packed = bentoml.models.BentoModel(os.environ["STEUOPS_BENTO_MODEL"]) if os.environ.get("STEUOPS_BENTO_MODEL") \
        else None

    def __init__(self) -> None:
        self.model = load_model()
        meta = self.model.metadata()
        SERVED.update(model=meta["model"], version=meta["version"], mode=meta["source"].get("mode"),
                      forgotten=meta.get("forgotten") or [])

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS, input_spec=ClassifyRequest)
    def classify(self, texts: list[str]) -> list[Prediction]:
        """{"texts": [...]} -> per text {"labels": [...], "scores": {class: p}}; forgotten classes never appear."""
        return self.model.classify(list(texts))  # type: ignore[return-value]  (dicts; BentoML validates them)

    @bentoml.api
    def metadata(self) -> Metadata:
        """Model name, version, forgotten classes, lineage, ONNX sha256 and the runtime providers (GET or POST)."""
        return Metadata(**self.model.metadata(LIMITS))


# Added first = outermost: an unauthenticated caller is refused before it can take capacity.
Classifier.add_asgi_middleware(ApiKeyMiddleware)
Classifier.add_asgi_middleware(RequestGuard)
Classifier.add_asgi_middleware(HttpExtras)
