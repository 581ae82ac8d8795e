"""A real gateway (``service.main:create_app`` on uvicorn) served from a thread on a free port, for
the client and CLI tests. Settings use temporary roots, the test Redis database and two API keys."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from contract.settings import Settings
from tests.gateway_helpers import make_settings

REPO = Path(__file__).resolve().parents[1]
KEYS = {"alice": "cli-key-alice-1234", "bob": "cli-key-bob-5678"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_settings(tmp: Path, redis_url: str, **overrides: Any) -> Settings:
    """The gateway tests' settings (``make_settings``) with this module's keys, queue and a state dir."""
    (tmp / "state").mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = dict(
        state_dir=tmp / "state",
        api_keys=",".join(f"{n}:{k}" for n, k in KEYS.items()),
        queue_name="curvedit-cli-test",
        max_body_bytes=Settings.model_fields["max_body_bytes"].default,
    )
    values.update(overrides)
    return make_settings(tmp, redis_url, **values)


@contextmanager
def live_gateway(settings: Settings) -> Iterator[str]:
    """Serve the gateway for the block; yields its base URL."""
    from service.main import create_app

    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    else:  # pragma: no cover - environment problem
        server.should_exit = True
        raise RuntimeError("gateway did not start within 30 s")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def job_body(model: str = "tiny", **edit: Any) -> dict[str, Any]:
    """A valid spec for a model directory ``model`` under the model root (inline calibration)."""
    return {
        "model": {"path": model},
        "calibration": {"texts": ["hello world", "the quick brown fox"], "max_tokens": 64, "seq_len": 16},
        "edit": {"layers": [2, 3], "projections": ["gate", "up"], "keep_mass": 0.9, **edit},
    }


def stack_env(tmp: Path) -> dict[str, str]:
    """Environment for a `curvedit up`/`demo` subprocess: no Redis URL (embedded), roots under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVEDIT_")}
    for name in ("models", "data", "out", "datasets"):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    env.update(
        CURVEDIT_STATE_DIR=str(tmp / "state"),
        CURVEDIT_MODEL_ROOT=str(tmp / "models"),
        CURVEDIT_DATA_ROOT=str(tmp / "data"),
        CURVEDIT_OUTPUT_ROOT=str(tmp / "out"),
        CURVEDIT_DATASET_DIR=str(tmp / "datasets"),
        CURVEDIT_QUEUE_NAME="curvedit-up-test",
        CURVEDIT_DEVICE="cpu",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    return env
