"""CLI plugins: commands other parts of the distribution add to ``curvedit``.

Each entry point in the ``curvedit.cli`` group (pyproject.toml) names a ``register(app) -> bool``
function that adds its commands when what they need is installed. ``curvedit edit`` is one: it
lives with the workers (``workers/cli_edit.py``) because it runs the pipeline in-process and
needs torch. When no plugin provides ``edit`` (a gateway-only install without the ``worker``
extra), a stand-in says in one line how to get it and exits 2.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from service.cli.context import EXIT_USAGE, err_console

GROUP = "curvedit.cli"
WORKER_HINT = "curvedit edit needs the worker extra (torch, transformers): pip install 'curvedit[worker]'"


def load_plugins(app: typer.Typer) -> list[str]:
    """Call every ``curvedit.cli`` entry point's ``register(app)``; names of those that registered."""
    loaded = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError:  # the plugin's own dependencies are missing
            continue
        if register(app):
            loaded.append(ep.name)
    return loaded


def edit_unavailable(ctx: typer.Context) -> None:
    """Run an edit in this process (needs the worker extra: pip install 'curvedit[worker]')."""
    err_console.print(WORKER_HINT, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def register_fallbacks(app: typer.Typer, loaded: list[str]) -> None:
    """Stand-ins for plugin commands that are not installed."""
    if "edit" not in loaded:
        app.command(
            "edit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
        )(edit_unavailable)
