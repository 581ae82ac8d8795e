"""Goal-directed edits: candidate layer sets, the rho coordinate and the search strategy.

Pure (no Redis, no torch): the strategy sees the model only through an ``Evaluator`` callback,
``(layers, keep_mass, full) -> TrialMetrics``. ``workers.pipeline.search_stage`` provides the real one.
"""

from workers.search.candidates import RhoScale, default_layer_sets, normalize_layer_sets
from workers.search.strategy import Evaluator, Targets, damage, preference, run_search

__all__ = [
    "Evaluator",
    "RhoScale",
    "Targets",
    "damage",
    "default_layer_sets",
    "normalize_layer_sets",
    "preference",
    "run_search",
]
