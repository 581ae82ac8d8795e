"""Job verbs over HTTP: ``submit``, ``status``, ``wait``, ``events``, ``cancel``, ``list``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from service.cli.context import EXIT_CANCELLED, EXIT_FAILED, console, fail, fail_api, state
from service.cli.render import JobProgress, items_table, job_table, print_results
from service.cli.search_render import print_search
from service.cli.specs import build_spec
from service.client import CurveditAPIError, CurveditClient

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def exit_code_for(record: dict[str, Any]) -> int:
    """0 succeeded, 1 failed, 2 cancelled (anything else: 1)."""
    return {"succeeded": 0, "cancelled": EXIT_CANCELLED}.get(str(record.get("status")), EXIT_FAILED)


def follow(client: CurveditClient, job_id: str, poll: float = 0.5, quiet: bool = False) -> dict[str, Any]:
    """Wait for a job with a live progress display; returns the final record."""
    if quiet:
        return client.wait(job_id, poll=poll)
    with JobProgress(console) as display:
        return client.wait(job_id, poll=poll, on_update=display.update)


def report_outcome(record: dict[str, Any], show_results: bool = True) -> int:
    status = record.get("status")
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(str(status), "white")
    console.print(f"job [bold]{record.get('id')}[/] [{colour}]{status}[/]")
    if status == "failed":
        err = record.get("error") or {}
        if isinstance(err, dict):
            console.print(f"  [red]{escape(str(err.get('code', 'error')))}[/]: {escape(str(err.get('message', '')))}")
        print_search(console, record)  # objective_not_met: the trials spent and the closest one
    if status == "succeeded" and show_results:
        print_search(console, record)
        print_results(console, record)
    return exit_code_for(record)


def submit(
    ctx: typer.Context,
    spec: Path | None = typer.Option(None, "--spec", "-s", help="Job spec JSON file (EditJobSpec)."),
    model: str | None = typer.Option(None, help="Model directory under the model root (model.path)."),
    hub_id: str | None = typer.Option(None, "--hub-id", help="Hub id from the local HF cache (model.hub_id)."),
    calibration: str | None = typer.Option(
        None, help="Calibration file under the data root, or an uploaded dataset id ('ds_...')."
    ),
    layers: str | None = typer.Option(None, help="Comma-separated layer indices, e.g. '21,22,23' or '-2,-1'."),
    projections: str | None = typer.Option(None, help="Comma-separated roles: gate, up, down."),
    keep_mass: str | None = typer.Option(None, "--keep-mass", help="rho in (0,1], or a sweep '0.5,0.7,0.9'."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Calibration token budget."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Calibration sequence length."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Calibration batch size."),
    fisher: str | None = typer.Option(None, help="'sampled' (default) or 'empirical'."),
    output: str | None = typer.Option(None, help="Output directory under the output root."),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key", help="Idempotency-Key header."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow the job with a progress bar until it ends."),
    as_json: bool = typer.Option(False, "--json", help="Print the job record as JSON."),
) -> None:
    """Submit an edit job (a --spec file, flags, or both: flags override the file)."""
    body, _ = build_spec(
        spec,
        model=model,
        hub_id=hub_id,
        calibration=calibration,
        layers=layers,
        projections=projections,
        keep_mass=keep_mass,
        max_tokens=max_tokens,
        seq_len=seq_len,
        batch_size=batch_size,
        fisher=fisher,
        output=output,
    )
    with state(ctx).client() as client:
        try:
            record = client.submit(body, idempotency_key=idempotency_key)
            if as_json and not wait:
                typer.echo(json.dumps(record, indent=2))
                return
            console.print(f"submitted job [bold]{record.get('id')}[/] ({record.get('status')})")
            if not wait:
                return
            final = follow(client, str(record["id"]))
        except CurveditAPIError as exc:
            fail_api(exc)
    if as_json:
        typer.echo(json.dumps(final, indent=2))
        raise typer.Exit(exit_code_for(final))
    raise typer.Exit(report_outcome(final))


def status(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="Job id."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw job record."),
) -> None:
    """Show one job: status, stage, progress, cache hits, error, artifacts and metrics."""
    with state(ctx).client() as client:
        try:
            record = client.get(job_id)
        except CurveditAPIError as exc:
            fail_api(exc)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    console.print(job_table(record))
    if record.get("status") == "succeeded":
        print_results(console, record)


def wait(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="Job id."),
    poll: float = typer.Option(0.5, help="Seconds between polls.", min=0.05),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Follow a job with a progress bar. Exit code: 0 succeeded, 1 failed, 2 cancelled."""
    with state(ctx).client() as client:
        try:
            final = follow(client, job_id, poll=poll, quiet=quiet)
        except CurveditAPIError as exc:
            fail_api(exc)
    raise typer.Exit(report_outcome(final))


def _event_line(event: dict[str, Any]) -> str:
    level = str(event.get("level", "info"))
    colour = {"error": "red", "warning": "yellow", "debug": "dim"}.get(level, "cyan")
    ts = str(event.get("time") or "")
    ts = ts[11:23] if len(ts) >= 23 and ts[10] == "T" else ts  # ISO -> HH:MM:SS.mmm
    stage = f"[{event['stage']}] " if event.get("stage") else ""
    data = {k: v for k, v in (event.get("data") or {}).items() if k != "kind"}
    extra = f"  {json.dumps(data)[:160]}" if data else ""
    text = escape(f"{stage}{event.get('message', '')}{extra}")
    return f"{escape(ts)} [{colour}]{escape(f'{level:<7}')}[/] {text}"


def events(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="Job id."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Stream new events (SSE) until the job ends."),
    after: int | None = typer.Option(None, help="Only events after this sequence number.", min=0),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List a job's event log, or follow it live with --follow (exit code from the outcome)."""

    def show(event: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(event))
        else:
            console.print(_event_line(event), highlight=False, soft_wrap=True)

    with state(ctx).client() as client:
        try:
            if not follow_:
                for event in client.events(job_id, after=after):
                    show(event)
                return
            for message in client.stream_events(job_id, after=after):
                data = message.get("data")
                kind = message.get("event")
                if kind == "log" and isinstance(data, dict):
                    show(data)
                elif kind == "end":
                    final = data if isinstance(data, dict) else {}
                    if not as_json:
                        console.print(f"job {job_id} {final.get('status', 'ended')}")
                    raise typer.Exit(exit_code_for(final) if final else 0)
        except CurveditAPIError as exc:
            fail_api(exc)


def cancel(ctx: typer.Context, job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Request cancellation; a running job stops at its next batch boundary."""
    with state(ctx).client() as client:
        try:
            record = client.cancel(job_id)
        except CurveditAPIError as exc:
            fail_api(exc)
    status = record.get("status", "?")
    note = "cancel requested; it stops at the next batch boundary" if status in ("queued", "running") else status
    console.print(f"job [bold]{record.get('id', job_id)}[/]: {note} (status: {status})")


def list_jobs(
    ctx: typer.Context,
    status_: str | None = typer.Option(None, "--status", help=f"Only jobs in this status: {', '.join(STATUSES)}."),
    limit: int = typer.Option(20, help="Page size.", min=1, max=1000),
    cursor: str | None = typer.Option(None, help="Cursor from a previous page."),
    all_pages: bool = typer.Option(False, "--all", help="Follow the cursor through every page."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw page(s)."),
) -> None:
    """List jobs, newest first, with cursor pagination."""
    if status_ is not None and status_ not in STATUSES:
        fail(f"--status: must be one of {', '.join(STATUSES)}, got {status_!r}")
    with state(ctx).client() as client:
        try:
            if all_pages:
                items = list(client.iter_jobs(status=status_, page_size=limit))
                next_cursor = None
            else:
                page = client.list(status=status_, cursor=cursor, limit=limit)
                from service.client import page_items

                items = page_items(page)
                next_cursor = page.get("next_cursor") if isinstance(page, dict) else None
        except CurveditAPIError as exc:
            fail_api(exc)
    if as_json:
        typer.echo(json.dumps({"items": items, "next_cursor": next_cursor}, indent=2))
        return
    rows = []
    for item in items:
        row = dict(item)
        spec = item.get("spec") if isinstance(item.get("spec"), dict) else {}
        model = spec.get("model", {}) if isinstance(spec, dict) else {}
        row["model"] = model.get("path") or model.get("hub_id") or ""
        rows.append(row)
    console.print(items_table(rows, ["id", "status", "stage", "model", "created_at"]))
    if next_cursor:
        console.print(f"[dim]more: --cursor {next_cursor}[/]")
