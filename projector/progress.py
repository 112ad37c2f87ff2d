"""Read a task's progress from whatever shape its producer wrote, as a percentage in 0..100.

Producers write progress in many shapes. Sources are tried in order and the first usable one
wins; garbage (NaN, negatives, values far above 100, booleans, nested junk) is skipped:

1. ``progressPercent`` (top level, then ``metadata``): a percentage.
2. ``progress`` (top level, then ``metadata``): a fraction when <= 1, else a percentage; a string
   such as ``"47%"`` is always a percentage; a mapping is read as ``{percent}``, ``{current,
   total}`` or ``{step, steps}``.
3. Step counts (top level, then ``metadata``): ``currentStep/totalSteps``, ``step/steps``,
   ``current/total``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .values import is_mapping

_PERCENT_TEXT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")
_NUMBER_TEXT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*$")
_STEP_PAIRS = (("currentStep", "totalSteps"), ("step", "steps"), ("current", "total"))
# A producer that rounds 99.996 up may write 100.004; anything further out is garbage.
_OVERSHOOT = 1.0
_MAX_TEXT = 32  # a progress written as text is short; longer strings are garbage


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif hasattr(value, "to_decimal"):  # Decimal128
            number = float(value.to_decimal())
        else:
            return None
    except (ValueError, ArithmeticError):  # OverflowError: an int beyond a double's range
        return None
    return number if math.isfinite(number) else None


def _clamp_percent(value: float | None) -> float | None:
    if value is None or value < 0 or value > 100 + _OVERSHOOT:
        return None
    return round(min(value, 100.0), 1)


def _as_percent(value: Any) -> float | None:
    """A value that is documented to be a percentage."""
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            return None
        match = _PERCENT_TEXT.match(value) or _NUMBER_TEXT.match(value)
        return _clamp_percent(float(match.group(1))) if match else None
    return _clamp_percent(_number(value))


def _steps(container: Mapping[str, Any]) -> float | None:
    for current_key, total_key in _STEP_PAIRS:
        if current_key not in container or total_key not in container:
            continue  # most documents have no step counts: six lookups and conversions fewer
        current, total = _number(container.get(current_key)), _number(container.get(total_key))
        if current is None or total is None or total <= 0 or current < 0 or current > total:
            continue
        return round(current / total * 100, 1)
    return None


def _as_progress(value: Any) -> float | None:
    """A ``progress`` value: fraction (<= 1) or percentage, '47%', or a mapping."""
    if is_mapping(value):
        return _as_percent(value.get("percent")) if "percent" in value else _steps(value)
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            return None
        if _PERCENT_TEXT.match(value):
            return _as_percent(value)
        match = _NUMBER_TEXT.match(value)
        value = float(match.group(1)) if match else None
    number = _number(value)
    if number is None:
        return None
    return _clamp_percent(number * 100 if 0 <= number <= 1 else number)


def read_progress(doc: Mapping[str, Any]) -> float | None:
    """The reported progress of a task document in 0..100, or None when it reports none."""
    metadata = doc.get("metadata")
    containers = [doc, metadata] if is_mapping(metadata) else [doc]
    readers = ((_as_percent, "progressPercent"), (_as_progress, "progress"))
    for reader, key in readers:
        for container in containers:
            if key in container:
                percent = reader(container[key])
                if percent is not None:
                    return percent
    for container in containers:
        percent = _steps(container)
        if percent is not None:
            return percent
    return None
