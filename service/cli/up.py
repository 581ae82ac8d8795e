"""``curvedit up``: the whole stack in the foreground, logs on the console, Ctrl-C / SIGTERM to stop."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from types import FrameType

import typer
from rich.markup import escape

from contract.settings import Settings
from service.cli.context import EXIT_FAILED, console, fail
from service.cli.stack import Stack, StackError


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def up(
    host: str = typer.Option("127.0.0.1", help="Gateway bind address (0.0.0.0 to listen on every interface)."),
    port: int = typer.Option(8000, help="Gateway port.", min=1, max=65535),
    workers: int = typer.Option(1, "--workers", "-w", help="Number of worker processes.", min=1, max=64),
    worker_grace: float = typer.Option(
        60.0, "--worker-grace", help="Seconds a stopping worker may spend finishing its batch.", min=0
    ),
    ready_timeout: float = typer.Option(180.0, "--ready-timeout", help="Seconds to wait for /readyz.", min=1),
) -> None:
    """Run Redis (embedded unless CURVEDIT_REDIS_URL is set), the gateway and N workers until Ctrl-C."""
    for stream in (sys.stdout, sys.stderr):  # interleave sensibly with the children's logs, even in a file
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    settings = Settings()
    stack = Stack(
        settings,
        host=host,
        port=port,
        workers=workers,
        worker_grace_s=worker_grace,
        say=lambda m: console.print(f"[bold cyan]curvedit up[/] {m}", highlight=False),
    )
    # SIGINT explicitly too: a process started in the background of a script inherits SIGINT ignored.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        try:
            stack.start(ready_timeout=ready_timeout)
        except StackError as exc:
            fail(str(exc), EXIT_FAILED)
        console.rule("[bold green]curvedit is up")
        console.print(f"  gateway   {stack.url}   (OpenAPI: {stack.url}/docs)")
        if stack.api_key:
            console.print(f"  API key   {stack.api_key}   (saved in {settings.state_dir / 'api-key'})")
        console.print(f"  redis     {stack.redis_url}")
        console.print(f"  workers   {workers}   device: {settings.device}")
        console.print(f"  webhooks  delivery worker on queue {settings.webhook_queue_name}")
        console.print("  try:      curvedit demo        (Ctrl-C here stops everything)")
        console.rule()
        while True:
            fatal = stack.supervise()
            if fatal:
                console.print(f"[bold red]curvedit up:[/] {escape(fatal)}; stopping the stack", highlight=False)
                stack.stop()
                raise typer.Exit(EXIT_FAILED)
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("\n[bold cyan]curvedit up[/] shutting down (Ctrl-C again to force)")
    finally:
        try:
            stack.stop()
        except KeyboardInterrupt:  # second Ctrl-C: stop() has already killed what was left
            stack.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    console.print("[bold cyan]curvedit up[/] stopped")
