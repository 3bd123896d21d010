"""JSON in and out. Payloads, results and checkpoints are kept as encoded text, so they
are written to the store and sent to workers without being decoded and encoded again."""

from __future__ import annotations

import json
from typing import Any

JSON = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON text; raises ValueError for NaN/Infinity and TypeError for non-JSON."""
    return _encoder.encode(value)


def loads(text: str | bytes) -> Any:
    return json.loads(text)
