"""The web panel page and the headers it is served with.

The page is one self-contained HTML file with one inline ``<style>`` and one inline ``<script>``.
Its Content-Security-Policy allows exactly those two (by their SHA-256 hashes), connections to
the API's own origin, and nothing else: an injected script or a third-party resource never runs.
It may not be framed unless ``PANEL_FRAME_ANCESTORS`` names who may frame it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib import resources

_PAGE = resources.files("api").joinpath("static/panel.html")
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


@lru_cache(maxsize=1)
def page() -> str:
    """The panel's HTML (read once)."""
    return _PAGE.read_text(encoding="utf-8")


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def content_security_policy(html: str, frame_ancestors: str = "'none'") -> str:
    """A CSP that allows ``html``'s own inline scripts and styles and connections to its own origin only."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, source in _INLINE.findall(html):
        hashes[kind].append(_hash(source))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + (" ".join(hashes["script"]) or "'none'"),
            "style-src " + (" ".join(hashes["style"]) or "'none'"),
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )


@lru_cache(maxsize=4)
def headers(frame_ancestors: str = "'none'") -> dict[str, str]:
    """The panel response's headers: no caching, no referrer, the CSP, no sniffing, no framing."""
    result = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": content_security_policy(page(), frame_ancestors),
        "X-Content-Type-Options": "nosniff",
    }
    if frame_ancestors == "'none'":
        result["X-Frame-Options"] = "DENY"  # for browsers that predate frame-ancestors
    return result
