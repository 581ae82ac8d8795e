# syntax=docker/dockerfile:1
# curvedit worker: RQ worker process (python -m workers.worker_main) on a CUDA image.
#
# The base image brings a CUDA build of torch; `pip install '.[worker]'` then installs curvedit with
# its worker extra (transformers, tokenizers, safetensors, ...; torch is already satisfied, so pip
# keeps the CUDA build). Pick a base whose torch meets the worker extra's bound in pyproject.toml.
#
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t curvedit-worker .
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

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
RUN pip install --no-cache-dir '.[worker]' \
    && python -c "import torch, contract, workers, service; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

ENV CURVEDIT_MODEL_ROOT=/models \
    CURVEDIT_DATA_ROOT=/data \
    CURVEDIT_OUTPUT_ROOT=/artifacts \
    CURVEDIT_DATASET_DIR=/datasets \
    CURVEDIT_STATE_DIR=/state \
    CURVEDIT_DEVICE=auto \
    HF_HOME=/hf-cache \
    HF_HUB_OFFLINE=1

USER 10001:10001
# SIGTERM: the worker finishes its current batch, records the job's state and exits; compose's
# stop_grace_period must be longer than one batch.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "workers.worker_main"]
