"""Shared fixtures: a real Redis (never a mock) owned by this test run, and tiny saved models.

The run starts its own ``redis-server`` on a free loopback port (``tests/redis_server.py``) and
flushes only that server between tests, so two suites on one machine never touch each other's
data. ``CURVEDIT_TEST_REDIS_URL`` points the suite at another server instead; that database must
be empty when the run starts (the suite refuses to flush data it does not own).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import OwnedRedis
from tests.tiny_models import save_tiny
from tests.vision_fixtures import VisionData, train_memorizing_vit


@pytest.fixture(scope="session")
def owned_redis_url() -> Iterator[str]:
    """The URL of a Redis database this run owns: its own server, or an explicitly given empty one."""
    given = os.environ.get("CURVEDIT_TEST_REDIS_URL")
    if given:
        client = redis.Redis.from_url(given)
        try:
            if client.dbsize():
                pytest.exit(f"CURVEDIT_TEST_REDIS_URL={given} is not empty; the suite only flushes a database it owns")
        finally:
            client.close()
        yield given
        return
    server = OwnedRedis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(owned_redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(owned_redis_url)
    client.flushdb()
    yield owned_redis_url
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


@pytest.fixture(scope="session")
def vision_data(tmp_path_factory: pytest.TempPathFactory) -> VisionData:
    """A tiny ViT trained here until it memorised flipped labels, and its .npz / PNG data files."""
    return train_memorizing_vit(tmp_path_factory.mktemp("vision"))
