"""``curvedit datasets ...`` and ``curvedit factors ...``: uploaded corpora and the factor cache."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from service.cli.context import console, fail, fail_api, state
from service.cli.render import items_table
from service.client import CurveditAPIError

datasets_app = typer.Typer(help="Upload, show and delete calibration / evaluation datasets.", no_args_is_help=True)
factors_app = typer.Typer(help="Inspect and delete cached curvature factors.", no_args_is_help=True)


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A .txt, .jsonl ('text' or 'prefix'/'suffix' fields) file."),
    name: str | None = typer.Option(None, help="Name to store it under (default: the file name)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Upload a file; prints the dataset id to use as calibration.dataset_id."""
    if not path.is_file():
        fail(f"PATH: no such file: {path}")
    with state(ctx).client() as client:
        try:
            record = client.upload_dataset(path, name=name)
        except CurveditAPIError as exc:
            fail_api(exc)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    console.print(f"dataset [bold]{record.get('id')}[/]")
    for key in ("name", "bytes", "size", "fingerprint", "sha256", "records"):
        if key in record:
            console.print(f"  {key}: {escape(str(record[key]))}")


@datasets_app.command("show")
def datasets_show(ctx: typer.Context, dataset_id: str = typer.Argument(...)) -> None:
    """Show an uploaded dataset's metadata."""
    with state(ctx).client() as client:
        try:
            record = client.get_dataset(dataset_id)
        except CurveditAPIError as exc:
            fail_api(exc)
    typer.echo(json.dumps(record, indent=2))


@datasets_app.command("delete")
def datasets_delete(ctx: typer.Context, dataset_id: str = typer.Argument(...)) -> None:
    """Delete an uploaded dataset."""
    with state(ctx).client() as client:
        try:
            client.delete_dataset(dataset_id)
        except CurveditAPIError as exc:
            fail_api(exc)
    console.print(f"deleted {dataset_id}")


@factors_app.command("list")
def factors_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Cached factor entries with their keys and sizes."""
    with state(ctx).client() as client:
        try:
            entries = client.factors()
        except CurveditAPIError as exc:
            fail_api(exc)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        console.print("no cached factor entries")
        return
    columns = ["key", "bytes"]
    for extra in ("module", "kind", "model", "created_at", "last_used_at"):
        if any(extra in e for e in entries):
            columns.append(extra)
    console.print(items_table(entries, columns, title=f"{len(entries)} cached factor entries"))


@factors_app.command("delete")
def factors_delete(ctx: typer.Context, key: str = typer.Argument(..., help="Entry key from `factors list`.")) -> None:
    """Delete one cache entry."""
    with state(ctx).client() as client:
        try:
            client.delete_factor(key)
        except CurveditAPIError as exc:
            fail_api(exc)
    console.print(f"deleted {key}")
