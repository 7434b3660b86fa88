# steuops serving image: `steuops serve` (BentoML + ONNX Runtime) on models:/$STEUOPS_MODEL@$STEUOPS_ALIAS.
#
# CPU (default):
#   docker build -t steuops .
#   docker run -p 3000:3000 -v $HOME/.steuops:/data steuops                 # embedded registry in /data
#   docker run -p 3000:3000 -e MLFLOW_TRACKING_URI=http://mlflow:5000 steuops  # a tracking server
# GPU (ONNX Runtime's CUDA provider; onnxruntime-gpu 1.31 is built for CUDA 13 + cuDNN 9):
#   docker build -t steuops:gpu --build-arg BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
#   docker run --gpus all -p 3000:3000 -v $HOME/.steuops:/data steuops:gpu
# Settings (env): STEUOPS_MODEL, STEUOPS_ALIAS or STEUOPS_VERSION, STEUOPS_HOME or MLFLOW_TRACKING_URI,
# STEUOPS_API_KEY, STEUOPS_MAX_TEXTS, STEUOPS_MAX_CHARS, STEUOPS_THRESHOLD (see steuops/serving/__init__.py).

ARG BASE=python:3.11-slim
FROM ${BASE}

# The CPU wheel index by default: an unpinned torch resolve from PyPI pulls several GB of CUDA packages.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The CUDA base images carry no Python: install it there (ubuntu 24.04: python 3.12, which steuops supports).
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --create-home --uid 10001 steuops \
    && mkdir -p /data && chown steuops /data

# torch first, from the chosen index, so that installing the project finds it satisfied.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY steuops ./steuops
COPY policies ./policies
COPY bentofile.yaml ./
RUN pip install . \
    && python -c "import onnxruntime, bentoml, steuops.serving; print('onnxruntime', onnxruntime.__version__)"

USER steuops
ENV STEUOPS_HOME=/data \
    STEUOPS_MODEL=clinical-dx \
    BENTOML_HOME=/home/steuops/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    MLFLOW_DISABLE_TELEMETRY=true \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
VOLUME ["/data"]
EXPOSE 3000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4).status != 200)"

# steuops serve reads STEUOPS_MODEL / STEUOPS_ALIAS / STEUOPS_VERSION / STEUOPS_HOME from the env,
# checks the version has an ONNX export, then execs `bentoml serve steuops.serving.service:Classifier`.
CMD ["steuops", "serve", "--host", "0.0.0.0", "--port", "3000"]
