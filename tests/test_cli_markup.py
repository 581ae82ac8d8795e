"""Regression: server text that looks like rich markup (a user's path '[/x]', a field tag
'[field: cursor]') used to crash the CLI with a MarkupError traceback or vanish from the message;
the unreachable-gateway error used to span two lines. Errors are one line, printed verbatim."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from contract.settings import Settings
from service.cli.render import items_table, job_table
from tests.live_gateway import KEYS, gateway_settings, live_gateway
from tests.test_cli_jobs import run


@pytest.fixture
def gw_env(tmp_path: Path, redis_url: str, tiny_llama_dir: Path) -> Iterator[dict[str, str]]:
    s: Settings = gateway_settings(tmp_path / "gw", redis_url)
    shutil.copytree(tiny_llama_dir, s.model_root / "tiny")
    with live_gateway(s) as url:
        yield {"CURVEDIT_URL": url, "CURVEDIT_API_KEY": KEYS["alice"]}


def test_gateway_message_with_markup_is_printed_verbatim(gw_env: dict[str, str]) -> None:
    code, out = run("submit", "--model", "[/x]", "--calibration", "c.txt", env=gw_env)
    assert code == 2, out
    assert "Traceback" not in out and "MarkupError" not in out
    assert "'[/x]'" in out and "[field: model.path]" in out
    code, out = run("submit", "--model", "[bold]m", "--calibration", "c.txt", env=gw_env)
    assert code == 2 and "'[bold]m'" in out


def test_field_tag_is_not_swallowed(gw_env: dict[str, str]) -> None:
    code, out = run("list", "--cursor", "bogus", env=gw_env)
    assert code == 2 and "[field: cursor]" in out


def test_unreachable_gateway_is_one_line() -> None:
    code, out = run("--url", "http://127.0.0.1:9", "list")
    assert code == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach" in lines[0] and "curvedit up" in lines[0], out


def test_tables_show_markup_like_values_verbatim() -> None:
    console = Console(width=200, record=True)
    console.print(
        job_table(
            {
                "id": "job_1",
                "status": "failed",
                "error": {"code": "x", "message": "bad [/oops] and [bold]"},
            }
        )
    )
    console.print(items_table([{"id": "ds_1", "name": "[/weird]"}], ["id", "name"]))
    text = console.export_text()
    assert "bad [/oops] and [bold]" in text and "[/weird]" in text


def test_ids_cannot_reach_other_endpoints(gw_env: dict[str, str]) -> None:
    """Regression: ids were pasted into URLs unquoted, so `curvedit status ../../healthz` printed
    the health check as a job (exit 0) and `datasets show ../edit-jobs` dumped the job list."""
    code, out = run("status", "../../healthz", env=gw_env)
    assert code == 2 and "HTTP 404" in out, out
    code, out = run("datasets", "show", "../edit-jobs", env=gw_env)
    assert code == 2 and "HTTP 404" in out, out
    code, out = run("cancel", "..", env=gw_env)
    assert code == 2 and "HTTP 404" in out, out
    code, out = run("status", "x?status=running", env=gw_env)
    assert code == 2 and "HTTP 404" in out and "x?status=running" in out, out
    code, out = run("status", "", env=gw_env)
    assert code == 2 and "must not be empty" in out, out


def test_edit_with_an_unusable_cache_dir_is_a_one_line_error(tmp_path: Path) -> None:
    """Regression: `curvedit edit --cache /proc/nope` died with a FileNotFoundError traceback."""
    spec = tmp_path / "spec.json"
    spec.write_text('{"model": {"path": "m"}, "calibration": {"texts": ["a b c"]}}')
    code, out = run("edit", "--spec", str(spec), "--cache", "/proc/nope/cache")
    assert code == 2, out
    assert "Traceback" not in out and "--cache: cannot open the factor cache '/proc/nope/cache'" in out, out
