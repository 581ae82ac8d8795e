"""Helpers for the gateway tests: settings with temporary roots and a minimal valid job body."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract.settings import Settings

KEYS = {"alice": "key-alice-123", "bob": "key-bob-456"}


def make_settings(tmp: Path, redis_url: str, **overrides: Any) -> Settings:
    roots = {name: tmp / name for name in ("models", "data", "out", "datasets")}
    for p in roots.values():
        p.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = dict(
        redis_url=redis_url,
        model_root=roots["models"],
        data_root=roots["data"],
        output_root=roots["out"],
        dataset_dir=roots["datasets"],
        api_keys=",".join(f"{n}:{k}" for n, k in KEYS.items()),
        queue_name="curvedit-test",
        max_upload_bytes=4096,
        max_body_bytes=64 * 1024,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def auth(owner: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[owner]}"}


def job_body(model: str = "llama", **edit: Any) -> dict[str, Any]:
    return {
        "model": {"path": model},
        "calibration": {"texts": ["hello world", "the quick brown fox"], "max_tokens": 64, "seq_len": 16},
        "edit": {"layers": [2, 3], "projections": ["gate", "up"], "keep_mass": 0.9, **edit},
    }
