"""The BentoML service (the only module importing bentoml): /classify, /metadata, plus BentoML's /readyz, /livez.

    bentoml serve steuops.serving.service:Classifier --host 127.0.0.1 --port 3000

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
from typing import Annotated, Any

from steuops import env  # noqa: F401  (telemetry off before bentoml loads)

import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException, ServiceUnavailable  # noqa: E402
from pydantic import AfterValidator, ValidationError  # noqa: E402

from steuops.serving import OPEN_PATHS, Limits, _env_int, api_key_ok, from_env  # noqa: E402

LIMITS = Limits.from_env()
# Adaptive batching may merge several requests; one request alone must always fit.
MAX_BATCH = max(2 * LIMITS.max_texts, 64)
# BentoML's dispatcher answers 503 to requests it predicts will miss this deadline; 25 ms shed
# load on a busy 2-core CPU (measured), so the default is generous and configurable.
MAX_LATENCY_MS = _env_int("STEUOPS_MAX_LATENCY_MS", 2000)
# Requests one worker holds at once (reading, queued for a batch, running). Batching absorbs ~16
# concurrent single-note clients within the deadline on 2 cores; far beyond that, queueing only adds latency.
MAX_INFLIGHT = _env_int("STEUOPS_MAX_INFLIGHT", 32)
MAX_BODY_BYTES = LIMITS.max_body_bytes
RETRY_AFTER_S = 1
log = logging.getLogger("steuops.serving")

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


# Added first = outermost: an unauthenticated caller is refused before it can take capacity.
Classifier.add_asgi_middleware(ApiKeyMiddleware)
Classifier.add_asgi_middleware(RequestGuard)
