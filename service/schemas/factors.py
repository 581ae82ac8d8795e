"""Factor cache entry schemas (read from the cache's Redis index)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FactorEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    key: str = Field(description="Content address (sha256) of the entry.")
    bytes: int = 0
    created_at: float | None = Field(default=None, description="Epoch seconds.")
    last_used: float | None = Field(default=None, description="Epoch seconds.")
    model: str | None = None
    module: str | None = None
    kind: str | None = None
    args: dict[str, Any] | None = None


class FactorList(BaseModel):
    data: list[FactorEntry]
    total_bytes: int
    count: int
