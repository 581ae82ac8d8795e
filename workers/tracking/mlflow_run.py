"""Each finished job as an MLflow run: ``track_job`` (called by the RQ job before the record is
closed, so its events land before the terminal one).

Off unless ``Settings.mlflow_tracking_uri`` is set (``CURVEDIT_MLFLOW_TRACKING_URI``); ``mlflow``
is the optional ``mlflow`` extra and is imported only then. A run holds:

* params: the resolved spec, flattened (``edit.keep_mass``, ``calibration.max_tokens``, ...);
* metrics: per sweep point ``i`` (step ``i``) ``before/<metric>`` (the unedited model) and
  ``after/<metric>`` plus ``keep_mass``; per search trial (step = trial index)
  ``trial/before/<metric>``, ``trial/after/<metric>``, ``trial/keep_mass``, ``trial/feasible``;
* artifacts: ``curvedit/`` (report.md, the PNG plots, every manifest.json) and, for a job with
  one exported edit, the edited Hugging Face model under ``model/`` — registered as a new version
  of ``output.register_as`` when the spec names one;
* tags: ``curvedit.job_id``, ``curvedit.owner``, ``curvedit.status`` (the run's name is the job id;
  a registered version carries ``curvedit.job_id`` too).

Failures to reach MLflow never fail the edit: each failed attempt is a job event, the next attempt
waits ``mlflow_backoff_s`` × 2ⁿ, and after ``mlflow_attempts`` the result says
``mlflow.error``. A failed attempt's partial run is marked FAILED.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from contract.settings import Settings
from workers.tracking.flatten import flatten_metrics, flatten_params

log = logging.getLogger(__name__)

JOB_TAG = "curvedit.job_id"
REPORT_FILES = ("report.md", "manifest.json")
NOT_MODEL_FILES = frozenset({"manifest.json", "report.md", "delta.safetensors"})
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class EventSink(Protocol):
    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None: ...


def track_job(
    settings: Settings,
    *,
    job_id: str,
    owner: str,
    spec: dict[str, Any],
    status: str,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    events: EventSink,
) -> dict[str, Any] | None:
    """Log the job to MLflow (with retries); returns what goes under ``result.mlflow`` —
    ``{run_id, experiment_id, tracking_uri[, model_version]}`` or ``{error}`` — or None when off."""
    if not settings.mlflow_tracking_uri:
        return None
    last = ""
    for attempt in range(1, settings.mlflow_attempts + 1):
        try:
            info = log_run(settings, job_id=job_id, owner=owner, spec=spec, status=status, result=result, error=error)
        except Exception as exc:  # noqa: BLE001 - any tracking failure is reported, never raised
            last = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("job %s: MLflow attempt %d failed: %s", job_id, attempt, last)
            events.event(
                "warning",
                f"MLflow logging failed (attempt {attempt}/{settings.mlflow_attempts}): {last}",
                {"kind": "mlflow", "attempt": attempt, "error": last},
            )
            if attempt < settings.mlflow_attempts:
                time.sleep(settings.mlflow_backoff_s * 2 ** (attempt - 1))
            continue
        events.event("info", f"logged to MLflow run {info['run_id']}", {"kind": "mlflow", **info})
        return info
    return {"error": last, "attempts": settings.mlflow_attempts}


def log_run(
    settings: Settings,
    *,
    job_id: str,
    owner: str,
    spec: dict[str, Any],
    status: str,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One attempt: create the run, log everything, close it. Raises on any MLflow error."""
    from mlflow.tracking import MlflowClient

    uri = str(settings.mlflow_tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=settings.mlflow_registry_uri or uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        experiment_id = client.create_experiment(
            settings.mlflow_experiment, artifact_location=settings.mlflow_artifact_location
        )
    tags = {JOB_TAG: job_id, "curvedit.owner": owner, "curvedit.status": status}
    if error:
        tags["curvedit.error_code"] = str(error.get("code"))
    run = client.create_run(experiment_id, tags=tags, run_name=job_id)
    run_id = run.info.run_id
    try:
        info: dict[str, Any] = {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri}
        _log_params(client, run_id, flatten_params(spec))
        if result is not None:
            _log_metrics(client, run_id, result)
            info.update(_log_artifacts(client, run_id, job_id, spec, result, settings))
        client.set_terminated(run_id, status=RUN_STATUS.get(status, "FINISHED"))
        return info
    except BaseException:
        with contextlib.suppress(Exception):  # the tracking server may be what failed
            client.set_terminated(run_id, status="FAILED")
        raise


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # the tracking API takes at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])


def _log_metrics(client: Any, run_id: str, result: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics: list[Any] = []
    before = flatten_metrics(result.get("baseline"))
    for step, point in enumerate(result.get("results") or []):
        metrics.append(Metric("keep_mass", float(point["keep_mass"]), now, step))
        metrics += [Metric(f"before/{k}", v, now, step) for k, v in before.items()]
        metrics += [Metric(f"after/{k}", v, now, step) for k, v in flatten_metrics(point.get("metrics")).items()]
    search = result.get("search") or {}
    trial_before = flatten_metrics(search.get("baseline"))
    for trial in search.get("trials") or []:
        step = int(trial["index"])
        metrics.append(Metric("trial/keep_mass", float(trial["keep_mass"]), now, step))
        metrics.append(Metric("trial/feasible", float(bool(trial.get("feasible"))), now, step))
        metrics.append(Metric("trial/layers", float(len(trial.get("layers") or [])), now, step))
        metrics += [Metric(f"trial/before/{k}", v, now, step) for k, v in trial_before.items()]
        after = flatten_metrics(trial.get("metrics"))
        metrics += [Metric(f"trial/after/{k}", v, now, step) for k, v in after.items()]
    for i in range(0, len(metrics), 1000):  # the tracking API takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def _log_artifacts(
    client: Any, run_id: str, job_id: str, spec: dict[str, Any], result: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    info: dict[str, Any] = {}
    out_dir = Path(result.get("output", {}).get("dir") or "")
    if not out_dir.is_dir():
        return info
    for path in sorted(out_dir.iterdir()):
        if path.is_file() and (path.name in REPORT_FILES or path.suffix == ".png"):
            client.log_artifact(run_id, str(path), "curvedit")
    points = result.get("results") or []
    for point in points:
        point_dir = Path(point.get("artifacts", {}).get("dir") or "")
        manifest = point_dir / "manifest.json"
        if point_dir != out_dir and manifest.is_file():
            client.log_artifact(run_id, str(manifest), f"curvedit/{point_dir.name}")
    if len(points) != 1 or not settings.mlflow_log_model:
        return info
    model_dir = Path(points[0].get("artifacts", {}).get("dir") or "")
    files = [
        p for p in sorted(model_dir.iterdir()) if p.is_file() and p.name not in NOT_MODEL_FILES and p.suffix != ".png"
    ]
    if not any(p.name == "config.json" for p in files):
        return info  # output.save_model was false: no model to log
    for path in files:
        client.log_artifact(run_id, str(path), "model")
    info["model_uri"] = f"runs:/{run_id}/model"
    name = (spec.get("output") or {}).get("register_as")
    if name:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        version = client.create_model_version(name, source=source, run_id=run_id, tags={JOB_TAG: job_id})
        info["model_version"] = {"name": name, "version": str(version.version)}
    return info


def track_outcome(
    settings: Settings,
    store: Any,
    job_id: str,
    record: dict[str, Any],
    status: str,
    result: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """``track_job`` for the RQ job: the record's owner and resolved spec, events into the record."""
    if not settings.mlflow_tracking_uri:
        return None
    from contract.store.reporter import RedisReporter

    return track_job(
        settings,
        job_id=job_id,
        owner=record["owner"],
        spec=record["spec"],
        status=status,
        result=result,
        error=error,
        events=RedisReporter(store, job_id),
    )
