"""Artifact schemas: one file of a job's artifact tree (``Artifact``) and a page of them
(``ArtifactList``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Artifact(BaseModel):
    path: str = Field(
        description="POSIX path relative to the job's artifact directory, e.g. 'rho-0.9/model.safetensors'."
    )
    size: int = Field(description="Bytes.")
    sha256: str | None = Field(
        default=None,
        description="Hex SHA-256 as recorded in the job's manifest.json at export (manifest files are hashed "
        "when listed); null when the manifest does not record the file.",
    )


class ArtifactList(BaseModel):
    data: list[Artifact]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page; null at the end.")
