#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv: a CPU build of torch first
# (so nothing pulls a multi-GB CUDA build), then curvedit with its worker (torch, transformers, ...),
# mlflow and otel (their tests run in CI),
# dev and embedded-Redis extras. A gateway-only install is `pip install .` (no torch).
# Idempotent: a second run only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CURVEDIT_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.curvedit-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # CPU wheel: on these machines it is served from local disk; elsewhere from the PyTorch CPU index.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" \
    || "$VENV/bin/python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
"$VENV/bin/python" -m pip install -q -e '.[worker,dev,embedded,mlflow,otel]'
# the `oracles` extra (curvlinops, for the tests) without its dependencies: see pyproject.toml
"$VENV/bin/python" -m pip install -q --no-deps "curvlinops-for-pytorch==3.0.1" "backpack-for-pytorch==1.7.1" \
  "linear_operator==0.6.1" "einops>=0.8" "einconv>=0.1" "opt-einsum>=3.3"
touch "$stamp"
