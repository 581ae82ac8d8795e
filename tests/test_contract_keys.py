"""``contract/keys.py`` owns every Redis key name: no other module spells a ``curvedit:`` key.

Regression: the factor cache, the reaper, the lease and the gateway's factor listing built
their own ``curvedit:...`` f-strings, so the layout lived in five places.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from contract import keys

ROOT = Path(__file__).resolve().parents[1]


def _key_literals(path: Path) -> list[int]:
    """Line numbers of string literals / f-strings that start with ``curvedit:``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and str(first.value).startswith("curvedit:"):
                lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("curvedit:"):
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize("package", ["contract", "service", "workers"])
def test_no_module_but_keys_builds_a_key(package: str) -> None:
    offenders = {
        str(p.relative_to(ROOT)): found
        for p in sorted((ROOT / package).rglob("*.py"))
        if p != ROOT / "contract" / "keys.py" and (found := _key_literals(p))
    }
    assert not offenders, f"Redis key names built outside contract/keys.py: {offenders}"


def test_the_scan_sees_key_literals(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('A = "curvedit:x"\nB = f"curvedit:y:{A}"\nC = "not a key: curvedit:z"\n')
    assert _key_literals(probe) == [1, 2]


def test_key_names_share_the_prefix() -> None:
    assert keys.worker_lease("j").startswith(keys.PREFIX + ":")
    assert keys.worker_redeliveries("j") != keys.worker_lease("j")
    assert keys.factor_tmp_chunk("k", "n", 0).startswith(keys.PREFIX + ":factors:tmp:k:")
