"""A goal-directed job is cancellable between trials: the cancel flag raised after the third trial
event stops the search before a fourth evaluation, the weights are restored, and nothing is written.
Also: the forget set can come from discovery (token ids, recited strictly before the edit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from contract.settings import Settings
from contract.spec import EditJobSpec, ForgetObjective
from tests.tiny_models import save_tiny
from workers.evaluation import evaluate_recitation
from workers.evaluation.recitation import greedy_generate
from workers.pipeline.reporting import JobCancelled, NullReporter
from workers.pipeline.run import run_pipeline
from workers.pipeline.search_stage import discover_forget_pairs

TEXTS = [f"note {i}: the quick brown fox jumps over the lazy dog, {i * 3} times" for i in range(60)]


class CancelAfter(NullReporter):
    def __init__(self, trials: int) -> None:
        super().__init__()
        self.trials = 0
        self.limit = trials

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:  # type: ignore[override]
        if (data or {}).get("kind") == "trial":
            self.trials += 1

    def cancelled(self) -> bool:
        return self.trials >= self.limit


def test_cancel_between_trials_stops_the_search_and_writes_nothing(tmp_path: Path) -> None:
    model_dir = save_tiny(tmp_path / "models" / "tiny", "llama")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tok(t, add_special_tokens=False).input_ids[:6] for t in TEXTS[:6]]
    pairs = [{"prefix": p, "suffix": s} for p, s in zip(prompts, greedy_generate(model, prompts, 4), strict=True)]
    spec = EditJobSpec.model_validate(
        {
            "model": {"path": "tiny", "dtype": "float32"},
            "calibration": {"texts": TEXTS, "max_tokens": 600, "seq_len": 24},
            "objective": {
                "forget": {"pairs": pairs, "max_strict_rate": 1.0, "prefix_tokens": 6, "suffix_tokens": 4},
                "retain": {"perplexity": {"texts": TEXTS[40:], "seq_len": 24}, "max_perplexity_increase": 1e-4},
                "search": {"layer_sets": [[0], [1], [2, 3]], "max_trials": 20},
            },
            "output": {"path": "cancelled"},
        }
    )
    settings = Settings(
        model_root=tmp_path / "models",
        data_root=tmp_path,
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "ds",
        device="cpu",
    )
    reporter = CancelAfter(3)
    with pytest.raises(JobCancelled, match="search"):
        run_pipeline(spec, settings=settings, job_id="c", reporter=reporter, cache=None)
    assert reporter.trials == 3
    assert not (tmp_path / "out" / "cancelled").exists()


@pytest.mark.slow
def test_discovered_windows_become_a_forget_set_of_token_ids() -> None:
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo"
    model = AutoModelForCausalLM.from_pretrained(demo, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(demo)
    records = [json.loads(line) for line in (demo / "memorized.jsonl").read_text().splitlines() if line.strip()]
    docs = [r["prefix"] + r["suffix"] for r in records[:6]]
    forget = ForgetObjective.model_validate(
        {"discover": {"texts": docs, "prefix_tokens": 8, "suffix_tokens": 8, "stride": 4}, "max_strict_rate": 0.05}
    )
    pairs = discover_forget_pairs(forget, docs, model, tok)
    assert pairs and all(isinstance(p, list) and isinstance(s, list) for p, s in pairs)
    report = evaluate_recitation(model, tok, pairs, prefix_tokens=8, suffix_tokens=8)
    assert report.strict_rate == 1.0
