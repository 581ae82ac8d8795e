"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis), in
process over ASGI, against this run's real Redis, with a valid API key.

For every operation schemathesis generates inputs that fit the schema and inputs that break it
(wrong types, out-of-range numbers, missing or extra fields, odd strings and headers) and checks:
no response is a 5xx, every error body has the documented shape ``{error: {code, message,
field?}}``, status codes, content types, headers and bodies conform to the schema, and inputs
the schema forbids are rejected with a 4xx (so every bound the server enforces is in the schema).
Bounded by ``FUZZ_EXAMPLES`` per operation (``CURVEDIT_FUZZ_EXAMPLES`` overrides it) and a
derandomized seed, so a run is repeatable and takes well under a minute on two cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.main import create_app
from tests.gateway_helpers import auth, make_settings
from tests.tiny_models import save_tiny

FUZZ_EXAMPLES = int(os.environ.get("CURVEDIT_FUZZ_EXAMPLES", "25"))


def _operations() -> list[tuple[str, bool]]:
    """``("METHOD /path", takes input)`` for every operation of the app's schema (built at
    collection time; no Redis is touched). Negative cases need an input to break."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = create_app(make_settings(Path(tmp), "redis://127.0.0.1:1/0")).openapi()
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            out.append((f"{method.upper()} {path}", bool(op.get("parameters") or op.get("requestBody"))))
    return out


CASES = [
    pytest.param(label, mode, id=f"{label}-{mode}")
    for label, takes_input in _operations()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if takes_input or mode == GenerationMode.POSITIVE
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory, owned_redis_url: str) -> Iterator[Any]:
    """One app (and its lifespan) for the module, on this run's Redis, emptied first and after."""
    from schemathesis.python.asgi import shutdown_lifespans

    tmp = tmp_path_factory.mktemp("fuzz")
    client = redis.Redis.from_url(owned_redis_url)
    client.flushdb()
    settings = make_settings(tmp, owned_redis_url)
    save_tiny(settings.model_root / "llama", family="llama")
    app = create_app(settings)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        shutdown_lifespans()  # closes the app's Redis pools and update subscription
        client.flushdb()
        client.close()


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is ``{"error": {"code": str, "message": str, "field": str | null, ...}}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"error body is not {{error: ...}}: {body!r}"
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], f"error.code missing: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"error.message missing: {body!r}"
    assert error.get("field") is None or isinstance(error["field"], str), f"error.field not a string: {body!r}"
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_api_fuzz(api_schema: Any, label: str, mode: GenerationMode) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    # /readyz answers 503 by design here: no worker listens on the test queue
    checks = [c for c in CHECKS if not (label == "GET /readyz" and c is not_a_server_error)]

    @given(case=operation.as_strategy(generation_mode=mode))
    @hsettings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        headers = {**(case.headers or {}), "Authorization": auth()["Authorization"]}  # fuzz behind auth
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks, additional_checks=[error_shape], headers=headers)

    run()
