"""Edit evaluation: recitation, perplexity, agreement (nDCG@k), discovery and before/after reports.

A plain library (no Redis): the job pipeline, the CLI and notebooks call the same functions.
"""

from workers.evaluation.agreement import (
    AgreementReport,
    TopKReference,
    evaluate_agreement,
    ndcg_at_k,
    reference_topk,
    reference_topk_for_texts,
)
from workers.evaluation.discovery import DiscoveredWindow, discover_memorized
from workers.evaluation.perplexity import PerplexityReport, evaluate_perplexity, perplexity_of_sequences
from workers.evaluation.recitation import (
    RecitationReport,
    RecitationRow,
    evaluate_recitation,
    score_recitation,
)
from workers.evaluation.report import compare, flatten_metrics, render_table

__all__ = [
    "AgreementReport",
    "DiscoveredWindow",
    "PerplexityReport",
    "RecitationReport",
    "RecitationRow",
    "TopKReference",
    "compare",
    "discover_memorized",
    "evaluate_recitation",
    "evaluate_agreement",
    "evaluate_perplexity",
    "flatten_metrics",
    "ndcg_at_k",
    "perplexity_of_sequences",
    "reference_topk",
    "reference_topk_for_texts",
    "render_table",
    "score_recitation",
]
