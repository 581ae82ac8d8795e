"""The torch-free contract between the gateway, CLI, client and workers.

``spec`` (the job spec), ``settings`` (one pydantic-settings ``Settings``), ``keys`` (every Redis
key name), ``paths`` (root confinement), ``store`` (the Redis job store, reporter and RQ queue
helpers both sides use). Imports pydantic, pydantic-settings, redis and rq only — never fastapi,
torch, transformers, ``service`` or ``workers`` (enforced by import-linter, see pyproject.toml).
"""
