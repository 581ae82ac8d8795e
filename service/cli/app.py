"""The ``curvedit`` Typer application: global options and the command table. Entry point ``main``."""

from __future__ import annotations

import typer

from service.cli import artifacts, jobs, up
from service.cli import demo as demo_cmd
from service.cli.context import DEFAULT_URL, CliState, discover_api_key
from service.cli.plugins import load_plugins, register_fallbacks
from service.cli.resources import datasets_app, factors_app
from service.cli.webhooks import webhooks_app

app = typer.Typer(
    name="curvedit",
    help="Remove memorized data from language models by editing weights along the loss-curvature spectrum.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    url: str = typer.Option(DEFAULT_URL, "--url", envvar="CURVEDIT_URL", help="Gateway base URL."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="CURVEDIT_API_KEY",
        help="API key (default: the key `curvedit up` saved in <state_dir>/api-key).",
        show_default=False,
    ),
    timeout: float = typer.Option(30.0, "--timeout", help="HTTP timeout in seconds.", min=0.1),
) -> None:
    ctx.obj = CliState(url=url.rstrip("/"), api_key=discover_api_key(api_key), timeout=timeout)


app.command("up")(up.up)
app.command("demo")(demo_cmd.demo)
app.command("submit")(jobs.submit)
app.command("status")(jobs.status)
app.command("wait")(jobs.wait)
app.command("events")(jobs.events)
app.command("cancel")(jobs.cancel)
app.command("list")(jobs.list_jobs)
app.command("report")(artifacts.report)
app.command("download")(artifacts.download)
app.add_typer(datasets_app, name="datasets")
app.add_typer(factors_app, name="factors")
app.add_typer(webhooks_app, name="webhooks")
register_fallbacks(app, load_plugins(app))  # `edit` (workers/cli_edit.py) when the worker extra is installed


def main() -> None:
    app()


if __name__ == "__main__":
    main()
