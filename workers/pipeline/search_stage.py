"""The goal-directed part of the pipeline (``objective`` in the spec): the real ``Evaluator`` for
``workers.search`` and the glue that turns its outcome into the edit the pipeline exports.

Factors and eigenbases are computed once, for the union of every candidate layer set (the caller
passes the eigenbases in); a trial restores the original weights of all candidate targets, applies
``W' = U_G (C ⊙ M) U_Aᵀ`` to the trial's layers at its rho, and measures

- forget: greedy recitation of the forget pairs (strict / loose rates);
- retain: held-out perplexity relative to the unedited model on the same sequences, and nDCG@k
  against the unedited model's top-k when ``min_agreement_ndcg`` is set.

Screening uses a spread subset of the forget pairs (every k-th, at least ``MIN_SCREEN_PAIRS``) and
the first packed retain sequences (at least ``MIN_SCREEN_SEQUENCES``), each with its own baseline;
confirmation uses the full sets. Each trial is reported as an event and as progress, and the
cancel flag is checked before every trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from contract.preflight import SEARCH_ROTATIONS_BYTES
from contract.search import SearchResult, Trial, TrialMetrics
from contract.settings import Settings
from contract.spec import ForgetObjective, ObjectiveSpec, PairSource
from workers.curvature import EditTarget, Eigen, Rotations, apply_edit, resolve_targets
from workers.curvature.targets import num_layers
from workers.evaluation import (
    TopKReference,
    discover_memorized,
    evaluate_agreement,
    evaluate_recitation,
    perplexity_of_sequences,
    reference_topk,
)
from workers.evaluation.batching import pad_token_id
from workers.evaluation.packing import pack_texts
from workers.pipeline.errors import PipelineError
from workers.pipeline.reporting import JobCancelled, Reporter
from workers.pipeline.sources import resolve_pairs, resolve_texts
from workers.search import RhoScale, Targets, default_layer_sets, normalize_layer_sets, run_search

MIN_SCREEN_PAIRS = 16
MIN_SCREEN_SEQUENCES = 8
NDCG_K = 10
EVAL_BATCH = 32

Pair = tuple[Any, Any]


@dataclass
class ObjectiveData:
    """The objective's inputs, resolved before any tensor work (discovery runs once the model is loaded)."""

    spec: ObjectiveSpec
    pairs: list[Pair] | None  # None: the forget set comes from discovery
    pair_origins: list[str]
    discover_texts: list[str] | None
    retain_texts: list[str]

    def check_token_ids(self, vocab_size: int) -> None:
        """Forget pairs given as token ids must index the model's embedding (``invalid_input``)."""
        for where, (prefix, suffix) in zip(self.pair_origins, self.pairs or [], strict=False):
            for side, value in (("prefix", prefix), ("suffix", suffix)):
                bad = [] if isinstance(value, str) else [int(t) for t in value if not 0 <= int(t) < vocab_size]
                if bad:
                    raise PipelineError(
                        "invalid_input",
                        f"{where}: {side} token id {bad[0]} is outside the model's vocabulary "
                        f"(ids 0..{vocab_size - 1})",
                    )


def resolve_objective(spec: ObjectiveSpec, settings: Settings) -> ObjectiveData:
    forget = spec.forget
    pairs = None
    origins: list[str] = []
    texts = None
    if forget.discover is not None:
        texts = resolve_texts(forget.discover, settings, "objective.forget.discover")
    else:
        source = PairSource(dataset_id=forget.dataset_id, path=forget.path, pairs=forget.pairs)
        raw = resolve_pairs(source, settings, "objective.forget")[: forget.max_examples]
        pairs = [(p["prefix"], p["suffix"]) for p in raw]
        origins = [f"objective.forget pair {i}" for i in range(len(pairs))]
        if not pairs:
            raise PipelineError("invalid_dataset", "objective.forget: the forget set holds no pairs")
    retain = resolve_texts(spec.retain.perplexity, settings, "objective.retain.perplexity")
    return ObjectiveData(spec=spec, pairs=pairs, pair_origins=origins, discover_texts=texts, retain_texts=retain)


def candidate_layer_sets(spec: ObjectiveSpec, model: Any) -> list[list[int]]:
    n = num_layers(model)
    given = spec.search.layer_sets
    if given is not None:
        bad = [x for s in given for x in s if not -n <= x < n]
        if bad:
            raise PipelineError(
                "invalid_target", f"objective.search.layer_sets: layers {bad} do not exist ({n} layers)"
            )
        return normalize_layer_sets(given, n)
    return default_layer_sets(n)


def search_targets(spec: ObjectiveSpec, model: Any, layer_sets: list[list[int]]) -> list[EditTarget]:
    """Every target of every candidate layer set (one factor collection covers them all)."""
    union = sorted({x for s in layer_sets for x in s})
    return resolve_targets(model, layers=union, projections=list(spec.search.projections))


def discover_forget_pairs(forget: ForgetObjective, texts: list[str], model: Any, tokenizer: Any) -> list[Pair]:
    d = forget.discover
    assert d is not None
    windows = discover_memorized(
        model,
        tokenizer,
        texts,
        prefix_tokens=d.prefix_tokens,
        suffix_tokens=d.suffix_tokens,
        stride=d.stride,
        batch_size=EVAL_BATCH,
        max_windows=d.max_windows,
    )
    pairs = [(w.to_pair()["prefix"], w.to_pair()["suffix"]) for w in windows][: forget.max_examples]
    if not pairs:
        raise PipelineError(
            "invalid_dataset",
            "objective.forget.discover: the model recites no window of the given corpus; nothing to forget",
        )
    return pairs


def spread_subset(items: list[Any], fraction: float, minimum: int) -> list[Any]:
    """Every k-th item so that about ``fraction`` of them (at least ``minimum``) remain."""
    want = max(minimum, math.ceil(fraction * len(items)))
    if want >= len(items):
        return list(items)
    step = len(items) / want
    return [items[int(i * step)] for i in range(want)]


@dataclass
class _EvalSet:
    pairs: list[Pair]
    sequences: list[list[int]]
    reference: TopKReference | None
    baseline_nll: float = math.nan


class ObjectiveEvaluator:
    """``(layers, keep_mass, full) -> TrialMetrics`` on the loaded model (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        targets: list[EditTarget],
        eigens: dict[str, tuple[Eigen, Eigen]],
        objective: ObjectiveSpec,
        pairs: list[Pair],
        retain_texts: list[str],
        should_cancel: Callable[[], bool],
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.targets = targets
        self.eigens = eigens
        self.objective = objective
        self.should_cancel = should_cancel
        self.params = dict(model.named_parameters())
        self.pnames = [f"{t.name}.weight" for t in targets]
        self.originals = {n: self.params[n].detach().to("cpu", copy=True) for n in self.pnames}
        # Every trial restores the originals and edits again, so C = U_G^T W U_A is the same in all
        # of them: computed once per target, when all of them fit SEARCH_ROTATIONS_BYTES (float32).
        c_bytes = sum(4 * t.out_features * t.in_features for t in targets)
        self.rotations = Rotations() if c_bytes <= SEARCH_ROTATIONS_BYTES else None
        ppl = objective.retain.perplexity
        try:
            sequences = pack_texts(tokenizer, retain_texts, seq_len=ppl.seq_len, max_tokens=ppl.max_tokens)
        except ValueError as exc:
            raise PipelineError("invalid_dataset", f"objective.retain.perplexity: {exc}") from exc
        if not sequences:
            raise PipelineError("invalid_dataset", "objective.retain.perplexity: no token sequences to measure")
        fraction = objective.search.screen_fraction
        self.full = self._prepare(pairs, sequences)
        screen_pairs = spread_subset(pairs, fraction, MIN_SCREEN_PAIRS)
        screen_seqs = sequences[: max(MIN_SCREEN_SEQUENCES, math.ceil(fraction * len(sequences)))]
        self.screens = len(screen_pairs) < len(pairs) or len(screen_seqs) < len(sequences)
        self.screen = self._prepare(screen_pairs, screen_seqs) if self.screens else self.full
        self.baseline = {"full": self._measure(self.full, with_reference=False)}

    def _prepare(self, pairs: list[Pair], sequences: list[list[int]]) -> _EvalSet:
        reference = None
        if self.objective.retain.min_agreement_ndcg is not None:
            pad = pad_token_id(self.tokenizer, self.model)
            reference = reference_topk(self.model, sequences, NDCG_K, batch_size=EVAL_BATCH, pad_id=pad)
        ev = _EvalSet(pairs=pairs, sequences=sequences, reference=reference)
        ev.baseline_nll = self._nll(ev)
        return ev

    def _nll(self, ev: _EvalSet) -> float:
        pad = pad_token_id(self.tokenizer, self.model)
        return perplexity_of_sequences(self.model, ev.sequences, batch_size=EVAL_BATCH, pad_id=pad).mean_nll

    def _measure(self, ev: _EvalSet, *, with_reference: bool = True) -> TrialMetrics:
        forget = self.objective.forget
        rec = evaluate_recitation(
            self.model,
            self.tokenizer,
            ev.pairs,
            prefix_tokens=forget.prefix_tokens,
            suffix_tokens=forget.suffix_tokens,
            batch_size=EVAL_BATCH,
            loose_threshold=forget.loose_threshold,
            decode=False,
        )
        pad = pad_token_id(self.tokenizer, self.model)
        ppl = perplexity_of_sequences(self.model, ev.sequences, batch_size=EVAL_BATCH, pad_id=pad)
        increase = math.exp(ppl.mean_nll - ev.baseline_nll) - 1.0
        ndcg = None
        if with_reference and ev.reference is not None:
            ndcg = evaluate_agreement(self.model, ev.reference).ndcg
        return TrialMetrics(
            strict_rate=rec.strict_rate,
            loose_rate=rec.loose_rate,
            perplexity=ppl.perplexity,
            perplexity_increase=increase if math.isfinite(increase) else math.inf,
            ndcg=ndcg,
            forget_examples=rec.n,
            retain_tokens=ppl.tokens,
        )

    @torch.no_grad()
    def restore(self) -> None:
        for name, value in self.originals.items():
            p = self.params[name]
            p.copy_(value.to(device=p.device, dtype=p.dtype))

    def apply(self, layers: tuple[int, ...], keep_mass: float) -> list[EditTarget]:
        """Originals back everywhere, then the edit of ``layers`` at ``keep_mass``; returns its targets."""
        self.restore()
        chosen = [t for t in self.targets if t.layer in layers]
        apply_edit(self.model, chosen, self.eigens, keep_mass, self.rotations)
        return chosen

    def __call__(self, layers: tuple[int, ...], keep_mass: float, full: bool) -> TrialMetrics:
        if self.should_cancel():
            raise JobCancelled("cancelled during the search")
        self.apply(layers, keep_mass)
        try:
            return self._measure(self.full if full else self.screen)
        finally:
            self.restore()


def trial_message(trial: Trial, max_trials: int) -> str:
    """``trial 7/48: layers 2,3 ρ=0.875 → strict 0.03, ppl +3.5 %`` (plus the outcome)."""
    m = trial.metrics
    layers = ",".join(str(x) for x in trial.layers)
    ndcg = f", nDCG {m.ndcg:.3f}" if m.ndcg is not None else ""
    where = "" if trial.stage == "screen" else " [full sets]"
    verdict = "feasible" if trial.feasible else ("forget missed" if not trial.forget_met else "retain missed")
    return (
        f"trial {trial.index}/{max_trials}: layers {layers} ρ={trial.keep_mass:.6g} → strict {m.strict_rate:.2f}, "
        f"ppl {m.perplexity_increase * 100:+.1f} %{ndcg}{where} ({verdict})"
    )


def run_objective_search(
    evaluator: ObjectiveEvaluator, layer_sets: list[list[int]], objective: ObjectiveSpec, reporter: Reporter
) -> SearchResult:
    """Run the strategy with per-trial events and progress; the model is left unedited."""
    forget, retain, space = objective.forget, objective.retain, objective.search
    targets = Targets(
        max_strict_rate=forget.max_strict_rate,
        max_loose_rate=forget.max_loose_rate,
        max_perplexity_increase=retain.max_perplexity_increase,
        min_ndcg=retain.min_agreement_ndcg,
    )

    def on_trial(trial: Trial, max_trials: int) -> None:
        reporter.event("info", trial_message(trial, max_trials), {"kind": "trial", **trial.model_dump(mode="json")})
        reporter.progress(min(1.0, trial.index / max_trials))

    reporter.event(
        "info",
        f"searching {len(layer_sets)} layer set(s) × ρ in [{space.keep_mass_range[0]:g}, "
        f"{space.keep_mass_range[1]:g}] for strict ≤ {forget.max_strict_rate}, loose ≤ {forget.max_loose_rate}, "
        f"perplexity ≤ +{retain.max_perplexity_increase * 100:g} % (at most {space.max_trials} trials"
        f"{', screening on subsets first' if evaluator.screens else ''})",
        {"kind": "search", "layer_sets": layer_sets, "screening": evaluator.screens},
    )
    try:
        result = run_search(
            layer_sets,
            RhoScale(*space.keep_mass_range),
            targets,
            evaluator,
            max_trials=space.max_trials,
            projections=list(space.projections),
            screen=evaluator.screens,
            on_trial=on_trial,
        )
    finally:
        evaluator.restore()
    chosen = result.chosen
    if chosen is not None:
        layers = ",".join(str(x) for x in chosen.layers)
        verdict = "meets the objective" if result.met else "is the closest trial; the objective is NOT met"
        reporter.event(
            "info" if result.met else "warning",
            f"search: {result.evaluations} trial(s); layers {layers} at ρ={chosen.keep_mass:.6g} {verdict}",
            {"kind": "search_done", "met": result.met, "chosen": chosen.model_dump(mode="json")},
        )
    return result


def goal_directed_edit(
    data: ObjectiveData,
    model: Any,
    tokenizer: Any,
    targets: list[EditTarget],
    eigens: dict[str, tuple[Eigen, Eigen]],
    layer_sets: list[list[int]],
    reporter: Reporter,
    *,
    best_effort: bool,
) -> tuple[SearchResult, list[EditTarget]]:
    """Search, then return the result and the chosen trial's targets (the model is left unedited).

    No trial met the targets: ``PipelineError("objective_not_met")`` carrying ``{"search": ...}``
    as the job's result, unless ``best_effort`` (then the closest trial is returned)."""
    spec = data.spec
    data.check_token_ids(int(model.get_input_embeddings().weight.shape[0]))
    if data.pairs is not None:
        pairs = data.pairs
    else:
        pairs = discover_forget_pairs(spec.forget, data.discover_texts or [], model, tokenizer)
        reporter.event(
            "info",
            f"discovery: the model recites {len(pairs)} window(s) of the corpus; they are the forget set",
            {"kind": "discover", "windows": len(pairs)},
        )
    evaluator = ObjectiveEvaluator(
        model, tokenizer, targets, eigens, spec, pairs, data.retain_texts, should_cancel=reporter.cancelled
    )
    base = evaluator.baseline["full"]
    reporter.event(
        "info",
        f"before the edit: strict {base.strict_rate:.2f}, loose {base.loose_rate:.2f} on {base.forget_examples} "
        f"forget pair(s); perplexity {base.perplexity:.4g} on {base.retain_tokens} held-out tokens",
        {"kind": "search_baseline", "metrics": base.model_dump(mode="json")},
    )
    result = run_objective_search(evaluator, layer_sets, spec, reporter)
    result.baseline = base
    chosen = result.chosen
    if chosen is None or not result.met:
        payload = {"search": result.model_dump(mode="json")}
        if not best_effort or chosen is None:
            best = ""
            if chosen is not None:
                m = chosen.metrics
                best = (
                    f"; closest trial: layers {chosen.layers} at keep_mass {chosen.keep_mass:.6g} "
                    f"(strict {m.strict_rate:.3f}, perplexity {m.perplexity_increase * 100:+.2f} %)"
                )
            raise PipelineError(
                "objective_not_met",
                f"no edit among {result.evaluations} trial(s) meets the objective{best}; no edited model was "
                "written (set output.best_effort to export the closest trial)",
                result=payload,
            )
        reporter.event(
            "warning",
            "output.best_effort: exporting the closest trial although it misses the objective",
            {"kind": "best_effort"},
        )
    return result, [t for t in targets if t.layer in chosen.layers]
