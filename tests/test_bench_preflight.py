"""bench/bench_preflight.py's fixed-memory probe against ``RUNTIME_BYTES``, in a fresh process.

``RUNTIME_BYTES`` is a measured constant (interpreter, torch, transformers and the model code
imported, a first tiny model and collection): when torch or transformers change, this says so.
The held-out validation of the whole model is the bench itself (minutes, not a test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.bench_preflight import RUNTIME_PROBE, estimate_for, run_child
from contract.preflight import RUNTIME_BYTES

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/status").exists(), reason="reads /proc/self/status"
)


def test_the_fixed_memory_of_a_worker_process_is_runtime_bytes() -> None:
    got = run_child(RUNTIME_PROBE)
    own_terms = estimate_for(RUNTIME_PROBE).peak_bytes - RUNTIME_BYTES  # the probe's tiny model and job
    assert 0 < own_terms < 4 * 2**20
    fixed = got["peak"] - own_terms
    assert got["imports"] <= got["model"] <= got["collection"] <= got["peak"]
    assert abs(fixed / RUNTIME_BYTES - 1) < 0.15, (fixed / 2**20, RUNTIME_BYTES / 2**20)
