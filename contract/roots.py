"""The start-up check that no user-facing root contains the service's own directories.

``model.path`` and the data ``path`` fields are confined to ``model_root`` and ``data_root``. If
either root contained the state directory (embedded Redis files, the API key), the output root
(every owner's artifacts) or the dataset directory (every owner's uploads), one API key could
read — or, as a model path, edit and re-export — what belongs to the service or to another
owner. ``check_roots`` refuses such a configuration; the gateway, the workers and ``curvedit up``
call it before they start.
"""

from __future__ import annotations

from pathlib import Path

from contract.settings import Settings

_USER_ROOTS = {"model_root": "CURVEDIT_MODEL_ROOT", "data_root": "CURVEDIT_DATA_ROOT"}
_PRIVATE = {
    "state_dir": "CURVEDIT_STATE_DIR",
    "output_root": "CURVEDIT_OUTPUT_ROOT",
    "dataset_dir": "CURVEDIT_DATASET_DIR",
}


class RootsOverlap(ValueError):
    """A model or data root that contains a directory the service keeps private."""


def root_conflicts(settings: Settings) -> list[str]:
    """One sentence per (user root, private directory) pair where the root contains the directory."""
    problems = []
    for user_field, user_env in _USER_ROOTS.items():
        root = Path(getattr(settings, user_field)).expanduser().resolve()
        for private_field, private_env in _PRIVATE.items():
            private = Path(getattr(settings, private_field)).expanduser().resolve()
            if private == root or private.is_relative_to(root):
                problems.append(f"{user_field} ({user_env}={root}) contains {private_field} ({private_env}={private})")
    return problems


def check_roots(settings: Settings) -> None:
    """Raise ``RootsOverlap`` (with what to change) when a model/data root contains the state,
    output or dataset directory."""
    problems = root_conflicts(settings)
    if problems:
        raise RootsOverlap(
            "refusing to start: "
            + "; ".join(problems)
            + ". A job could then read or edit the service's state and other owners' outputs or uploads. "
            "Point CURVEDIT_MODEL_ROOT / CURVEDIT_DATA_ROOT at directories that hold only models and data, "
            "or move CURVEDIT_STATE_DIR / CURVEDIT_OUTPUT_ROOT / CURVEDIT_DATASET_DIR outside them."
        )
