"""Layering: the CLI and the client never import torch, ``curvedit edit`` is a plugin of the
worker side, and the import-linter contracts in pyproject.toml hold.

(The gateway's own no-torch check, with real requests, is in ``tests/test_gateway_misc.py``.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "workers.pipeline", "workers.curvature", "workers.evaluation")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_and_client_do_not_import_torch() -> None:
    out = _run(
        f"""
        import sys
        from typer.testing import CliRunner
        from service.cli.app import app
        from service.client import CurveditClient
        runner = CliRunner()
        for args in (["--help"], ["edit", "--help"], ["list", "--help"], ["submit", "--help"]):
            r = runner.invoke(app, args)
            assert r.exit_code == 0, (args, r.output)
        CurveditClient("http://127.0.0.1:9", api_key="k", timeout=0.1)
        bad = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))
        assert not bad, bad
        assert "workers.cli_edit" in sys.modules  # the edit plugin was loaded (lazily importing torch)
        print("ok")
        """
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_edit_without_the_worker_extra_says_how_to_install_it() -> None:
    """With torch/transformers missing, the plugin does not register and ``curvedit edit``
    answers with one line naming the extra, exit 2 — whatever flags it was given."""
    out = _run(
        """
        import importlib.abc, sys

        class NoWorkerExtra(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "safetensors"):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoWorkerExtra())
        from typer.testing import CliRunner
        from service.cli.app import app
        r = CliRunner().invoke(app, ["edit", "--model", "tiny", "--keep-mass", "0.9"])
        print("EXIT", r.exit_code)
        print("OUTPUT", r.output)
        """
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "EXIT 2" in out.stdout, out.stdout
    message = out.stdout.split("OUTPUT ", 1)[1].strip()
    assert message.count("\n") == 0 and "pip install 'curvedit[worker]'" in message, message


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    out = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout, out.stdout[-2000:]
