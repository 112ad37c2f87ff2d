"""Redis replies as text: redis-py hands back bytes unless the client decodes responses."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """``value`` as a str (bytes are UTF-8)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_map(mapping: dict[Any, Any]) -> dict[str, str]:
    """A hash reply with str keys and values."""
    return {text(k): text(v) for k, v in mapping.items()}
