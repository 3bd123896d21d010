"""JSON in and out, with orjson: the standard library's encoder showed up as a sixth of
the engine's time per job (bench/engine.py profile), orjson takes a tenth of that.

Payloads, results and checkpoints are kept as encoded text, so they are written to the
store and sent to workers without being decoded and encoded again. orjson writes NaN and
infinities as null; JSON cannot carry them, so `dumps` refuses them instead, as the
standard library does with ``allow_nan=False``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

JSON = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
JSONInput = Mapping[str, "JSONInput"] | Sequence["JSONInput"] | str | int | float | bool | None
"""What a caller may pass where JSON goes in: read-only, so a ``dict[str, int]`` fits
(``JSON``'s ``dict`` is invariant, and would refuse it). What is not JSON after all (a
mapping other than a dict, a set inside, NaN) is refused when the value is encoded."""


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    return True


MAX_DEPTH = 200
"""How deep a value may nest. emit frames what it is given (an event's data sits in the
event's entry, in a stream message, in a webhook body), and orjson encodes at most 255
levels: a value it took alone must still encode once framed."""
_FRAME = 255 - MAX_DEPTH


def dumps(value: Any) -> str:
    """Compact JSON text; ValueError for NaN or infinity or nesting past `MAX_DEPTH`,
    TypeError for what is not JSON."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from None
    if "null" in text and not _finite(value):
        raise ValueError("NaN and infinities are not JSON")
    if len(text) > 2 * MAX_DEPTH and text.count("[") + text.count("{") > MAX_DEPTH:
        # Only then can it be that deep (a level is a bracket): look closer.
        framed: Any = value
        for _ in range(_FRAME):
            framed = [framed]
        try:
            orjson.dumps(framed)
        except orjson.JSONEncodeError:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    return text


def loads(text: str | bytes) -> Any:
    """Parse JSON; ValueError when it is not (orjson refuses NaN, as JSON does)."""
    return orjson.loads(text)
