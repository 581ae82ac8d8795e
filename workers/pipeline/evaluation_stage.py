"""The evaluation suite a spec asks for, run on the model as it currently is.

``EvaluationSuite.prepare`` resolves the data once and records the agreement reference (top-k of
the *unedited* model) before any edit; ``measure`` then returns one nested metrics dict
(``recitation`` / ``perplexity`` / ``agreement``, or ``classification`` for an image classifier:
memorised-set and held-out accuracy), the same shape before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract.settings import Settings
from contract.spec import EvaluationSpec
from workers.evaluation import (
    TopKReference,
    evaluate_agreement,
    evaluate_perplexity,
    evaluate_recitation,
    reference_topk_for_texts,
)
from workers.pipeline.errors import PipelineError
from workers.pipeline.loading import LoadedModel
from workers.pipeline.sources import resolve_pairs_with_origin, resolve_texts
from workers.vision.accuracy import classification_metrics
from workers.vision.images import ImageSet, fingerprint_images, load_images


@dataclass
class EvaluationData:
    spec: EvaluationSpec
    pairs: list[tuple[Any, Any]] | None
    ppl_texts: list[str] | None
    agreement_texts: list[str] | None
    pair_origins: list[str] | None = None
    memorized: ImageSet | None = None  # evaluation.classification sets (read after the model loads)
    heldout: ImageSet | None = None

    def load_images(self, settings: Settings, loaded: LoadedModel) -> None:
        """Read ``evaluation.classification``'s image sets, preprocessed for ``loaded``'s model."""
        spec = self.spec.classification
        if spec is None:
            return
        config = loaded.model.config
        for name in ("memorized", "heldout"):
            source = getattr(spec, name)
            if source is not None:
                field = f"evaluation.classification.{name}"
                setattr(self, name, load_images(source, settings, field, loaded.model_dir, config))

    def image_fingerprints(self) -> dict[str, str]:
        """Fingerprints of the image sets read (none for a text job)."""
        sets = (("classification.memorized", self.memorized), ("classification.heldout", self.heldout))
        return {name: fingerprint_images(images) for name, images in sets if images is not None}

    def check_token_ids(self, vocab_size: int) -> None:
        """Every token id of the recitation pairs indexes the model's embedding (``invalid_input``
        naming the pair otherwise) — checked before any tensor work."""
        for where, (prefix, suffix) in zip(self.pair_origins or [], self.pairs or [], strict=False):
            for side, value in (("prefix", prefix), ("suffix", suffix)):
                if isinstance(value, str):
                    continue
                bad = [int(t) for t in value if not 0 <= int(t) < vocab_size]
                if bad:
                    raise PipelineError(
                        "invalid_input",
                        f"{where}: {side} token id {bad[0]} is outside the model's vocabulary "
                        f"(ids 0..{vocab_size - 1})",
                    )


def resolve_evaluation(spec: EvaluationSpec | None, settings: Settings) -> EvaluationData | None:
    """Load every evaluation input (fails fast, before any tensor work)."""
    if spec is None:
        return None
    pairs = origins = None
    if spec.recitation is not None:
        raw = resolve_pairs_with_origin(spec.recitation, settings)[: spec.recitation.max_examples]
        pairs = [(p["prefix"], p["suffix"]) for _, p in raw]
        origins = [where for where, _ in raw]
    ppl = resolve_texts(spec.perplexity, settings, "evaluation.perplexity") if spec.perplexity else None
    agree = None
    if spec.agreement is not None:
        agree = ppl
        if spec.agreement.source is not None:
            agree = resolve_texts(spec.agreement.source, settings, "evaluation.agreement.source")
    return EvaluationData(spec=spec, pairs=pairs, ppl_texts=ppl, agreement_texts=agree, pair_origins=origins)


class EvaluationSuite:
    """Before/after measurements for one job."""

    def __init__(self, data: EvaluationData, model: Any, tokenizer: Any) -> None:
        self.data = data
        self.model = model
        self.tokenizer = tokenizer
        self.reference: TopKReference | None = None

    def prepare_reference(self) -> None:
        """Top-k of the current (unedited) model on the agreement texts."""
        spec = self.data.spec
        if spec.agreement is None or not self.data.agreement_texts:
            return
        seq_len = spec.perplexity.seq_len if spec.perplexity is not None else 256
        self.reference = reference_topk_for_texts(
            self.model,
            self.tokenizer,
            self.data.agreement_texts,
            k=spec.agreement.k,
            seq_len=seq_len,
            max_tokens=spec.agreement.max_tokens,
            batch_size=spec.batch_size,
        )

    def measure(self, *, with_agreement: bool = True) -> dict[str, Any]:
        spec = self.data.spec
        out: dict[str, Any] = {}
        if spec.recitation is not None and self.data.pairs:
            rep = evaluate_recitation(
                self.model,
                self.tokenizer,
                self.data.pairs,
                prefix_tokens=spec.recitation.prefix_tokens,
                suffix_tokens=spec.recitation.suffix_tokens,
                batch_size=spec.batch_size,
                loose_threshold=spec.recitation.loose_threshold,
                decode=False,
            )
            out["recitation"] = rep.to_dict(include_rows=False)
        if spec.perplexity is not None and self.data.ppl_texts:
            out["perplexity"] = evaluate_perplexity(
                self.model,
                self.tokenizer,
                self.data.ppl_texts,
                seq_len=spec.perplexity.seq_len,
                max_tokens=spec.perplexity.max_tokens,
                batch_size=spec.batch_size,
            ).to_dict()
        if with_agreement and self.reference is not None:
            out["agreement"] = evaluate_agreement(self.model, self.reference).to_dict()
        if spec.classification is not None:
            out["classification"] = classification_metrics(
                self.model, self.data.memorized, self.data.heldout, spec.batch_size
            )
        return out
