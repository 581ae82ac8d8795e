"""Python client for the curvedit HTTP API (``/v1``), built on ``httpx``.

    from service.client import CurveditClient
    with CurveditClient("http://127.0.0.1:8000", api_key="...") as c:
        job = c.submit(spec)                      # dict or EditJobSpec
        final = c.wait(job["id"], on_update=print)
        print(final["status"], final.get("metrics"))

Every 4xx/5xx answer raises ``CurveditAPIError`` built from the gateway's JSON error body
(``{"error": {"code", "message", "field"}}``) or FastAPI's validation ``{"detail": [...]}``.
No torch is imported here.

Receivers of curvedit webhooks check a delivery with ``verify_webhook(raw_body, headers, secret)``
(re-exported here; raises ``WebhookVerificationError``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from contract.spec import EditJobSpec
from service.webhooks.signing import WebhookVerificationError, verify_webhook

__all__ = ["CurveditAPIError", "CurveditClient", "WebhookVerificationError", "page_items", "verify_webhook"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
JobRecord = dict[str, Any]
Items = list[dict[str, Any]]  # (an alias: inside the client class, ``list`` is a method)
Paths = list[Path]


class CurveditAPIError(Exception):
    """An error answer from the gateway (or no answer at all: ``status`` 0, code ``unreachable``)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        where = f" (field: {field})" if field else ""
        super().__init__(f"HTTP {status} {code}: {message}{where}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> CurveditAPIError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            text = response.text.strip() or response.reason_phrase
            return cls(status, _default_code(status), text[:500])
        return cls(status, *_parse_error_body(body, status))


def _default_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        413: "too_large",
        422: "invalid",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, "server_error" if status >= 500 else "error")


def _loc_to_field(loc: Any) -> str | None:
    if not isinstance(loc, list | tuple):
        return str(loc) if loc else None
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _parse_error_body(body: Any, status: int) -> tuple[str, str, str | None]:
    """(code, message, field) from either error shape the gateway may send."""
    code, message, field = _default_code(status), "", None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or "")
            field = err.get("field") or None
        elif isinstance(err, str):
            message = err
        detail = body.get("detail")
        if isinstance(detail, list) and detail:
            first = detail[0] if isinstance(detail[0], dict) else {"msg": str(detail[0])}
            field = field or _loc_to_field(first.get("loc"))
            msgs = [d.get("msg", str(d)) if isinstance(d, dict) else str(d) for d in detail]
            message = message or "; ".join(msgs)
            code = code if isinstance(err, dict) else "invalid"
        elif isinstance(detail, str):
            message = message or detail
        elif isinstance(detail, dict):
            code = str(detail.get("code") or code)
            message = message or str(detail.get("message") or detail)
            field = field or detail.get("field")
    if not message:
        message = json.dumps(body)[:500] if body is not None else "no error message"
    return code, message, field


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse Server-Sent Events from text lines into ``{"event", "id", "data"}`` dicts
    (``data`` JSON-decoded when it is JSON). Comments (keep-alives) are skipped."""
    event: str | None = None
    event_id: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data or event:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text) if text else None
                except ValueError:
                    payload = text
                yield {"event": event or "message", "id": event_id, "data": payload}
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value


def _segment(value: str, what: str = "id") -> str:
    """``value`` as one URL path segment: percent-encoded, so an id such as '../../healthz' or
    'x?status=running' cannot reach another endpoint (it is looked up, and not found, as an id)."""
    if not value:
        raise CurveditAPIError(400, "invalid_id", f"the {what} must not be empty", field=what)
    seg = quote(value, safe="")
    return seg.replace(".", "%2E") if seg in (".", "..") else seg


class CurveditClient:
    """Synchronous client for one gateway. Usable as a context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "curvedit-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    # --- plumbing -----------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CurveditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise CurveditAPIError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise CurveditAPIError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._request(method, path, **kw)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # --- jobs ---------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any] | EditJobSpec, idempotency_key: str | None = None) -> JobRecord:
        """POST /v1/edit-jobs; returns the new (or, for a repeated Idempotency-Key, the same) job."""
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, EditJobSpec) else spec
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/v1/edit-jobs", json=body, headers=headers)

    def get(self, job_id: str) -> JobRecord:
        return self._json("GET", f"/v1/edit-jobs/{_segment(job_id, 'job id')}")

    def list(self, status: str | None = None, cursor: str | None = None, limit: int | None = None) -> dict:
        """One page, newest first: ``{"data": [job, ...], "next_cursor": str | None}``."""
        params = {k: v for k, v in {"status": status, "cursor": cursor, "limit": limit}.items() if v}
        return self._json("GET", "/v1/edit-jobs", params=params)

    def iter_jobs(self, status: str | None = None, page_size: int = 50) -> Iterator[JobRecord]:
        """Every job, following the cursor."""
        cursor: str | None = None
        while True:
            page = self.list(status=status, cursor=cursor, limit=page_size)
            yield from page_items(page)
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor:
                return

    def cancel(self, job_id: str) -> JobRecord:
        return self._json("POST", f"/v1/edit-jobs/{_segment(job_id, 'job id')}/cancel")

    def events(self, job_id: str, after: int | None = None) -> Items:
        """The event log (``seq``, ``time``, ``level``, ``message``, ``data``), oldest first."""
        params = {"after": after} if after is not None else None
        body = self._json("GET", f"/v1/edit-jobs/{_segment(job_id, 'job id')}/events", params=params)
        return page_items(body)

    def stream_events(
        self, job_id: str, after: int | None = None, outage_grace: float = 120.0
    ) -> Iterator[dict[str, Any]]:
        """Follow ``/events/stream`` (Server-Sent Events) until the job ends. Yields
        ``{"event", "id", "data"}``: ``log`` (data: one event), ``job`` (data: the job record after a
        status/stage/progress change) and a final ``end`` (data: the terminal job record).

        A stream that breaks or closes before ``end`` once it was open (a gateway restart, Redis
        away: 502/503/504) is reopened with ``Last-Event-ID`` for up to ``outage_grace`` seconds,
        so no event is lost or repeated; a stream that never opened raises at once."""
        path = f"/v1/edit-jobs/{_segment(job_id, 'job id')}/events/stream"
        last = after
        opened = False
        outage_since: float | None = None
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                timeout = httpx.Timeout(30.0, read=None)
                with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise CurveditAPIError.from_response(response)
                    opened, outage_since = True, None
                    for message in parse_sse(response.iter_lines()):
                        if message["event"] == "log" and str(message.get("id") or "").isdigit():
                            last = int(message["id"])
                        yield message
                        if message["event"] == "end":
                            return
                error = CurveditAPIError(0, "unreachable", f"the event stream from {self.base_url} ended early")
            except httpx.TransportError as exc:
                error = CurveditAPIError(0, "unreachable", f"event stream from {self.base_url} broke: {exc}")
            except CurveditAPIError as exc:
                if exc.status not in (502, 503, 504):
                    raise
                error = exc
            now = time.monotonic()
            outage_since = now if outage_since is None else outage_since
            if not opened or now - outage_since > outage_grace:
                raise error
            time.sleep(1.0)

    def wait(
        self,
        job_id: str,
        poll: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[JobRecord], None] | None = None,
        outage_grace: float = 120.0,
    ) -> JobRecord:
        """Poll until the job is succeeded, failed or cancelled; returns the final record. A gateway
        that answered once and is then briefly unreachable or answers 502/503/504 (Redis restarting)
        is polled again for up to ``outage_grace`` seconds before the error is raised: the job
        itself goes on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outage_since: float | None = None
        seen = False
        while True:
            try:
                record = self.get(job_id)
            except CurveditAPIError as exc:
                if exc.status not in (0, 502, 503, 504) or not seen:  # a wrong URL fails at once
                    raise
                now = time.monotonic()
                outage_since = now if outage_since is None else outage_since
                if now - outage_since > outage_grace or (deadline is not None and now > deadline):
                    raise
                time.sleep(max(poll, 1.0))
                continue
            outage_since, seen = None, True
            if on_update is not None:
                on_update(record)
            if record.get("status") in TERMINAL:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.get('status')} after {timeout} s")
            time.sleep(poll)

    # --- artifacts ------------------------------------------------------------------------
    def list_artifacts(self, job_id: str) -> Items:
        """Every file a succeeded job exported: ``[{path, size, sha256}]`` (all pages)."""
        base = f"/v1/edit-jobs/{_segment(job_id, 'job id')}/artifacts"
        out: Items = []
        cursor: str | None = None
        while True:
            body = self._json("GET", base, params={"cursor": cursor} if cursor else None)
            out.extend(page_items(body))
            cursor = body.get("next_cursor") if isinstance(body, dict) else None
            if not cursor:
                return out

    def download_artifact(self, job_id: str, path: str, dest: str | Path, sha256: str | None = None) -> Path:
        """Stream one artifact to the file ``dest``: written to a temporary file beside it, its
        SHA-256 checked against ``sha256`` (default: the gateway's ``X-Content-SHA256``), then
        renamed into place, so ``dest`` is either the whole verified file or absent. A mismatch
        raises ``CurveditAPIError`` code ``checksum_mismatch``."""
        dest = Path(dest)
        url = f"/v1/edit-jobs/{_segment(job_id, 'job id')}/artifacts/" + "/".join(
            _segment(part, "artifact path") for part in path.split("/")
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{secrets.token_hex(4)}")
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CurveditAPIError.from_response(response)
                expected = sha256 or response.headers.get("X-Content-SHA256")
                digest = hashlib.sha256()
                with open(tmp, "wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        digest.update(chunk)
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            if expected and digest.hexdigest() != expected:
                raise CurveditAPIError(
                    0, "checksum_mismatch", f"{path}: sha256 {digest.hexdigest()} does not match {expected}"
                )
            os.replace(tmp, dest)
        except httpx.TransportError as exc:
            raise CurveditAPIError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def download_files(self, job_id: str, entries: Items, dest_dir: str | Path, strip: str = "") -> Paths:
        """Download artifact ``entries`` (from ``list_artifacts``) under ``dest_dir``, each checked
        against its listed sha256; ``strip`` is a directory prefix dropped from the local names."""
        out = []
        for entry in entries:
            rel = entry["path"][len(strip) :] if strip and entry["path"].startswith(strip) else entry["path"]
            out.append(self.download_artifact(job_id, entry["path"], Path(dest_dir) / rel, entry.get("sha256")))
        return out

    # --- datasets -------------------------------------------------------------------------
    def upload_dataset(
        self, data: str | Path | bytes, name: str | None = None, kind: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/datasets as multipart (``file`` part); ``data`` is a path or the raw bytes.
        ``kind`` ('text' | 'jsonl') defaults to what the gateway guesses from the file name."""
        if isinstance(data, bytes):
            filename, content = name or "dataset.txt", data
        else:
            path = Path(data)
            filename, content = path.name, path.read_bytes()
        form = {k: v for k, v in {"name": name, "kind": kind}.items() if v}
        files = {"file": (filename, content, "application/octet-stream")}
        return self._json("POST", "/v1/datasets", files=files, data=form)

    def list_datasets(self, cursor: str | None = None, limit: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"cursor": cursor, "limit": limit}.items() if v}
        return self._json("GET", "/v1/datasets", params=params)

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{_segment(dataset_id, 'dataset id')}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._json("DELETE", f"/v1/datasets/{_segment(dataset_id, 'dataset id')}")

    # --- factor cache -----------------------------------------------------------------------
    def factors(self) -> Items:
        """Cached factor entries (``key``, ``bytes``, ``module``, ``kind``, ...)."""
        return page_items(self._json("GET", "/v1/factors"))

    def delete_factor(self, key: str) -> None:
        self._json("DELETE", f"/v1/factors/{_segment(key, 'factor key')}")

    # --- webhooks -----------------------------------------------------------------------------
    def add_webhook(
        self, url: str, events: Sequence[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/webhooks; the answer holds the signing ``secret`` (shown only this once)."""
        body: dict[str, Any] = {"url": url}
        if events:
            body["events"] = list(events)
        if description:
            body["description"] = description
        return self._json("POST", "/v1/webhooks", json=body)

    def list_webhooks(self, cursor: str | None = None, limit: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"cursor": cursor, "limit": limit}.items() if v}
        return self._json("GET", "/v1/webhooks", params=params)

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/webhooks/{_segment(webhook_id, 'webhook id')}")

    def delete_webhook(self, webhook_id: str) -> None:
        self._json("DELETE", f"/v1/webhooks/{_segment(webhook_id, 'webhook id')}")

    def webhook_deliveries(self, webhook_id: str, cursor: str | None = None, limit: int | None = None) -> dict:
        """A page of the endpoint's delivery log (newest first), each with its attempts."""
        params = {k: v for k, v in {"cursor": cursor, "limit": limit}.items() if v}
        return self._json("GET", f"/v1/webhooks/{_segment(webhook_id, 'webhook id')}/deliveries", params=params)

    def redeliver(self, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a finished delivery again (same webhook-id and body, fresh signature)."""
        wid, did = _segment(webhook_id, "webhook id"), _segment(delivery_id, "delivery id")
        return self._json("POST", f"/v1/webhooks/{wid}/deliveries/{did}/redeliver")

    # --- health -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz") or {}

    def ready(self) -> dict[str, Any]:
        """GET /readyz; raises ``CurveditAPIError`` (503) while Redis or every worker is missing."""
        return self._json("GET", "/readyz") or {}

    def is_up(self) -> bool:
        """True when a gateway answers /healthz."""
        try:
            self.health()
        except CurveditAPIError:
            return False
        return True


def page_items(body: Any) -> Items:
    """The item list of a page, whichever envelope key the gateway uses."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("data", "items"):
            if isinstance(body.get(key), list):
                return body[key]
    return []
