"""Building an ``EditJobSpec`` from a ``--spec`` file and/or command-line flags, with errors that name
the option or the spec field (exit code 2) instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contract.spec import EditJobSpec
from service.cli.context import fail


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line per field: ``<source>: field 'edit.keep_mass': <message>``. Union types produce one
    error per member at the same location; only the first is kept."""
    by_field: dict[str, str] = {}
    for err in exc.errors():
        parts = [str(p) for p in err.get("loc", ())]
        # pydantic puts union-member / validator names into loc ("float", "list[...]", "function-after[...]")
        parts = [p for p in parts if not p.startswith(("list[", "float", "constrained", "function-", "int"))]
        loc = ".".join(parts) or "(root)"
        by_field.setdefault(loc, str(err.get("msg", "invalid")).removeprefix("Value error, "))
    return "\n".join(f"{source}: field '{loc}': {msg}" for loc, msg in by_field.items())


def read_spec_file(path: Path, option: str = "--spec") -> dict[str, Any]:
    """The JSON object in ``path``; missing file or malformed JSON exits 2 naming ``option``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        fail(f"{option}: file not found: {path}")
    except OSError as exc:
        fail(f"{option}: cannot read {path}: {exc.strerror or exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option}: {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if not isinstance(data, dict):
        fail(f"{option}: {path} must hold a JSON object (the job spec), not {type(data).__name__}")
    return data


def validate_spec(data: dict[str, Any], source: str) -> EditJobSpec:
    try:
        return EditJobSpec.model_validate(data)
    except ValidationError as exc:
        fail(describe_validation_error(exc, source))


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        fail(f"{option}: expected comma-separated integers like '21,22,23' or '-2,-1', got {text!r}")


def _float_or_list(text: str, option: str) -> float | list[float]:
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        fail(f"{option}: expected a number in (0, 1] or a comma-separated sweep like '0.5,0.7,0.9', got {text!r}")
    if not values:
        fail(f"{option}: no value given")
    return values[0] if len(values) == 1 else values


def apply_flags(
    data: dict[str, Any],
    *,
    model: str | None = None,
    hub_id: str | None = None,
    calibration: str | None = None,
    layers: str | None = None,
    projections: str | None = None,
    keep_mass: str | None = None,
    max_tokens: int | None = None,
    seq_len: int | None = None,
    batch_size: int | None = None,
    fisher: str | None = None,
    output: str | None = None,
    estimator: str | None = None,
) -> dict[str, Any]:
    """Overlay flags on a spec dict (a flag wins over the file)."""
    spec = json.loads(json.dumps(data))  # deep copy
    if model is not None or hub_id is not None:
        section = {k: v for k, v in spec.get("model", {}).items() if k not in ("path", "hub_id")}
        section.update({"path": model} if model is not None else {"hub_id": hub_id})
        spec["model"] = section
    if calibration is not None:
        section = {
            k: v for k, v in spec.get("calibration", {}).items() if k not in ("path", "dataset_id", "texts", "sources")
        }
        key = "dataset_id" if calibration.startswith("ds_") else "path"
        section[key] = calibration
        spec["calibration"] = section
    for key, value in (("max_tokens", max_tokens), ("seq_len", seq_len), ("batch_size", batch_size)):
        if value is not None:
            spec.setdefault("calibration", {})[key] = value
    if fisher is not None:
        spec.setdefault("curvature", {})["fisher"] = fisher
    if estimator is not None:
        spec.setdefault("curvature", {})["estimator"] = estimator
    if layers is not None:
        spec.setdefault("edit", {})["layers"] = _int_list(layers, "--layers")
    if projections is not None:
        spec.setdefault("edit", {})["projections"] = [p for p in projections.replace(" ", "").split(",") if p]
    if keep_mass is not None:
        spec.setdefault("edit", {})["keep_mass"] = _float_or_list(keep_mass, "--keep-mass")
    if output is not None:
        spec.setdefault("output", {})["path"] = output
    return spec


def build_spec(spec_file: Path | None, **flags: Any) -> tuple[dict[str, Any], EditJobSpec]:
    """(the JSON body to send, the validated spec) from ``--spec`` and flags."""
    data = read_spec_file(spec_file) if spec_file is not None else {}
    data = apply_flags(data, **flags)
    if spec_file is None and "model" not in data:
        fail("give --spec FILE, or at least --model (or --hub-id) and --calibration")
    if "calibration" not in data:
        fail("--calibration: the spec needs a calibration corpus (a file under the data root or a ds_ id)")
    source = f"--spec {spec_file}" if spec_file is not None else "flags"
    return data, validate_spec(data, source)
