"""The objective's optional constraints bind in the real search on the demo model:
``objective.retain.min_agreement_ndcg`` and ``objective.forget.max_loose_rate``.

A reference run measures every trial's nDCG@10 (floor 0.0, which never binds, so it searches like
the unconstrained demo objective) and its loose rate (always measured). Each constraint is then set
just tighter than what the reference's chosen edit achieves — thresholds computed from that run,
never hard-coded — and the constrained run must either choose a trial that honours it (a different
edit) or end in ``objective_not_met`` with no trial feasible on the full sets and some trials that only
the constraint rejected; every trial's ``retain_met`` / ``forget_met`` flag must agree with its
recorded metrics and the thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contract.spec import EditJobSpec
from tests.test_curvature_behaviour import one_thread
from tests.test_search_pipeline import SPEC, repo_settings
from workers.pipeline.errors import PipelineError
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

NDCG_MARGIN = 0.002  # "just above" the reference choice's nDCG


def demo_spec(*, min_ndcg: float | None = None, max_loose: float | None = None) -> EditJobSpec:
    body = json.loads(SPEC.read_text())
    body["objective"]["retain"]["min_agreement_ndcg"] = min_ndcg
    body["objective"]["forget"]["max_loose_rate"] = max_loose
    body.pop("evaluation")
    body["output"] = {"save_model": False, "save_delta": False}
    return EditJobSpec.model_validate(body)


def search(spec: EditJobSpec, tmp: Path) -> tuple[dict[str, Any], str | None]:
    """The search section and the error code (None when the job succeeded)."""
    with one_thread():
        try:
            result = run_pipeline(spec, settings=repo_settings(tmp), job_id="c", reporter=NullReporter(), cache=None)
        except PipelineError as err:
            assert isinstance(err.result, dict), err
            return err.result["search"], err.code
    return result["search"], None


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    found, code = search(demo_spec(min_ndcg=0.0), tmp_path_factory.mktemp("reference"))
    assert code is None and found["met"] is True, found
    assert all(t["metrics"]["ndcg"] is not None for t in found["trials"])  # measured in every trial
    return found


def forget_ok(t: dict[str, Any], max_strict: float, max_loose: float | None) -> bool:
    m = t["metrics"]
    return m["strict_rate"] <= max_strict and (max_loose is None or m["loose_rate"] <= max_loose)


def retain_ok(t: dict[str, Any], max_increase: float, min_ndcg: float | None) -> bool:
    m = t["metrics"]
    return m["perplexity_increase"] <= max_increase and (min_ndcg is None or m["ndcg"] >= min_ndcg)


def test_an_ndcg_floor_above_the_reference_choice_binds(reference: dict[str, Any], tmp_path: Path) -> None:
    ref = reference["chosen"]
    floor = ref["metrics"]["ndcg"] + NDCG_MARGIN
    assert floor <= 1.0
    spec = demo_spec(min_ndcg=floor)
    obj = spec.objective
    assert obj is not None and obj.forget.max_strict_rate is not None
    found, code = search(spec, tmp_path)
    trials = found["trials"]
    assert trials and all(t["metrics"]["ndcg"] is not None for t in trials)
    for t in trials:  # the flags follow from the metrics and the floor
        assert t["retain_met"] == retain_ok(t, obj.retain.max_perplexity_increase, floor), t
        assert t["forget_met"] == forget_ok(t, obj.forget.max_strict_rate, None), t
        assert t["feasible"] == (t["retain_met"] and t["forget_met"]), t
    if found["met"]:
        chosen = found["chosen"]
        assert code is None and chosen["feasible"] and chosen["stage"] == "confirm"
        assert chosen["metrics"]["ndcg"] >= floor
        assert (chosen["layers"], chosen["keep_mass"]) != (ref["layers"], ref["keep_mass"])
    else:
        assert code == "objective_not_met"
        # screen trials (subsets) may pass; no trial measured on the full sets does
        assert not any(t["feasible"] for t in trials if t["stage"] == "confirm"), trials
        # the floor is what rejected them: trials (screen or full) that meet forget and the perplexity
        # cap, and would be feasible without the floor, miss only nDCG
        blocked = [
            t
            for t in trials
            if t["forget_met"]
            and retain_ok(t, obj.retain.max_perplexity_increase, None)
            and t["metrics"]["ndcg"] < floor
        ]
        assert blocked, trials


def test_a_loose_rate_cap_below_the_reference_choice_binds(reference: dict[str, Any], tmp_path: Path) -> None:
    ref = reference["chosen"]
    ref_loose = ref["metrics"]["loose_rate"]
    assert ref_loose > 0.0, "the reference choice already has loose rate 0: no tighter cap exists"
    cap = ref_loose / 2.0
    spec = demo_spec(max_loose=cap)
    obj = spec.objective
    assert obj is not None and obj.forget.max_strict_rate is not None
    found, code = search(spec, tmp_path)
    trials = found["trials"]
    for t in trials:  # the flags follow from the metrics and the cap
        assert t["forget_met"] == forget_ok(t, obj.forget.max_strict_rate, cap), t
        assert t["retain_met"] == retain_ok(t, obj.retain.max_perplexity_increase, None), t
        assert t["feasible"] == (t["retain_met"] and t["forget_met"]), t
    if found["met"]:
        chosen = found["chosen"]
        assert code is None and chosen["feasible"] and chosen["stage"] == "confirm"
        assert chosen["metrics"]["loose_rate"] <= cap < ref_loose
        assert (chosen["layers"], chosen["keep_mass"]) != (ref["layers"], ref["keep_mass"])
    else:
        assert code == "objective_not_met"
        # screen trials (subsets) may pass; no trial measured on the full sets does
        assert not any(t["feasible"] for t in trials if t["stage"] == "confirm"), trials
        # the cap is what rejected them: trials that meet the strict target and retain miss only the cap
        blocked = [
            t
            for t in trials
            if t["retain_met"] and forget_ok(t, obj.forget.max_strict_rate, None) and t["metrics"]["loose_rate"] > cap
        ]
        assert blocked, trials
