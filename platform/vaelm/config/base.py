"""Typed job specs: a pydantic base that forbids unknown keys, and errors a user can act on.

Every spec class derives from `SpecModel`. A field's docstring (the string literal under it) is its
documentation: `vaelm explain` and the CLI help are generated from it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from vaelm.errors import SpecError


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )


def describe_validation_error(exc: ValidationError, *, where: str) -> str:
    """Turn a pydantic ValidationError into lines naming the key, the value, the rule and the fix."""
    lines = [f"{where}: the spec is not valid:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = _short(value)
        if err["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (value {shown}); remove it or check its spelling")
        elif err["type"] == "missing":
            lines.append(f"  - missing key '{key}'; add it to the spec")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}={shown}: {msg}")
    return "\n".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec_hash(data: dict[str, Any]) -> str:
    """A stable content hash of a resolved spec (secrets must already be removed)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def raise_spec_error(exc: ValidationError, *, where: str) -> SpecError:
    return SpecError(describe_validation_error(exc, where=where))
