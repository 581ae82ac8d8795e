"""Generate the README's job-spec and configuration reference tables from the code.

The tables live between ``<!-- BEGIN spec-reference -->`` / ``<!-- END spec-reference -->`` and
``<!-- BEGIN config-reference -->`` / ``<!-- END config-reference -->`` markers in README.md;
``tests/test_docs_sync.py`` fails when they drift from ``contract.spec`` / ``contract.settings``.

    python scripts/gen_reference.py            # print both tables
    python scripts/gen_reference.py --write    # rewrite them in README.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from contract.settings import Settings
from contract.spec import EditJobSpec

README = Path(__file__).resolve().parent.parent / "README.md"


def _type_name(annotation: Any) -> str:
    """Readable type: ``float``, ``list[int] or null``, ``one of sampled, empirical``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (Union, UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("min_length", "len ≥"),
                          ("max_length", "len ≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        return f"`{value.model_dump() if isinstance(value, BaseModel) else value}`" if not isinstance(
            value, BaseModel) else "(section defaults)"
    if info.default is PydanticUndefined:
        return "**required**"
    return f"`{info.default}`"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def spec_rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        if nested is not None and nested.__name__ not in ("PairItem",):
            doc = info.description or (nested.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            rows.append(f"| `{path}` | section | {_default(info)} | | {doc.replace('|', '/')} |")
            rows.extend(spec_rows(nested, prefix=f"{path}{'[].' if 'list' in str(info.annotation) else '.'}"))
            continue
        rows.append(
            f"| `{path}` | {_type_name(info.annotation)} | {_default(info)} | {_bounds(info)} | "
            f"{(info.description or '').replace('|', '/')} |"
        )
    return rows


def spec_table() -> str:
    head = ["| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    return "\n".join(head + spec_rows(EditJobSpec))


def config_table() -> str:
    head = ["| variable | default | meaning |", "|---|---|---|"]
    rows = []
    for name, info in Settings.model_fields.items():
        default = info.default if info.default is not PydanticUndefined else None
        rows.append(f"| `CURVEDIT_{name.upper()}` | `{default}` | {(info.description or '').replace('|', '/')} |")
    return "\n".join(head + rows)


def replace_block(text: str, tag: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {tag} -->\n).*?(<!-- END {tag} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- BEGIN {tag} --> ... <!-- END {tag} --> block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> None:
    if "--write" in sys.argv:
        text = README.read_text()
        text = replace_block(text, "spec-reference", spec_table())
        text = replace_block(text, "config-reference", config_table())
        README.write_text(text)
        print(f"rewrote the reference tables in {README}")
    else:
        print(spec_table())
        print()
        print(config_table())


if __name__ == "__main__":
    main()
