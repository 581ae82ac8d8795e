"""CLI verbs through typer's CliRunner: spec errors exit 2 naming the field, and the job verbs
against a real gateway (uvicorn in a thread) on a real Redis database."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract.settings import Settings
from service.cli.app import app
from tests.live_gateway import KEYS, gateway_settings, job_body, live_gateway

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.output


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(job_body()))
    return path


# --- input errors: exit 2, the option or field named, no traceback -------------------------------
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"model": {"path": "m"}, "calibration": {"path": "c.txt"}, "edit": {"keep_mass": 1.5}}', "edit.keep_mass"),
        ('{"model": {"path": "m"}, "calibration": {"path": "c.txt"}, "edti": {}}', "field 'edti'"),
        ('{"model": {"path": "m", "hub_id": "x/y"}, "calibration": {"path": "c.txt"}}', "field 'model'"),
        ('{"model": {"path": "m"},', "not valid JSON: Expecting"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_bad_spec_file_exits_2_naming_the_field(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out = run("submit", "--spec", str(path))
    assert code == 2, out
    assert expected in out and "Traceback" not in out


def test_missing_spec_file_and_bad_flags(tmp_path: Path) -> None:
    code, out = run("submit", "--spec", str(tmp_path / "nope.json"))
    assert code == 2 and "--spec: file not found" in out
    code, out = run("submit", "--model", "m", "--calibration", "c.txt", "--layers", "two")
    assert code == 2 and "--layers" in out
    code, out = run("submit", "--model", "m", "--calibration", "c.txt", "--keep-mass", "0.5,2")
    assert code == 2 and "edit.keep_mass" in out
    code, out = run("submit", "--layers", "1")
    assert code == 2 and "--spec" in out
    code, out = run("edit", "--spec", str(tmp_path / "nope.json"))
    assert code == 2 and "--spec: file not found" in out


def test_unreachable_gateway_exits_1(spec_file: Path) -> None:
    code, out = run("--url", "http://127.0.0.1:9", "submit", "--spec", str(spec_file))
    assert code == 1 and "cannot reach" in out and "curvedit up" in out


# --- against a live gateway ---------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path, redis_url: str, tiny_llama_dir: Path) -> Settings:
    s = gateway_settings(tmp_path / "gw", redis_url)
    shutil.copytree(tiny_llama_dir, s.model_root / "tiny")
    return s


@pytest.fixture
def gw_env(settings: Settings) -> Iterator[dict[str, str]]:
    with live_gateway(settings) as url:
        yield {"CURVEDIT_URL": url, "CURVEDIT_API_KEY": KEYS["alice"]}


def test_submit_status_list_cancel_wait(gw_env: dict[str, str], spec_file: Path) -> None:
    code, out = run("submit", "--spec", str(spec_file), "--keep-mass", "0.5,0.7", env=gw_env)
    assert code == 0, out
    job_id = re.search(r"job_[0-9a-f]+", out).group(0)  # type: ignore[union-attr]

    code, out = run("status", job_id, "--json", env=gw_env)
    assert code == 0 and json.loads(out)["spec"]["edit"]["keep_mass"] == [0.5, 0.7]
    code, out = run("status", job_id, env=gw_env)
    assert code == 0 and "queued" in out

    code, out = run("list", env=gw_env)
    assert code == 0 and job_id in out and "tiny" in out
    code, out = run("list", "--status", "bogus", env=gw_env)
    assert code == 2 and "--status" in out

    code, out = run("cancel", job_id, env=gw_env)
    assert code == 0 and "cancelled" in out
    code, out = run("wait", job_id, "--quiet", env=gw_env)
    assert code == 2 and "cancelled" in out
    code, out = run("events", job_id, env=gw_env)
    assert code == 0 and "job queued" in out and "cancelled" in out
    code, out = run("events", job_id, "--follow", "--json", env=gw_env)
    assert code == 2 and '"message": "job queued"' in out


def test_gateway_errors_map_to_exit_codes(gw_env: dict[str, str], tmp_path: Path) -> None:
    code, out = run("status", "job_00000000000000000000000000000000", env=gw_env)
    assert code == 2 and "HTTP 404" in out
    code, out = run("list", env={**gw_env, "CURVEDIT_API_KEY": "wrong"})
    assert code == 2 and "HTTP 401" in out and "--api-key" in out
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(job_body(layers=[42])))
    code, out = run("submit", "--spec", str(spec), env=gw_env)
    assert code == 2 and "layer" in out and "Traceback" not in out


def test_datasets_and_factors(gw_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "corpus.txt"
    data.write_text("one\n\ntwo\n")
    code, out = run("datasets", "upload", str(data), "--json", env=gw_env)
    assert code == 0, out
    ds_id = json.loads(out)["id"]
    code, out = run("datasets", "show", ds_id, env=gw_env)
    assert code == 0 and "corpus.txt" in out
    code, out = run("datasets", "delete", ds_id, env=gw_env)
    assert code == 0
    code, out = run("datasets", "show", ds_id, env=gw_env)
    assert code == 2 and "404" in out
    code, out = run("datasets", "upload", str(tmp_path / "missing.txt"), env=gw_env)
    assert code == 2 and "no such file" in out
    code, out = run("factors", "list", env=gw_env)
    assert code == 0 and "no cached factor entries" in out
