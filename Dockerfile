# steuops serving image: BentoML + ONNX Runtime over an exported model. No torch, onnx, onnxscript or
# Great Expectations: the service runs the exported ONNX files only (requirements-serve.txt), and steuops
# itself is installed with --no-deps. `apply` (training, validation, export) has its own image: Dockerfile.apply.
#
# CPU (default):
#   docker build -t steuops-serve .
#   docker run -p 3000:3000 -v $HOME/.steuops:/data steuops-serve                    # embedded registry in /data
#   docker run -p 3000:3000 -e MLFLOW_TRACKING_URI=http://mlflow:5000 steuops-serve   # a tracking server
#   docker run -p 3000:3000 -v $PWD/onnx:/model:ro -e STEUOPS_ONNX_DIR=/model steuops-serve   # an exported folder
# GPU (ONNX Runtime's CUDA provider; onnxruntime-gpu 1.31 is built for CUDA 13 + cuDNN 9):
#   docker build -t steuops-serve:gpu --build-arg BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 .
#   docker run --gpus all -p 3000:3000 -v $HOME/.steuops:/data steuops-serve:gpu
# A Bento that carries its model needs no registry at all: pack it, `STEUOPS_BENTO_MODEL=TAG bentoml build`,
# then `bentoml containerize` (see bentofile.yaml).
# Settings (env): STEUOPS_MODEL, STEUOPS_ALIAS or STEUOPS_VERSION, STEUOPS_HOME or MLFLOW_TRACKING_URI,
# STEUOPS_ONNX_DIR, STEUOPS_API_KEY, STEUOPS_MAX_TEXTS, STEUOPS_MAX_CHARS, STEUOPS_THRESHOLD (steuops/serving/__init__.py).

ARG BASE=python:3.11-slim
FROM ${BASE}

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

WORKDIR /app
# The serving requirements first (a layer that survives code changes), then steuops without its dependencies.
COPY requirements-serve.txt ./
RUN pip install -r requirements-serve.txt \
    && if pip show -q onnxruntime 2>/dev/null; then pip uninstall -y onnxruntime; fi
COPY pyproject.toml README.md* bentofile.yaml ./
COPY steuops ./steuops
RUN pip install --no-deps . \
    && python -c "import importlib.util as u, sys; heavy = [m for m in ('torch', 'great_expectations', 'onnxscript') if u.find_spec(m)]; sys.exit(f'training packages in the serving image: {heavy}' if heavy else 0)" \
    && python -c "import onnxruntime, bentoml, steuops.serving.service; print('onnxruntime', onnxruntime.__version__)"

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

# steuops serve reads STEUOPS_MODEL / STEUOPS_ALIAS / STEUOPS_VERSION / STEUOPS_HOME (or STEUOPS_ONNX_DIR) from
# the env, checks there is something to serve, then execs `bentoml serve steuops.serving.service:Classifier`.
CMD ["steuops", "serve", "--host", "0.0.0.0", "--port", "3000"]
