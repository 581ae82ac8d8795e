"""Checks a job spec against the deployment before it is queued, so bad input is a 4xx naming
the field instead of a failed job later: remote code, model location and contents (layers,
projections, module names — read without torch by ``service.model_inspect``), that the calibration
data is the model's kind (text for a causal LM, ``calibration.images`` for an image classifier),
data files, image sets (a folder or ``.npz`` under the data root) and dataset ids (existence,
ownership), and the output directory. Returns the *resolved* spec that
is stored in the job record (``output.path`` defaulted to the job id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract.outputs import owner_output_root
from contract.paths import PathOutsideRoot, resolve_under
from contract.settings import Settings
from contract.spec import EditJobSpec, ImageSource, PairSource, TextSource, with_model_projections
from service.errors import ApiError
from service.model_inspect import ModelInfo, ModelInspectError, inspect_model
from service.store.datasets import DatasetStore

DATA_SUFFIXES = (".txt", ".jsonl")
IMAGE_ARCHIVE_SUFFIX = ".npz"  # an image set is a class-folder tree or one .npz
TEXT_CALIBRATION = ("dataset_id", "path", "texts", "sources")


def _invalid(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(422, code, f"{field}: {message}", field=field)


def _under(root: Path, rel: str, field: str) -> Path:
    try:
        return resolve_under(root, rel, field)
    except PathOutsideRoot as exc:
        raise _invalid(exc.field, exc.message, exc.code) from exc


def resolve_model_dir(spec: EditJobSpec, settings: Settings) -> tuple[Path, str]:
    """The model directory and the spec field it came from (``model.path`` / ``model.hub_id``)."""
    if spec.model.path is not None:
        return _under(settings.model_root, spec.model.path, "model.path"), "model.path"
    from huggingface_hub import snapshot_download  # no torch; only the local cache is consulted

    try:
        got = snapshot_download(spec.model.hub_id or "", revision=spec.model.revision, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available offline"
        raise _invalid(
            "model.hub_id",
            f"{spec.model.hub_id!r}@{spec.model.revision} is not in the local Hugging Face cache "
            f"({type(exc).__name__}); download it on this machine first or use model.path",
            "model_not_found",
        ) from exc
    return Path(str(got)), "model.hub_id"


def check_model(spec: EditJobSpec, settings: Settings) -> ModelInfo:
    """The model's ``ModelInfo``, after checking that ``spec`` fits it (data kind, targets; the
    projections the caller left out are the model's default, ``contract.spec.with_model_projections``)."""
    if spec.model.trust_remote_code and not settings.allow_remote_code:
        raise ApiError(
            403,
            "remote_code_disabled",
            "model.trust_remote_code is true but this deployment does not allow remote code; "
            "set CURVEDIT_ALLOW_REMOTE_CODE=true on the gateway and workers, or drop the flag",
            field="model.trust_remote_code",
        )
    model_dir, field = resolve_model_dir(spec, settings)
    shown = spec.model.path if field == "model.path" else spec.model.hub_id
    if not model_dir.is_dir():
        raise _invalid(field, f"no model directory at {shown!r} (under {settings.model_root})", "model_not_found")
    if not (model_dir / "config.json").is_file():
        raise _invalid(
            field, f"no config.json at {shown!r}; is this a Hugging Face model directory?", "model_not_found"
        )
    try:
        info = inspect_model(model_dir)
    except ModelInspectError as exc:
        raise _invalid(field, f"cannot read the model at {shown!r}: {exc}", "model_unreadable") from exc
    _check_data_kind(spec, info, shown)
    _check_targets(with_model_projections(spec, info.roles_available()), info)
    return info


def _check_data_kind(spec: EditJobSpec, info: ModelInfo, shown: str | None) -> None:
    """Text calibration for a causal LM, ``calibration.images`` for an image classifier."""
    images = spec.calibration.images
    if info.kind == "image_classifier" and images is None:
        given = next((f"calibration.{n}" for n in TEXT_CALIBRATION if getattr(spec.calibration, n) is not None), "")
        raise _invalid(
            "calibration.images",
            f"the model at {shown!r} is an image classifier ({info.model_type}) but {given or 'the calibration'} "
            "is text: give calibration.images (a class-folder tree or a .npz under the data root) instead",
            "wrong_data_kind",
        )
    if info.kind == "causal_lm" and images is not None:
        raise _invalid(
            "calibration.images",
            f"the model at {shown!r} is a causal language model ({info.model_type}), not an image classifier: "
            "give text (calibration.texts, path, dataset_id or sources) instead of calibration.images",
            "wrong_data_kind",
        )


def _check_layer(layer: int, info: ModelInfo, field: str) -> int:
    n = info.num_layers
    if not -n <= layer < n:
        raise _invalid(
            field,
            f"layer {layer} does not exist: the {info.model_type} model has {n} layers "
            f"(0..{n - 1}, or -{n}..-1 from the end)",
            "unknown_layer",
        )
    return layer % n


def _check_objective_targets(spec: EditJobSpec, info: ModelInfo) -> None:
    """``objective.search``: every layer of every candidate set exists, every projection exists in
    every candidate layer (default sets: every layer)."""
    assert spec.objective is not None
    search = spec.objective.search
    layers: set[int] = set()
    if search.layer_sets is None:
        layers = set(range(info.num_layers))
    else:
        for i, layer_set in enumerate(search.layer_sets):
            for j, x in enumerate(layer_set):
                layers.add(_check_layer(x, info, f"objective.search.layer_sets[{i}][{j}]"))
    available = info.roles_available()
    for i, role in enumerate(search.projections):
        field = f"objective.search.projections[{i}]"
        if role not in available:
            raise _invalid(
                field,
                f"projection {role!r} does not exist in this {info.model_type} model; "
                f"it has: {', '.join(available) or 'none found'}",
                "unknown_projection",
            )
        missing = sorted(x for x in layers if role not in info.roles.get(x, {}))
        if missing:
            raise _invalid(field, f"projection {role!r} is missing in layers {missing}", "unknown_projection")


def _check_objective_sources(spec: EditJobSpec, settings: Settings, datasets: DatasetStore, owner: str) -> None:
    assert spec.objective is not None
    forget = spec.objective.forget
    if forget.discover is not None:
        _check_source(forget.discover, "objective.forget.discover", settings, datasets, owner)
    else:
        pairs = PairSource(dataset_id=forget.dataset_id, path=forget.path, pairs=forget.pairs)
        _check_source(pairs, "objective.forget", settings, datasets, owner)
    _check_source(spec.objective.retain.perplexity, "objective.retain.perplexity", settings, datasets, owner)


def _check_targets(spec: EditJobSpec, info: ModelInfo) -> None:
    if spec.objective is not None:  # the search chooses layers; edit.layers / modules are absent
        _check_objective_targets(spec, info)
        return
    edit = spec.edit
    available = info.roles_available()
    if edit.modules is not None:
        for i, pattern in enumerate(edit.modules):
            if not info.match_modules(pattern):
                examples = ", ".join(m for per in list(info.roles.values())[:1] for m in per.values())
                raise _invalid(
                    f"edit.modules[{i}]",
                    f"{pattern!r} matches no module of the model; MLP modules look like: {examples}",
                    "unknown_module",
                )
    else:
        if edit.layers is not None and not edit.layers:
            raise _invalid(
                "edit.layers",
                f"must not be empty: the {info.model_type} model has {info.num_layers} layers; "
                "omit edit.layers to edit every layer",
                "unknown_layer",
            )
        layers = (
            [_check_layer(x, info, f"edit.layers[{i}]") for i, x in enumerate(edit.layers)]
            if edit.layers is not None
            else list(range(info.num_layers))
        )
        for i, role in enumerate(edit.projections):
            if role not in available:
                raise _invalid(
                    f"edit.projections[{i}]",
                    f"projection {role!r} does not exist in this {info.model_type} model; "
                    f"it has: {', '.join(available) or 'none found'}",
                    "unknown_projection",
                )
            missing = [x for x in layers if role not in info.roles.get(x, {})]
            if missing:
                raise _invalid(
                    f"edit.projections[{i}]",
                    f"projection {role!r} is missing in layers {missing}",
                    "unknown_projection",
                )
    for i, ov in enumerate(edit.overrides):
        if ov.layer is not None:
            _check_layer(ov.layer, info, f"edit.overrides[{i}].layer")
        if ov.projection is not None and ov.projection not in available:
            raise _invalid(
                f"edit.overrides[{i}].projection",
                f"projection {ov.projection!r} does not exist in this model; it has: {', '.join(available)}",
                "unknown_projection",
            )


def _check_source(
    src: TextSource | PairSource | None, prefix: str, settings: Settings, datasets: DatasetStore, owner: str
) -> None:
    if src is None:
        return
    if src.dataset_id is not None:
        field = f"{prefix}.dataset_id"
        rec = datasets.get(src.dataset_id)
        if rec is None or rec.get("owner") != owner:
            raise _invalid(
                field, f"no dataset {src.dataset_id!r} (upload one with POST /v1/datasets)", "unknown_dataset"
            )
        fields = set(rec.get("fields") or [])
        if isinstance(src, PairSource) and not (rec.get("kind") == "jsonl" and {"prefix", "suffix"} <= fields):
            raise _invalid(
                field,
                f"dataset {src.dataset_id!r} has no prefix/suffix records (upload jsonl pairs)",
                "wrong_dataset_kind",
            )
        if not isinstance(src, PairSource) and rec.get("kind") == "jsonl" and "text" not in fields:
            raise _invalid(
                field, f"dataset {src.dataset_id!r} has jsonl records without a 'text' field", "wrong_dataset_kind"
            )
    if src.path is not None:
        field = f"{prefix}.path"
        p = _under(settings.data_root, src.path, field)
        if not p.is_file():
            raise _invalid(field, f"no file {src.path!r} under the data root {settings.data_root}", "file_not_found")
        if p.suffix.lower() not in DATA_SUFFIXES:
            raise _invalid(field, f"{src.path!r} must be a .txt or .jsonl file", "unsupported_file")


def _check_images(src: ImageSource | None, prefix: str, settings: Settings) -> None:
    """An image set: under the data root, and a folder (one sub-folder per class) or a ``.npz``."""
    if src is None:
        return
    field = f"{prefix}.path"
    p = _under(settings.data_root, src.path, field)
    if not p.exists():
        raise _invalid(
            field, f"no folder or .npz file {src.path!r} under the data root {settings.data_root}", "file_not_found"
        )
    if not (p.is_dir() or (p.is_file() and p.suffix.lower() == IMAGE_ARCHIVE_SUFFIX)):
        raise _invalid(field, f"{src.path!r} must be a folder of class sub-folders or a .npz file", "unsupported_file")


def validate_submission(
    spec: EditJobSpec, settings: Settings, owner: str, datasets: DatasetStore, job_id: str
) -> dict[str, Any]:
    """Raise ``ApiError`` (4xx, naming the field) or return the resolved spec as a JSON dict (with the
    model's default projections filled in where the caller gave none)."""
    spec = with_model_projections(spec, check_model(spec, settings).roles_available())
    _check_source(spec.calibration, "calibration", settings, datasets, owner)
    _check_images(spec.calibration.images, "calibration.images", settings)
    for i, src in enumerate(spec.calibration.sources or []):  # factor union
        _check_source(src, f"calibration.sources[{i}]", settings, datasets, owner)
    if spec.objective is not None:
        _check_objective_sources(spec, settings, datasets, owner)
    ev = spec.evaluation
    if ev is not None:
        _check_source(ev.recitation, "evaluation.recitation", settings, datasets, owner)
        _check_source(ev.perplexity, "evaluation.perplexity", settings, datasets, owner)
        if ev.agreement is not None:
            _check_source(ev.agreement.source, "evaluation.agreement.source", settings, datasets, owner)
        if ev.classification is not None:
            _check_images(ev.classification.memorized, "evaluation.classification.memorized", settings)
            _check_images(ev.classification.heldout, "evaluation.classification.heldout", settings)
    resolved = spec.model_dump(mode="json")
    out_rel = spec.output.path or job_id
    out_dir = _under(owner_output_root(settings.output_root, owner), out_rel, "output.path")
    if out_dir.exists():  # only this owner's outputs can be seen: each owner has its own directory
        raise _invalid("output.path", f"{out_rel!r} already exists among your outputs", "output_exists")
    resolved["output"]["path"] = out_rel
    return resolved
