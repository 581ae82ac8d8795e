"""Global CLI state (gateway URL, API key), API-key discovery and the CLI's error exits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from contract.settings import Settings
from service.client import CurveditAPIError, CurveditClient

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_FILE_NAME = "api-key"

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 2


def key_file(settings: Settings | None = None) -> Path:
    """Where ``curvedit up`` writes the API key it generated (``<state_dir>/api-key``)."""
    return (settings or Settings()).state_dir / KEY_FILE_NAME


def discover_api_key(explicit: str | None, settings: Settings | None = None) -> str | None:
    """--api-key / CURVEDIT_API_KEY, else the key file ``curvedit up`` wrote, else None."""
    if explicit:
        return explicit
    env = os.environ.get("CURVEDIT_API_KEY")
    if env:
        return env
    try:
        text = key_file(settings).read_text().strip()
    except OSError:
        return None
    return text or None


@dataclass
class CliState:
    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout: float = 30.0

    def client(self) -> CurveditClient:
        return CurveditClient(self.url, api_key=self.api_key, timeout=self.timeout)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState(api_key=discover_api_key(None))
        ctx.find_root().obj = obj
    return obj


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (2: bad input)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def fail_api(exc: CurveditAPIError) -> NoReturn:
    """Map a gateway error to a CLI exit: 4xx is the caller's input (2), anything else 1."""
    where = f" [field: {exc.field}]" if exc.field else ""
    if exc.status == 0:
        fail(f"{exc.message} - is the stack running? start it with `curvedit up` or pass --url", EXIT_FAILED)
    if exc.status == 401:
        fail(f"{exc.message} (HTTP 401) - pass --api-key or set CURVEDIT_API_KEY", EXIT_USAGE)
    code = EXIT_USAGE if 400 <= exc.status < 500 else EXIT_FAILED
    fail(f"{exc.message}{where} (HTTP {exc.status} {exc.code})", code)
