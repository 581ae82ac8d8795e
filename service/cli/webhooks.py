"""``curvedit webhooks ...``: register signed webhook endpoints, list them, read a delivery log and
redeliver a delivery (the same verbs as ``CurveditClient``)."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from service.cli.context import console, fail_api, state
from service.cli.render import items_table
from service.client import CurveditAPIError

webhooks_app = typer.Typer(
    help="Signed webhooks (Standard Webhooks) for job events, instead of polling.", no_args_is_help=True
)


@webhooks_app.command("add")
def webhooks_add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="http(s) URL that receives the signed POSTs."),
    event: list[str] = typer.Option(
        [],
        "--event",
        "-e",
        help="Event to receive (repeatable): succeeded, failed, cancelled, stage_changed, trial. "
        "Default: the three terminal ones.",
    ),
    description: str | None = typer.Option(None, help="A note for yourself."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Register an endpoint for every job of this API key; prints the signing secret ONCE."""
    with state(ctx).client() as client:
        try:
            hook = client.add_webhook(url, events=event or None, description=description)
        except CurveditAPIError as exc:
            fail_api(exc)
    if as_json:
        typer.echo(json.dumps(hook, indent=2))
        return
    console.print(f"webhook [bold]{hook['id']}[/] -> {escape(hook['url'])}  events: {', '.join(hook['events'])}")
    console.print(f"  secret: [bold]{hook['secret']}[/]")
    console.print("  (shown only now: store it where your receiver verifies signatures)")


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Your webhook endpoints, newest first (without secrets)."""
    with state(ctx).client() as client:
        try:
            page = client.list_webhooks(limit=100)
        except CurveditAPIError as exc:
            fail_api(exc)
    items = page["data"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        console.print("no webhooks; add one with `curvedit webhooks add URL`")
        return
    console.print(items_table(items, ["id", "url", "events", "job_id", "created_at"], title=f"{len(items)} webhooks"))


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    ctx: typer.Context,
    webhook_id: str = typer.Argument(..., help="Webhook id from `webhooks list`."),
    limit: int = typer.Option(20, min=1, max=100),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The endpoint's delivery log, newest first: status, attempts, last answer."""
    with state(ctx).client() as client:
        try:
            page = client.webhook_deliveries(webhook_id, limit=limit)
        except CurveditAPIError as exc:
            fail_api(exc)
    items = page["data"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        console.print(f"no deliveries for {webhook_id} yet")
        return
    rows = []
    for d in items:
        last = d["attempts"][-1] if d["attempts"] else {}
        rows.append(
            {
                "id": d["id"],
                "type": d["type"],
                "job_id": d["job_id"],
                "status": d["status"],
                "attempts": str(len(d["attempts"])),
                "last": last.get("error") or (str(last["status_code"]) if last.get("status_code") else ""),
                "updated_at": d["updated_at"],
            }
        )
    columns = ["id", "type", "job_id", "status", "attempts", "last", "updated_at"]
    console.print(items_table(rows, columns, title=f"{len(items)} deliveries"))


@webhooks_app.command("redeliver")
def webhooks_redeliver(
    ctx: typer.Context,
    webhook_id: str = typer.Argument(...),
    delivery_id: str = typer.Argument(..., help="Delivery id (msg_...) from `webhooks deliveries`."),
) -> None:
    """Send a finished delivery again: same webhook-id and body, fresh signature."""
    with state(ctx).client() as client:
        try:
            d = client.redeliver(webhook_id, delivery_id)
        except CurveditAPIError as exc:
            fail_api(exc)
    console.print(f"redelivery of {d['id']} queued ({d['redeliveries']} so far)")


@webhooks_app.command("delete")
def webhooks_delete(ctx: typer.Context, webhook_id: str = typer.Argument(...)) -> None:
    """Delete an endpoint and its delivery log."""
    with state(ctx).client() as client:
        try:
            client.delete_webhook(webhook_id)
        except CurveditAPIError as exc:
            fail_api(exc)
    console.print(f"deleted {webhook_id}")
