"""``curvedit demo``: submit ``examples/demo-edit.json`` over HTTP, follow it with a live progress bar and
print the before/after table. Uses the stack answering at --url, or starts one (logs to files under
the state directory) and stops it afterwards."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

import typer
from rich.markup import escape

from contract.settings import Settings
from service.cli.context import EXIT_FAILED, console, fail, fail_api, state
from service.cli.jobs import follow, report_outcome
from service.cli.specs import read_spec_file, validate_spec
from service.cli.stack import Stack, StackError, free_port, port_in_use
from service.client import CurveditAPIError, CurveditClient

DEFAULT_SPEC = Path("examples/demo-edit.json")
REPO_ROOT = Path(__file__).resolve().parents[2]


def locate_spec(spec: Path) -> tuple[Path, Path | None]:
    """(spec file, repository root if it was found there rather than relative to the cwd)."""
    if spec.exists():
        return spec, None
    if spec == DEFAULT_SPEC and (REPO_ROOT / DEFAULT_SPEC).exists():
        return REPO_ROOT / DEFAULT_SPEC, REPO_ROOT
    fail(f"--spec: file not found: {spec}")


def demo(
    ctx: typer.Context,
    spec: Path = typer.Option(DEFAULT_SPEC, "--spec", "-s", help="Job spec to submit."),
    workers: int = typer.Option(1, "--workers", "-w", help="Workers, when the demo starts its own stack.", min=1),
    ready_timeout: float = typer.Option(180.0, "--ready-timeout", min=1),
) -> None:
    """Run the demo edit end to end and print the before/after table."""
    t0 = time.monotonic()
    st = state(ctx)
    spec_path, repo_root = locate_spec(spec)
    body = read_spec_file(spec_path)
    validate_spec(body, f"--spec {spec_path}")

    stack: Stack | None = None
    client = CurveditClient(st.url, api_key=st.api_key)
    if client.is_up():
        console.print(f"using the stack at {st.url}")
        try:
            client.ready()
        except CurveditAPIError as exc:
            console.print(f"[yellow]warning:[/] {escape(exc.message)} - the job waits in the queue until a worker runs")
    else:
        client.close()
        settings = Settings()
        parsed = urlparse(st.url)
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or 8000
        if port_in_use(host, port):
            port = free_port(host)
        extra_env: dict[str, str] = {}
        if repo_root is not None:  # the demo spec's paths are relative to the repository's examples/
            for var in ("CURVEDIT_MODEL_ROOT", "CURVEDIT_DATA_ROOT"):
                if var not in os.environ:
                    extra_env[var] = str(repo_root / "examples")
        log_dir = settings.state_dir / "logs"
        stack = Stack(
            settings,
            host=host,
            port=port,
            workers=workers,
            log_dir=log_dir,
            extra_env=extra_env,
            say=lambda m: console.print(f"[dim]{m}[/]", highlight=False),
        )
        try:
            with console.status(f"starting redis, gateway and {workers} worker(s) (logs: {log_dir}) ..."):
                stack.start(ready_timeout=ready_timeout)
        except StackError as exc:
            fail(f"could not start the stack: {exc}", EXIT_FAILED)
        console.print(f"stack up at {stack.url} in {time.monotonic() - t0:.1f} s")
        client = CurveditClient(stack.url, api_key=stack.api_key or st.api_key)
    code = EXIT_FAILED
    try:
        with client:
            try:
                record = client.submit(body)
                console.print(f"submitted [bold]{spec_path}[/] as job [bold]{record.get('id')}[/]")
                final = follow(client, str(record["id"]))
            except CurveditAPIError as exc:
                fail_api(exc)
        code = report_outcome(final)
    finally:
        if stack is not None:
            with console.status("stopping the stack ..."):
                stack.stop()
        console.print(f"demo wall time: {time.monotonic() - t0:.1f} s")
    raise typer.Exit(code)
