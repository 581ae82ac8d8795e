"""The committed demo model and its edit spec do what the README claims.

- The demo model (``examples/demo``) recites at least 90 % of its planted records strictly, and
  discovery finds a recited window in every record and none in held-out prose.
- ``examples/demo-edit.json`` (goal-directed: no layers or keep_mass given), run through the real
  in-process pipeline, finds an edit whose strict recitation is at most 5 % while held-out perplexity
  rises at most 10 % (the objective's targets, measured again by the evaluation section), and
  reports nDCG@10.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from contract.settings import Settings
from contract.spec import EditJobSpec
from tests.test_curvature_behaviour import one_thread
from workers.evaluation import discover_memorized, evaluate_recitation
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"
SPEC = REPO / "examples" / "demo-edit.json"


def _pairs() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (DEMO / "memorized.jsonl").read_text().splitlines() if line.strip()]
    return [(r["prefix"], r["suffix"]) for r in rows]


def test_demo_model_recites_its_planted_records():
    spec = EditJobSpec.model_validate_json(SPEC.read_text())
    rec = spec.evaluation.recitation
    model = AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(DEMO)
    pairs = _pairs()
    assert len(pairs) >= 20
    report = evaluate_recitation(
        model, tok, pairs, prefix_tokens=rec.prefix_tokens, suffix_tokens=rec.suffix_tokens, batch_size=32
    )
    assert report.strict_rate >= 0.9
    # The suffixes are whole: the spec's suffix_tokens covers every planted suffix.
    assert all(len(tok(s, add_special_tokens=False).input_ids) <= rec.suffix_tokens for _, s in pairs)


def test_discovery_finds_every_planted_record_and_no_prose():
    model = AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(DEMO)
    records = [p + s for p, s in _pairs()]
    prose = [b for b in (DEMO / "heldout.txt").read_text().split("\n\n") if b.strip()][:6]
    found = discover_memorized(model, tok, records + prose, prefix_tokens=16, suffix_tokens=16, stride=8, batch_size=32)
    assert {w.document for w in found} == set(range(len(records)))


@pytest.mark.slow
def test_demo_edit_spec_meets_the_thresholds(tmp_path: Path):
    spec = EditJobSpec.model_validate_json(SPEC.read_text())
    spec.output.save_model = False
    settings = Settings(
        model_root=REPO / "examples",
        data_root=REPO / "examples",
        output_root=tmp_path / "out",
        dataset_dir=tmp_path / "datasets",
        device="cpu",
    )
    with one_thread():  # two spinning threads per process are ~10x slower on a busy shared machine
        result = run_pipeline(spec, settings=settings, job_id="demo", reporter=NullReporter(), cache=None)
    before = result["baseline"]
    (point,) = result["results"]
    after = point["metrics"]
    assert spec.edit.layers is None and "keep_mass" not in spec.edit.model_fields_set
    assert result["search"]["met"] is True
    assert before["recitation"]["strict_rate"] >= 0.9
    assert after["recitation"]["strict_rate"] <= 0.05
    rise = after["perplexity"]["perplexity"] / before["perplexity"]["perplexity"] - 1
    assert rise <= 0.10
    assert 0.0 < after["agreement"]["ndcg"] <= 1.0
