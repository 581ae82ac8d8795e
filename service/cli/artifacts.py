"""Artifact verbs over HTTP: ``report`` (print a job's report.md, save its plots) and
``download`` (fetch the edited model directory). Both stream through ``CurveditClient`` with the
sha256 of the artifact list checked and every file written to a temporary name and renamed."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import typer

from service.cli.context import EXIT_FAILED, console, fail, fail_api, state
from service.client import CurveditAPIError, CurveditClient

REPORT = "report.md"


def _dest(dest: Path | None, job_id: str) -> Path:
    target = dest if dest is not None else Path.cwd() / job_id
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        fail(f"--dest {target} already exists and is not an empty directory; choose another")
    return target


def _fetch_into(client: CurveditClient, job_id: str, entries: list[dict[str, Any]], target: Path, strip: str) -> None:
    """Download ``entries`` into a staging directory beside ``target``, then rename it into place:
    ``target`` appears complete or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
    try:
        client.download_files(job_id, entries, staging, strip=strip)
        if target.exists():
            target.rmdir()  # empty (checked in _dest)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def report(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="Job id."),
    dest: Path | None = typer.Option(
        None, "--dest", help="Where to save report.md and the plots (default ./<job id>/)."
    ),
) -> None:
    """Print a succeeded job's report.md and save it with its PNG plots."""
    with state(ctx).client() as client:
        try:
            entries = client.list_artifacts(job_id)
        except CurveditAPIError as exc:
            fail_api(exc)
        top = [e for e in entries if "/" not in e["path"]]
        if not any(e["path"] == REPORT for e in top):
            fail(f"job {job_id} has no {REPORT} (it was exported before reports existed)", EXIT_FAILED)
        wanted = [e for e in top if e["path"] == REPORT or e["path"].endswith(".png")]
        target = _dest(dest, job_id)
        try:
            _fetch_into(client, job_id, wanted, target, "")
        except CurveditAPIError as exc:
            fail_api(exc)
    typer.echo((target / REPORT).read_text(encoding="utf-8"))
    for e in wanted:
        console.print(f"saved {target / e['path']} ({e['size']} bytes)", highlight=False)


def _model_dir(record: dict[str, Any], keep_mass: float | None) -> str:
    """The artifact sub-directory (``""`` or ``rho-…/``) holding the model to fetch."""
    result = record.get("result") or {}
    output = result.get("output") or {}
    points = result.get("results") or []
    if not output.get("sweep"):
        return ""
    if keep_mass is None:
        rhos = ", ".join(f"{p.get('keep_mass')}" for p in points)
        fail(f"job {record.get('id')} is a sweep; pick a point with --keep-mass (one of {rhos})")
    for p in points:
        if p.get("keep_mass") is not None and abs(float(p["keep_mass"]) - keep_mass) < 1e-12:
            rel = str((p.get("artifacts") or {}).get("relative_dir") or "")
            base = str(output.get("relative_dir") or "")
            sub = rel[len(base) :].strip("/") if rel.startswith(base) else ""
            return f"{sub}/" if sub else ""
    fail(f"--keep-mass {keep_mass}: not a point of this sweep")


def download(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="Job id."),
    dest: Path | None = typer.Option(None, "--dest", help="Directory to create (default ./<job id>/)."),
    keep_mass: float | None = typer.Option(None, "--keep-mass", help="For a sweep job: which point's model."),
) -> None:
    """Fetch the edited model (every file of its directory: weights, config, tokenizer, delta,
    manifest), each sha256-checked; the directory loads with ``from_pretrained``."""
    with state(ctx).client() as client:
        try:
            record = client.get(job_id)
            if record.get("status") != "succeeded":
                fail(f"job {job_id} is {record.get('status')}; only a succeeded job has a model to download")
            sub = _model_dir(record, keep_mass)
            entries = [
                e
                for e in client.list_artifacts(job_id)
                if e["path"].startswith(sub) and "/" not in e["path"][len(sub) :]
            ]
            if not entries:
                fail(f"job {job_id} exported no files under {sub or 'its output directory'}", EXIT_FAILED)
            target = _dest(dest, job_id)
            _fetch_into(client, job_id, entries, target, sub)
        except CurveditAPIError as exc:
            fail_api(exc)
    total = sum(int(e["size"]) for e in entries)
    console.print(f"downloaded {len(entries)} file(s), {total} bytes, sha256 checked, to {target}", highlight=False)
