"""Before/after comparison rows and table rendering, against hand-computed changes."""

from __future__ import annotations

import json

import pytest

from workers.evaluation.perplexity import PerplexityReport
from workers.evaluation.report import compare, flatten_metrics, render_table


def test_compare_hand_computed():
    before = {"recitation": {"strict_rate": 0.9, "rows": [{"distance": 0}], "prefix_tokens": 64}, "perplexity": 10.0}
    after = {"recitation": {"strict_rate": 0.05, "prefix_tokens": 64}, "perplexity": 11.0, "agreement": {"ndcg": 0.8}}
    rows = {r["metric"]: r for r in compare(before, after)}
    assert set(rows) == {"recitation.strict_rate", "perplexity", "agreement.ndcg"}  # settings and rows skipped
    r = rows["recitation.strict_rate"]
    assert r["abs_change"] == pytest.approx(-0.85) and r["rel_change"] == pytest.approx(-0.85 / 0.9)
    assert rows["perplexity"]["rel_change"] == pytest.approx(0.1)
    assert rows["agreement.ndcg"]["before"] is None and rows["agreement.ndcg"]["abs_change"] is None
    json.dumps(list(rows.values()))  # JSON-serialisable


def test_zero_before_has_no_relative_change():
    (row,) = compare({"x": 0.0}, {"x": 0.5})
    assert row["abs_change"] == 0.5 and row["rel_change"] is None


def test_report_objects_are_flattened():
    rep = PerplexityReport(perplexity=5.0, mean_nll=1.6, total_nll=16.0, tokens=10, sequences=1, seq_len=8)
    assert flatten_metrics({"perplexity": rep}, skip=frozenset({"total_nll"})) == {
        "perplexity.perplexity": 5.0,
        "perplexity.mean_nll": 1.6,
        "perplexity.tokens": 10,
        "perplexity.sequences": 1,
        "perplexity.seq_len": 8,
    }


def test_render_markdown_and_text():
    rows = compare({"ppl": 10.0, "rate": 0.5}, {"ppl": 11.5, "rate": 0.0})
    md = render_table(rows)
    assert md.splitlines()[0] == "| metric | before | after | abs_change | rel_change |"
    assert "| ppl | 10 | 11.5 | +1.5 | +15.0% |" in md
    assert "| rate | 0.5 | 0 | -0.5 | -100.0% |" in md
    text = render_table(rows, fmt="text").splitlines()
    assert text[0].split() == ["metric", "before", "after", "abs_change", "rel_change"]
    assert text[2].split() == ["ppl", "10", "11.5", "+1.5", "+15.0%"]
    with pytest.raises(ValueError):
        render_table(rows, fmt="html")
