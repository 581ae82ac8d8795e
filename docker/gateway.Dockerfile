# syntax=docker/dockerfile:1
# curvedit gateway: the FastAPI app (service.main:create_app) on uvicorn. No torch, no CUDA.
#
# The base curvedit distribution (`pip install .`) is the gateway, the CLI, the client and the
# torch-free contract package; torch and transformers come only with the `worker` extra, which this
# image does not install. The build checks that torch is absent and that the app still imports.
#
# Build from the repository root:  docker build -f docker/gateway.Dockerfile -t curvedit-gateway .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group curvedit \
    && mkdir -p /models /data /artifacts /datasets /factor-cache /state /hf-cache \
    && chown curvedit:curvedit /models /data /artifacts /datasets /factor-cache /state /hf-cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY service ./service
COPY workers ./workers
RUN pip install --no-cache-dir . && pip check \
    && python -c "import importlib.util as u, service.main; assert u.find_spec('torch') is None"

ENV CURVEDIT_MODEL_ROOT=/models \
    CURVEDIT_DATA_ROOT=/data \
    CURVEDIT_OUTPUT_ROOT=/artifacts \
    CURVEDIT_DATASET_DIR=/datasets \
    CURVEDIT_STATE_DIR=/state \
    HF_HOME=/hf-cache \
    HF_HUB_OFFLINE=1

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["uvicorn", "service.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
