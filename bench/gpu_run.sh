#!/usr/bin/env bash
# Issue 11, item 6: the three GPU benches in one device call (how to pack and carry the kit: bench/gpu_kit.py).
#   bash bench/gpu_run.sh                    # on the device machine: everything into $OUT
#   bash bench/gpu_run.sh serve              # only the named benches (scaling, unlearn, serve), in that order
#   bash bench/gpu_run.sh --smoke            # here, on CPU: the same steps at toy sizes (a rehearsal)
# Each bench runs under its own time limit, most important first, and writes its JSON as it goes, so a
# limit hit still leaves the finished rows. $OUT gets at most 6 files: the device tool returns 8.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
BENCHES=()
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    scaling|unlearn|serve) BENCHES+=("$arg") ;;
    *) echo "gpu_run.sh: unknown argument '$arg' (expected --smoke, scaling, unlearn or serve)" >&2; exit 2 ;;
  esac
done
[ ${#BENCHES[@]} -gt 0 ] || BENCHES=(scaling unlearn serve)
OUT=${OUT:-out/gpu}
SITE=${SITE:-/tmp/steuops-site}
PY=${PY:-python3}
mkdir -p "$OUT"
LOG="$OUT/run.log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

"$PY" bench/gpu_kit.py unpack --site "$SITE" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 2
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
wheel=$("$PY" bench/gpu_kit.py join-ort --parts /tmp/steuops-ort --into /tmp/steuops-wheel) || exit 2
if [ -n "$wheel" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$wheel" 2>&1 | tee -a "$LOG"
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import platform, torch, transformers, onnxruntime
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}, {gpu}")
EOF

# bench name, seconds at most, then its command line
run() {
  local name=$1 limit=$2
  shift 2
  say "$name: started (at most ${limit} s): $*"
  timeout "$limit" "$PY" "$@" >>"$LOG" 2>&1
  local rc=$?
  say "$name: exit $rc$([ $rc -eq 124 ] && echo ' (time limit: the JSON holds the rows finished before it)')"
}

ort_cuda() { "$PY" -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())"; }

for bench in "${BENCHES[@]}"; do
  if [ "$SMOKE" -eq 1 ]; then
    case "$bench" in
      scaling) run scaling 600 bench/scaling.py --preset gpu --device cpu --ns 200,400 --variants steu_cohort \
                 --out "$OUT/scaling-gpu.json" ;;
      unlearn) run unlearn 600 bench/unlearn.py --preset gpu --device cpu --notes 200 --methods steu,retrain,head_only \
                 --no-throughput --out "$OUT/unlearn-gpu.json" ;;
      serve) run serve 300 bench/serve.py --preset cpu --no-http --lengths 64 --calls 5 2 --out "$OUT/serve-gpu.json" ;;
    esac
    continue
  fi
  case "$bench" in
    scaling) run scaling "${SCALING_S:-330}" bench/scaling.py --preset gpu --out "$OUT/scaling-gpu.json" ;;
    unlearn) run unlearn "${UNLEARN_S:-180}" bench/unlearn.py --preset gpu --out "$OUT/unlearn-gpu.json" ;;
    serve)
      if ort_cuda; then
        run serve "${SERVE_S:-60}" bench/serve.py --preset gpu --no-http --out "$OUT/serve-gpu.json"
      else
        say "serve: skipped: onnxruntime has no CUDA provider here (carry onnxruntime-gpu: bench/gpu_kit.py)"
      fi ;;
  esac
done
say "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
