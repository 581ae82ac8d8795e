"""The edit pipeline as stage objects with typed inputs and outputs; ``workers/pipeline/run.py``
wires them in order:

``load`` (inputs resolved, model loaded, targets) → ``curvature`` (collect_factors +
eigendecompose, cache-aware) → ``plan`` (which targets and keep_mass values to edit: the spec's
sweep, or a goal-directed search for ``spec.objective``) → ``edit`` → ``evaluate`` → ``export``.

Each stage is a function ``stage(ctx, ...) -> Output`` over the ``JobContext`` (spec, settings,
reporter, cache, stage clock) and earlier stages' dataclasses. A new stage between eigendecompose
and export takes ``CurvatureOut`` and returns an ``EditPlan`` (or consumes one), nothing else
changes.
"""
