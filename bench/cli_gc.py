"""What the `steuops` process entry point's GC settings save (steuops.cli.run), against the interpreter's defaults.

    steuops demo --home /tmp/gc-home                                             # once, ~5 min on 2 cores
    python bench/cli_gc.py --home /tmp/gc-home --out bench/results/cli-gc-cpu-<host>-<date>.json   # ~5 min

Each command runs both ways, alternately, `--runs` times, on HOME as the demo left it (restored from a copy before
each run, at HOME's own path: a registry records absolute paths):
- "entry": `python -m steuops ...`, the way a user's `steuops` runs (run(): a larger first GC threshold, and the
  objects frozen at exit so that the interpreter's last collections skip them);
- "plain": `python -c 'from steuops.cli import main; sys.exit(main())' ...`, the same command on the defaults.
For each run: seconds to exit, CPU seconds (user + system, from wait4) and peak RSS. CPU seconds move less with the
host's neighbours than wall seconds do; both are reported, as medians and as the entry's ratio to the plain.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WAYS = {
    "entry": [sys.executable, "-m", "steuops"],
    "plain": [sys.executable, "-c", "import sys; from steuops.cli import main; sys.exit(main())"],
}
COMMANDS = {
    "history": ["history", "--model", "clinical-dx"],
    "export": ["export", "--model", "clinical-dx", "--version", "2"],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(argv: list[str]) -> dict[str, float]:
    """One process: its wall seconds to exit, CPU seconds and peak RSS (MiB). A failure stops the bench."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "CI": "true"})
    err = proc.stderr.read()  # a child blocked on a full pipe would never exit
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[3:])} failed (exit {proc.returncode}):\n{err.decode()[-2000:]}")
    return {"seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}


def bench(home: Path, snapshot: Path, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, args in COMMANDS.items():
        measured: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
        for i in range(runs):
            for way in (WAYS if i % 2 == 0 else reversed(WAYS)):  # ABBA: neither way always goes first
                shutil.rmtree(home)
                shutil.copytree(snapshot, home)
                measured[way].append(timed([*WAYS[way], *args, "--home", str(home)]))
                log(f"{name} {way} {i + 1}: {measured[way][-1]}")
        medians = {way: summary(r) for way, r in measured.items()}
        ratios = {key: round(medians["entry"][key] / medians["plain"][key], 3) for key in medians["entry"]}
        out[name] = {"command": "steuops " + " ".join(args), "runs": measured, "median": medians,
                     "entry_over_plain": ratios}
        log(f"{name}: entry/plain wall {ratios['seconds']}, CPU {ratios['cpu_seconds']}, RSS {ratios['peak_rss_mib']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a home `steuops demo` made (left as it was)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each command each way (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default bench/results/cli-gc-cpu-DATE.json)")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if not (home / "mlflow.db").is_file():
        raise SystemExit(f"--home {home}: no registry there; make one with: steuops demo --home {home}")
    sys.path.insert(0, str(ROOT / "bench"))
    from unlearn import cpu_model

    snapshot = home.with_name(home.name + ".cli-gc-snapshot")
    shutil.copytree(home, snapshot)
    try:
        started = {"date": dt.date.today().isoformat(), "cpu": cpu_model(), "load_average": os.getloadavg()[0]}
        result = {**started, "commands": bench(home, snapshot, args.runs)}
    finally:
        shutil.rmtree(home, ignore_errors=True)
        snapshot.rename(home)
    out = args.out or RESULTS / f"cli-gc-cpu-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
