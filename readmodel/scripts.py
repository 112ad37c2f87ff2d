"""The Lua scripts that write the read model, read once from their ``.lua`` files."""

from __future__ import annotations

from importlib.resources import files

FINISHED_CAP = 10  # finished tasks remembered per user


def _load(name: str) -> str:
    return files(__package__).joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")


APPLY = _load("apply").replace("$FINISHED_CAP", str(FINISHED_CAP))
SWEEP = _load("sweep")
OWN = _load("own")
