"""Shared fixtures: a real Redis database (never a mock) and tiny saved models.

The Redis used is ``CURVEDIT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``), a dedicated
database number that is flushed before and after each test that asks for it. Developers running
suites in parallel point each at its own database number.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.tiny_models import save_tiny

TEST_REDIS_URL = os.environ.get("CURVEDIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem, not a test result
        pytest.fail(f"tests need a real Redis at {TEST_REDIS_URL} (run scripts/ensure-redis.sh): {exc}")
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 4-layer Llama + BPE tokenizer saved with save_pretrained."""
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny-llama", family="llama")
