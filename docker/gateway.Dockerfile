# syntax=docker/dockerfile:1
# curvedit gateway: the FastAPI app (service.main:create_app) on uvicorn. No CUDA.
#
# The gateway never imports torch, but the curvedit distribution declares it (one package, one
# dependency list in pyproject.toml). We install the CPU build of torch first, from PyTorch's CPU
# index, exactly as scripts/setup.sh does for the README's virtual environment, so `pip install .`
# installs the same packages as the README and `pip check` holds, without pulling CUDA libraries.
#
# Build from the repository root:  docker build -f docker/gateway.Dockerfile -t curvedit-gateway .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# The torch requirement (pyproject's bound by default); pin it with --build-arg TORCH_SPEC="torch==2.13.0".
ARG TORCH_SPEC="torch>=2.1"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group curvedit \
    && mkdir -p /models /data /artifacts /datasets /factor-cache /state /hf-cache \
    && chown curvedit:curvedit /models /data /artifacts /datasets /factor-cache /state /hf-cache

WORKDIR /app
# The version bound is in TORCH_SPEC; hadolint cannot see through the variable.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"

COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
RUN pip install --no-cache-dir . && pip check

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
