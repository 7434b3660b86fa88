"""Regenerate the README's screenshots: docs/img/gx-data-docs.png and docs/img/bentoml-docs.png.

    python docs/screenshots.py      # needs chromium (apt-get install -y chromium); about 2 minutes on 2 cores

Everything runs offline in a temp folder that is removed afterwards (--keep keeps it): a tiny untrained
classifier is registered as clinical-dx@production with demo notes as its dataset and exported to ONNX;
`steuops apply --dry-run --data-docs` validates the deletion cohort for `sepsis` and builds the GX Data Docs
site; `steuops serve` starts on a free port. Headless Chromium shoots the validation result page of the Data
Docs, then BentoML's Swagger UI (its index page `/`, assets served locally, reading `/docs.json`) with POST
/classify opened and its request schema shown (clicked through the DevTools protocol), and the server stops.

GX Data Docs link Bootstrap, jQuery, Font Awesome, bootstrap-table and vega from public CDNs and the GX logo
from S3: offline the page renders unstyled, without its pass/fail icons. For the screenshot a copy of the
page uses Debian's packaged Bootstrap 4, jQuery and Font Awesome 4.7 where installed (apt-get install -y
libjs-bootstrap4 libjs-jquery fonts-font-awesome) and the logo the site carries; else it is shot as it is.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
MODEL = "clinical-dx"
WIDTH = 1400
CLASSIFY = "#/Service%20APIs/steuops-classifier__classify"  # Swagger UI deep link: the operation opened

LOCAL_ASSETS = {
    r"https://maxcdn\.bootstrapcdn\.com/bootstrap/[^\"]*/bootstrap\.min\.css":
        "/usr/share/javascript/bootstrap4/css/bootstrap.min.css",
    r"https://stackpath\.bootstrapcdn\.com/bootstrap/[^\"]*/bootstrap\.min\.js":
        "/usr/share/javascript/bootstrap4/js/bootstrap.bundle.min.js",
    r"https://code\.jquery\.com/jquery-[^\"]*\.min\.js": "/usr/share/javascript/jquery/jquery.min.js",
    r"https://cdnjs\.cloudflare\.com/ajax/libs/font-awesome/[^\"]*\.css":
        "/usr/share/fonts-font-awesome/css/font-awesome.min.css",
}
# Font Awesome 4.7 draws the `fas fa-check-circle` icons of FA 6 once `fas` names its font.
FA_SHIM = "<style>.fas,.far,.fab{display:inline-block;font:normal normal normal 14px/1 FontAwesome}</style>"
GX_LOGO = r"https://great-expectations-web-assets\.s3[^\"]*/logo-long\.png[^\"]*"
# In the Swagger UI: the request body's "Schema" tab, then every collapsed model in it; answers the clicks left.
SHOW_REQUEST_SCHEMA = """(() => {
  const body = document.querySelector(".opblock.is-open .opblock-section-request-body");
  if (!body) return -1;
  const tab = body.querySelector('button.tablinks[data-name="model"]');
  if (tab && tab.getAttribute("aria-selected") !== "true") { tab.click(); return 1; }
  const folded = [...body.querySelectorAll(".model-toggle.collapsed")];
  folded.forEach((el) => el.click());
  return folded.length;
})()"""


def build_home(home: Path) -> None:
    """clinical-dx v1 @production: a tiny untrained BERT over the six demo labels, demo notes logged, ONNX export."""
    from steuops.demo.notes import generate, to_frame
    from steuops.export import export_version
    from steuops.registry import Registry
    from steuops.tiny import classifier, wordpiece_tokenizer

    notes = generate(n=400, seed=7)
    tok = wordpiece_tokenizer(notes.texts, vocab_size=600)
    labels = ["sepsis", "pneumonia", "heart failure", "acute kidney injury", "copd exacerbation",
              "diabetic ketoacidosis"]
    reg = Registry(home=home)
    ref = reg.log_base_model(MODEL, classifier(labels, vocab_size=len(tok), hidden=32, layers=1, seed=0), tok,
                             dataset=to_frame(notes))
    export_version(reg, ref, check_texts=notes.texts[:4], max_length=64)


def offline_copy(page: Path) -> Path:
    """A copy of a Data Docs page beside it, with the CDN assets that exist locally swapped in."""
    html = page.read_text(encoding="utf-8")
    for pattern, local in LOCAL_ASSETS.items():
        if Path(local).is_file():
            html = re.sub(pattern, Path(local).as_uri(), html)
    html = re.sub(r'\s(integrity|crossorigin)="[^"]*"', "", html)  # hashes of the CDN files
    site = next(p for p in page.parents if (p / "index.html").is_file() and (p / "static").is_dir())
    html = re.sub(GX_LOGO, (site / "static" / "images" / "logo-long.png").as_uri(), html)
    copy = page.with_name(f"{page.stem}.offline.html")
    copy.write_text(html.replace("</head>", f"{FA_SHIM}</head>", 1), encoding="utf-8")
    return copy


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("no chromium on PATH: apt-get install -y chromium")


def browser_args(profile: str, height: int) -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={WIDTH},{height}"]


def shoot(url: str, out: Path, height: int) -> None:
    """The first `height` pixels of the page, once its scripts ran."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([*browser_args(profile, height), "--virtual-time-budget=5000", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)
    _wrote(out)


class DevTools:
    """The least of the Chrome DevTools protocol over a stdlib websocket: one page, one call at a time."""

    def __init__(self, ws_url: str) -> None:
        parts = urlsplit(ws_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          .encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self._read(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"devtools refused the websocket: {head[:200]!r}")
        self.calls = 0

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("devtools closed the connection")
            buf += chunk
        return buf

    def _message(self) -> bytes:
        first, second = self._read(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack(">H", self._read(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", self._read(8))[0]
        payload = self._read(size)
        return payload if first & 0x80 else payload + self._message()  # no FIN: a continuation follows

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        data = json.dumps({"id": self.calls, "method": method, "params": params}).encode()
        size = (bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack(">H", len(data)))
        mask = os.urandom(4)  # a client masks every frame; our calls stay under 64 KiB
        self.sock.sendall(b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        while True:  # events arrive in between; skip them
            answer = json.loads(self._message())
            if answer.get("id") == self.calls:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def value(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def shoot_swagger(base: str, out: Path) -> None:
    """BentoML's Swagger UI with POST /classify open and its request schema (the limits) shown: from the top of
    the page to the end of the operation (its 400/413/429/503 answers)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([*browser_args(profile, 1600), f"--remote-debugging-port={port}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            page = _wait(lambda: next(t for t in json.load(urllib.request.urlopen(
                f"http://127.0.0.1:{port}/json/list", timeout=2)) if t["type"] == "page"), "chromium devtools")
            tools = DevTools(page["webSocketDebuggerUrl"])
            tools.call("Page.navigate", url=f"{base}/{CLASSIFY}")
            _wait(lambda: tools.value('document.querySelector(".opblock.is-open .opblock-section-request-body")'
                                      ' ? true : null'), "the /classify operation")
            _wait(lambda: tools.value(SHOW_REQUEST_SCHEMA) == 0 or None, "the request schema")
            time.sleep(0.5)
            bottom = tools.value('(() => { const r = document.querySelector(".opblock.is-open")'
                                 '.getBoundingClientRect(); return r.bottom + window.scrollY + 16; })()')
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": WIDTH, "height": bottom, "scale": 1})
            out.write_bytes(base64.b64decode(shot["data"]))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    _wrote(out)


def _wait(probe: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, StopIteration, ValueError):
            found = probe()
            if found is not None:
                return found
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} in {timeout:.0f} s")
        time.sleep(0.25)


def _wrote(out: Path) -> None:
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(env: dict[str, str], home: Path, log: Path) -> Iterator[str]:
    """`steuops serve --model clinical-dx` in its own process group until /readyz; the group stopped after."""
    port = free_port()
    cmd = [sys.executable, "-m", "steuops", "serve", "--model", MODEL, "--home", str(home), "--port", str(port)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool | None:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            return urllib.request.urlopen(f"{base}/readyz", timeout=2).status == 200 or None

        _wait(ready, "ready server", timeout=180)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="Where the PNGs go.")
    parser.add_argument("--keep", action="store_true", help="Keep the temp folder (home, Data Docs, server log).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="steuops-shots-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEUOPS_")}
    env.update(BENTOML_HOME=str(work / "bentoml"), BENTOML_DO_NOT_TRACK="True", MLFLOW_DISABLE_TELEMETRY="true",
               HF_HUB_OFFLINE="1")
    os.environ.update(env)
    try:
        home = work / "home"
        build_home(home)
        docs = work / "gx-docs"
        apply = [sys.executable, "-m", "steuops", "apply", "-m", MODEL, "-f", "sepsis", "--dry-run",
                 "--data-docs", str(docs), "--home", str(home)]
        done = subprocess.run(apply, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"apply --dry-run exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        pages = sorted((docs / "validations" / "steuops-cohort").rglob("*.html"))  # steuops's own suite
        if not pages:
            raise SystemExit(f"no validation result page under {docs}/validations")
        shoot(offline_copy(pages[0]).as_uri(), args.out / "gx-data-docs.png", 2850)  # all 14 expectations
        with serving(env, home, work / "serve.log") as base:
            shoot_swagger(base, args.out / "bentoml-docs.png")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
