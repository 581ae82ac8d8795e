"""Finding text that cannot be stored or sent back: lone UTF-16 surrogates in decoded JSON.

JSON may spell a lone surrogate (``"\\ud800"``); Python decodes it into a ``str`` that no UTF-8
encoder accepts, so a record holding one could never be rendered again. ``find_surrogate(value)``
returns the dotted path of the first offending string (a key or a value), e.g.
``calibration.texts[0]``, or None when every string is encodable. The gateway's request layer
(``service.middleware.JsonTextMiddleware``) and the dataset upload check use it.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _join(path: str, key: str) -> str:
    shown = key if _IDENT.fullmatch(key) else repr(key).encode("ascii", "backslashreplace").decode()
    return f"{path}.{shown}" if path else shown


def find_surrogate(value: Any, path: str = "") -> str | None:
    """Dotted path of the first string (dict key or value) holding a lone surrogate, else None.

    An offending key is named by its (escaped) repr; the root value itself is ``""``."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if has_surrogate(item):
                return where
        elif isinstance(item, dict):
            children = []
            for k, v in item.items():
                key = str(k)
                if has_surrogate(key):
                    return _join(where, key)
                children.append((v, _join(where, key)))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(v, f"{where}[{i}]") for i, v in enumerate(item)]))
    return None
