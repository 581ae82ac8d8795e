"""Uploaded dataset schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

DatasetKind = Literal["text", "jsonl"]


class Dataset(BaseModel):
    id: str = Field(description="Pass as calibration.dataset_id / evaluation.*.dataset_id.")
    owner: str
    name: str
    kind: DatasetKind
    bytes: int
    sha256: str = Field(description="Fingerprint of the uploaded bytes.")
    created_at: datetime
    records: int = Field(description="Documents (text: blank-line-separated blocks; jsonl: lines).")
    fields: list[str] = Field(default_factory=list, description="jsonl: the fields every record has.")


class DatasetList(BaseModel):
    data: list[Dataset]
    next_cursor: str | None = None
