"""A server that sheds load like a service, and keeps note text out of its log and its error bodies.

Real `bentoml serve` processes on 127.0.0.1 over a tiny exported classifier: 413 before the body is
read (Content-Length and chunked), 429 + Retry-After over STEUOPS_MAX_INFLIGHT, 503 + Retry-After when
the adaptive batcher drops a request, at most one aggregate log line a second for shed requests, and
rejected requests (too long, too many, empty, wrong type, malformed) that never echo the text.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import socket
import sys
import time
import uuid
from pathlib import Path

import engine_data
import pytest
from server_helpers import bento_env, free_port, running_server

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]
MARKER = f"ZQX{uuid.uuid4().hex[:12]}PATIENTNOTE"  # unique: any hit in a log or body is an echo of the text
SERVICE = "steuops.serving.service:Classifier"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """An untrained tiny classifier, exported: scores do not matter here, only how the server behaves."""
    return engine_data.untrained_export(tmp_path_factory.mktemp("guard-export"), version="1", forgotten=[])


def _start(export_dir: Path, tmp_path_factory, name: str, **settings: str):
    log = tmp_path_factory.mktemp(name) / "server.log"
    env = bento_env(log.parent, STEUOPS_ONNX_DIR=str(export_dir), STEUOPS_MAX_TEXTS="8", STEUOPS_MAX_CHARS="500",
                      **settings)
    cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port := free_port())]
    return running_server(cmd, env, port, log), log


@pytest.fixture(scope="module")
def guarded(export_dir, tmp_path_factory):
    """(base url, log path) of a server that holds one request at a time (STEUOPS_MAX_INFLIGHT=1)."""
    server, log = _start(export_dir, tmp_path_factory, "guarded", STEUOPS_MAX_INFLIGHT="1")
    with server as base:
        yield base, log


def _log_after(log: Path, settle: float = 1.5) -> str:
    time.sleep(settle)  # the aggregate shed line is written up to a second after the last shed request
    return log.read_text(errors="replace")


def _assert_text_free(text: str) -> None:
    """No marker (the note text) and no traceback; on failure say so without printing the log (it holds the text)."""
    leaks = [leak for leak in (MARKER, "input_value", "Traceback", "CancelledError", "An unexpected error")
             if leak in text]
    assert not leaks, f"server log has {len(leaks)} forbidden strings (marker or traceback); see the server.log"


def _raw(port: int, head: str, body: bytes = b"", *, wait: float = 10.0) -> tuple[socket.socket, bytes]:
    """Send a hand-made request (to control Content-Length and chunking) and read what comes back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    sock.sendall(head.encode() + body)
    return sock, _response(sock)


def _response(sock: socket.socket) -> bytes:
    """One whole HTTP response: the head, then Content-Length bytes of body (they may come in separate reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1)) if b"content-length" in head.lower() else 0
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return head + b"\r\n\r\n" + body


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


# ---------------------------------------------------------------- rejected requests: 400, text-free


def test_rejected_requests_echo_no_text(guarded):
    import httpx

    base, log = guarded
    long_text = MARKER + "x" * 500
    bad = [  # (what, request kwargs, words the error must say)
        ("too long", {"json": {"texts": ["fine", long_text]}}, f"texts[1] has {len(long_text)} characters"),
        ("too many", {"json": {"texts": [MARKER] * 9}}, "limit is 8"),
        ("empty", {"json": {"texts": [MARKER, ""]}}, "texts[1] is empty"),
        ("whitespace", {"json": {"texts": [MARKER, " \n\t "]}}, "texts[1] is empty"),
        ("only empty", {"json": {"texts": [""]}}, "texts[0] is empty"),
        ("not a list", {"json": {"texts": MARKER}}, "texts"),
        ("not strings", {"json": {"texts": [MARKER, 7]}}, "texts"),
        ("nested", {"json": {"texts": [{MARKER: MARKER}]}}, "texts"),
        ("unknown key", {"json": {MARKER: [MARKER]}}, "texts"),
        ("malformed", {"content": ('{"texts": ["' + MARKER + '",').encode(),
                       "headers": {"content-type": "application/json"}}, "json"),
    ]
    with httpx.Client(base_url=base, timeout=30) as http:
        for what, kwargs, words in bad:
            r = http.post("/classify", **kwargs)
            assert r.status_code == 400, (what, r.status_code)
            assert MARKER not in r.text, f"{what}: the error body echoes the text"
            assert words.lower() in r.text.lower(), (what, r.text[:300])
        assert http.post("/classify", json={"texts": ["lactate noted", "bnp edema"]}).status_code == 200
    text = _log_after(log)
    _assert_text_free(text)
    assert len(re.findall(r"rejected /classify", text)) >= len(bad) - 1, text[-3000:]  # malformed may log no line


# ---------------------------------------------------------------- 413 before the body is read


def test_body_over_limit_refused_before_it_is_read(guarded):
    import httpx

    base, log = guarded
    limit = 8 * 500 * 6 + 65_536  # Limits(max_texts=8, max_chars=500).max_body_bytes
    head = ("POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000000\r\n\r\n")
    start = time.monotonic()
    sock, answer = _raw(_port(base), head, b'{"texts": ["' + MARKER.encode())  # 1 GB announced, 40 bytes sent
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - start < 5 and MARKER.encode() not in answer

    chunk = (b'{"texts": ["' + MARKER.encode()).ljust(16_384, b"x")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // len(chunk) + 2))
    head = "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    sock, answer = _raw(_port(base), head, chunks)  # no terminating chunk: the server must stop on its count
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"STEUOPS_MAX_BODY_BYTES" in answer and MARKER.encode() not in answer

    with httpx.Client(base_url=base, timeout=30) as http:  # the largest legal request still passes, chunked too
        assert http.post("/classify", json={"texts": ["\u00e9" * 500] * 8}).status_code == 200
        body = json.dumps({"texts": ["edema"] * 8}).encode()
        assert http.post("/classify", content=iter([body[:10], body[10:]]),
                         headers={"content-type": "application/json"}).status_code == 200
    _assert_text_free(_log_after(log, 0.5))


# ---------------------------------------------------------------- 429 over capacity


def test_over_capacity_gets_429_with_retry_after_and_one_log_line_a_second(guarded):
    import httpx

    base, log = guarded
    body = json.dumps({"texts": ["lactate cultures"]}).encode()
    head = f"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    hold = socket.create_connection(("127.0.0.1", _port(base)), timeout=30)
    hold.sendall(head.encode() + body[:5])  # a request admitted and waiting for its body holds the only slot
    time.sleep(0.5)
    with httpx.Client(base_url=base, timeout=30) as http:
        shed = http.post("/classify", json={"texts": [MARKER]})
        assert shed.status_code == 429 and shed.headers["retry-after"] == "1"
        assert "capacity" in shed.json()["error"] and MARKER not in shed.text
        assert http.get("/readyz").status_code == 200  # probes pass while saturated
        hold.sendall(body[5:])
        assert _response(hold).startswith(b"HTTP/1.1 200")
        hold.close()
        assert http.post("/classify", json={"texts": ["bnp"]}).status_code == 200  # the slot was given back

        start = time.monotonic()
        statuses = _burst(http, clients=16, per_client=8)
        elapsed = time.monotonic() - start
    assert set(statuses) <= {200, 429} and statuses.count(429) >= 1, statuses
    text = _log_after(log)
    _assert_text_free(text)
    shed_lines = [line for line in text.splitlines() if "shed " in line and "requests in the last" in line]
    assert 1 <= len(shed_lines) <= elapsed + 3, shed_lines
    assert sum(int(re.search(r"shed (\d+)", line).group(1)) for line in shed_lines) >= statuses.count(429)
    assert "status=429" not in text  # no access line per shed request either


def _burst(http, *, clients: int, per_client: int, texts: int = 1) -> list[int]:
    """`clients` threads each posting `per_client` requests back to back; every status code, in order."""
    def client(i: int) -> list[int]:
        out = []
        for j in range(per_client):
            r = http.post("/classify", json={"texts": [f"edema lactate {i} {j} {MARKER}"] * texts})
            if r.status_code in (429, 503):
                assert r.headers.get("retry-after") == "1" and "error" in r.json() and MARKER not in r.text
            out.append(r.status_code)
        return out

    with cf.ThreadPoolExecutor(clients) as pool:
        return [s for part in pool.map(client, range(clients)) for s in part]


# ---------------------------------------------------------------- 503 from the adaptive batcher


def test_batching_deadline_gets_503_with_retry_after_not_unexpected_error(export_dir, tmp_path_factory):
    import httpx

    server, log = _start(export_dir, tmp_path_factory, "deadline", STEUOPS_MAX_LATENCY_MS="1")
    with server as base, httpx.Client(base_url=base, timeout=60,
                                      limits=httpx.Limits(max_connections=32)) as http:
        start = time.monotonic()
        statuses = _burst(http, clients=16, per_client=12, texts=8)
        elapsed = time.monotonic() - start
        text = _log_after(log)
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 1, statuses
    _assert_text_free(text)
    shed_lines = [line for line in text.splitlines() if "requests in the last" in line]
    assert 1 <= len(shed_lines) <= elapsed + 3 and all("deadline" in line for line in shed_lines), shed_lines
    assert "status=503" not in text
