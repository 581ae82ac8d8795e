"""Optional OpenTelemetry spans: one per gateway request, and one per edit job with a child span per
pipeline stage. Off by default (``CURVEDIT_OTEL_EXPORTER=none``); ``console`` prints spans,
``otlp`` sends them to ``CURVEDIT_OTEL_ENDPOINT`` (needs ``opentelemetry-exporter-otlp``).

The provider is curvedit's own (not OpenTelemetry's global one), set up once per process by
``setup_tracing``; ``tracer()`` is None while tracing is off, and every caller then does nothing.
Job spans are drawn after the job ends from the stage timestamps in its record
(``record_job_spans``), so the pipeline itself carries no tracing code.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

_provider: Any = None


def setup_tracing(settings: Any, component: str) -> None:
    """Install a tracer provider for this process (``component``: gateway, worker, ...) when
    ``settings.otel_exporter`` is not ``none``. A missing package is a warning, never an error."""
    global _provider
    if settings.otel_exporter == "none" or _provider is not None:
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        exporter: Any
        if settings.otel_exporter == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            kwargs = {"endpoint": settings.otel_endpoint} if settings.otel_endpoint else {}
            exporter = OTLPSpanExporter(**kwargs)
    except ImportError as exc:
        log.warning("CURVEDIT_OTEL_EXPORTER=%s but %s; tracing stays off", settings.otel_exporter, exc)
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name, "curvedit.component": component})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider


def install_provider(provider: Any) -> None:
    """Use ``provider`` (tests pass one with an in-memory exporter); None turns tracing off."""
    global _provider
    _provider = provider


def flush() -> None:
    """Export buffered spans now (a work horse exits right after its job)."""
    if _provider is not None:
        _provider.force_flush()


def tracer() -> Any:
    return None if _provider is None else _provider.get_tracer("curvedit")


def _ns(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e9)


def record_job_spans(record: dict[str, Any], request_id: str | None = None) -> None:
    """An ``edit_job`` span (job id, owner, status, request id) from the job's start to its end,
    with a child span per stage from the stage timestamps in the record."""
    t = tracer()
    if t is None or not record.get("started_at"):
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    start, end = _ns(record["started_at"]), _ns(record.get("finished_at") or record.get("updated_at"))
    attrs = {"curvedit.job_id": record["id"], "curvedit.owner": record["owner"], "curvedit.status": record["status"]}
    if request_id:
        attrs["curvedit.request_id"] = request_id
    job_span = t.start_span("edit_job", start_time=start, attributes=attrs)
    if record["status"] == "failed":
        job_span.set_status(Status(StatusCode.ERROR, str((record.get("error") or {}).get("code"))))
    ctx = trace.set_span_in_context(job_span)
    for name, stage in sorted((record.get("stages") or {}).items(), key=lambda kv: kv[1].get("started_at") or ""):
        s_start, s_end = _ns(stage.get("started_at")), _ns(stage.get("finished_at"))
        if s_start is None:
            continue
        span = t.start_span(
            f"stage {name}",
            context=ctx,
            start_time=s_start,
            attributes={
                "curvedit.job_id": record["id"],
                "curvedit.stage": name,
                "curvedit.cached": bool(stage.get("cached")),
            },
        )
        if stage.get("status") == "failed":
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=s_end or end)
    job_span.end(end_time=end)
