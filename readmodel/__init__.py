"""The Redis read model: the contract between the projector (writes) and the API (reads).

- :mod:`readmodel.keys`: every key and channel, and the positions that order changes
- :mod:`readmodel.records`: what a snapshot holds, as stored and as served
- :mod:`readmodel.changes`: the changes the writer applies
- :mod:`readmodel.scripts`: the Lua scripts (``scripts/*.lua``) that write it
- :mod:`readmodel.writer`: applying batches; :mod:`readmodel.sweeping`: sweeping stale tasks
- :mod:`readmodel.reader`: reading snapshots (sync and asyncio)
- :mod:`readmodel.health`: the projector's health report and the operator's resync request
- :mod:`readmodel.applied`: how far the read model reflects the source (the checkpoint's position)
- :mod:`readmodel.settings`: the settings both processes share (Redis URL, key prefix)

It depends on redis-py alone: nothing of MongoDB, bson or normalization.
"""

from .changes import FINISHED, GONE, LIVE, BalanceChange, Change, TaskChange
from .health import aread_heartbeat_ms
from .keys import Layout, Partition, position
from .reader import aread_snapshot, aread_snapshots, read_snapshot, read_snapshots
from .records import View
from .text import text
from .writer import ReadModel

__all__ = [
    "FINISHED", "GONE", "LIVE", "BalanceChange", "Change", "Layout", "Partition", "ReadModel", "TaskChange", "View",
    "aread_heartbeat_ms", "aread_snapshot", "aread_snapshots", "position", "read_snapshot", "read_snapshots", "text",
]
