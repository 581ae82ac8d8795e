"""``curvedit demo`` as a subprocess with no stack running: it starts one (embedded Redis, gateway,
worker), submits the spec over HTTP, prints the chosen edit of the goal-directed search, the trial
count, the before/after table and where report.md and the frontier plot are, and stops what it
started. A small spec on the tiny model keeps this quick; the real demo spec is timed by hand (README)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.cli.stack import free_port, port_in_use
from tests.live_gateway import stack_env
from workers.evaluation.recitation import greedy_generate

pytestmark = pytest.mark.slow


def own_recitations(model_dir: Path) -> list[dict[str, list[int]]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tok(f"the lazy dog sleeps, day {i}", add_special_tokens=False).input_ids[:6] for i in range(8)]
    return [{"prefix": p, "suffix": s} for p, s in zip(prompts, greedy_generate(model, prompts, 4), strict=True)]


def test_demo_starts_a_stack_runs_the_spec_and_stops_it(tmp_path: Path, tiny_llama_dir: Path) -> None:
    env = stack_env(tmp_path)
    shutil.copytree(tiny_llama_dir, tmp_path / "models" / "tiny")
    (tmp_path / "data" / "calib.txt").write_text("\n\n".join(f"the lazy dog sleeps, day {i}" for i in range(30)))
    (tmp_path / "data" / "heldout.txt").write_text("\n\n".join(f"a quick fox runs, night {i}" for i in range(20)))
    spec = {
        "model": {"path": "tiny"},
        "calibration": {"path": "calib.txt", "max_tokens": 256, "seq_len": 16, "batch_size": 4},
        # goal-directed like the real demo spec: the untrained model's own greedy continuations are
        # what it recites; the search chooses rho (no edit.layers / keep_mass)
        "objective": {
            "forget": {"pairs": own_recitations(tiny_llama_dir), "max_strict_rate": 0.5, "prefix_tokens": 6},
            "retain": {
                "perplexity": {"path": "heldout.txt", "seq_len": 16, "max_tokens": 128},
                "max_perplexity_increase": 100.0,
            },
            "search": {"layer_sets": [[0], [0, 1]], "keep_mass_range": [0.05, 0.9], "max_trials": 8},
        },
        "evaluation": {
            "recitation": {"pairs": [{"prefix": "the lazy dog", "suffix": " sleeps"}], "suffix_tokens": 4},
            "perplexity": {"path": "calib.txt", "seq_len": 16, "max_tokens": 128},
            "agreement": {"k": 5},
        },
        "output": {"path": "demo-out"},
    }
    (tmp_path / "demo.json").write_text(json.dumps(spec))
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli.app", "--url", f"http://127.0.0.1:{port}", "demo", "--spec", "demo.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for text in ("stack up at", "succeeded", "recitation (strict)", "perplexity", "agreement nDCG@5", "demo wall time"):
        assert text in out, out[-4000:]
    for text in ("goal-directed search:", "objective met", "chosen edit: layers", "report.md", "frontier plot:"):
        assert text in " ".join(out.split()), out[-4000:]
    # the stack's generated key belongs to owner "local": outputs go to <output_root>/local/
    assert str(tmp_path / "out" / "local" / "demo-out") in out
    assert (tmp_path / "out" / "local" / "demo-out" / "manifest.json").is_file()
    assert not port_in_use("127.0.0.1", port), "the demo's gateway was stopped"
    assert (tmp_path / "state" / "logs" / "gateway.log").is_file()
