"""Cache keys: a sha256 over everything that determines a cached tensor.

A key covers the model weights fingerprint, the module (or shared input key, so gate and up
read one ``A`` entry), the corpus fingerprint, the token budget, ``seq_len``, the Fisher type,
the seed and the dtypes. The arguments are stored beside the value and compared on read, so
a lookup with other arguments can never reuse an entry even under a hash collision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

EntryKind = Literal["A", "G", "A_eig", "G_eig", "S"]


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used for hashing and comparison."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class CacheKey:
    """Identity of one cache entry.

    ``kind``: ``A`` / ``G`` (float32 sum + token count) or ``A_eig`` / ``G_eig`` (eigenvalues and
    eigenvectors) or ``S`` (EK-FAC eigenvalue-correction sum, out x in, + token count; its args
    name the eigenbases it was measured in). ``module``: the module name for ``G``, the shared input key for ``A``.
    ``model``: a human-readable model label (not part of the hash; the fingerprint in ``args`` is).
    """

    kind: EntryKind
    module: str
    args: dict[str, Any] = field(default_factory=dict)
    model: str = ""

    @property
    def digest(self) -> str:
        payload = canonical_json({"kind": self.kind, "module": self.module, "args": self.args})
        return hashlib.sha256(payload.encode()).hexdigest()

    def matches(self, stored_args: Any, stored_kind: Any, stored_module: Any) -> bool:
        """True when a stored entry was written for exactly this key's arguments."""
        return (
            stored_kind == self.kind
            and stored_module == self.module
            and canonical_json(stored_args) == canonical_json(self.args)
        )
