"""Response shapes, for the OpenAPI page and for response validation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, create_model

from readmodel.records import FINISHED_TASK_FIELDS, HISTORY_TASK_FIELDS, LIVE_TASK_FIELDS


class Balance(BaseModel):
    usdCredit: str = Field(description="exact decimal string, e.g. '1.250000'", examples=["1.250000"])
    points: int
    exp: int


# Computed by the API when it reads a task (api/stalled.py), never stored by the projector.
READ_TIME_TASK_FIELDS = {
    "stalled": (bool, Field(default=False, description="its status and progress have not moved (progressMovedAt) "
                                                       "for longer than STALLED_FACTOR typical durations of its tool "
                                                       "(STALLED_AFTER_S when unknown); a change that only touches "
                                                       "the document (updatedAt, a heartbeat, the same status again) "
                                                       "does not count; false once it moves")),
    "stalledAt": (str | None, Field(default=None, description="ISO-8601 UTC: when it counts as stalled if its status "
                                                              "and progress do not move (the panel flags it then)")),
}

# Built from the read model's table of task fields: a field added there is served and documented.
if TYPE_CHECKING:  # a model built at run time is no type to a type checker

    class LiveTask(BaseModel): ...

else:
    LiveTask = create_model(
        "LiveTask",
        __doc__="A task that is still running (or queued), as every platform shows it.",
        **{name: (kind, Field(default=None if name in HISTORY_TASK_FIELDS else ..., description=text or None))
           for name, (kind, text) in LIVE_TASK_FIELDS.items()},
        **READ_TIME_TASK_FIELDS,
    )


# The finished shape: the read model's finished fields, described as for a live task unless said here.
_FINISHED_DESCRIPTIONS = {"status": "the final status, e.g. completed, failed, payment_failed"}
if TYPE_CHECKING:

    class FinishedTask(BaseModel): ...

else:
    FinishedTask = create_model(
        "FinishedTask",
        __doc__="A task that reached a terminal status in the last ten minutes (newest first, at most 10).",
        **{name: (LIVE_TASK_FIELDS[name][0],
                  Field(description=_FINISHED_DESCRIPTIONS.get(name, LIVE_TASK_FIELDS[name][1]) or None))
           for name in FINISHED_TASK_FIELDS},
        finishedAt=(str | None, Field(description="ISO-8601 UTC: the document's last update")),
    )


class PartitionPosition(BaseModel):
    partition: str = Field(description="K/N: the projector partition (0/1 when the stream is not split)")
    position: str | None = Field(description="the cluster time this partition applied the stream through; "
                                             "null before its first checkpoint")
    lagMs: int | None = Field(description="how far behind the source it was when it applied that far")
    appliedAt: str | None = Field(description="ISO-8601 UTC: when it applied that far (its last checkpoint)")


class Source(BaseModel):
    """How fresh the snapshot is: it reflects the MongoDB source at least through ``position``."""

    position: str | None = Field(
        description='a cluster time "%010d.%010d" (seconds.increment): every change up to it is in this snapshot '
                    "(the smallest over the partitions); null until every partition checkpointed",
        examples=["1795597328.0000000003"],
    )
    lagMs: int | None = Field(description="how many ms behind the source the projector was when it applied through "
                                          "position (the largest over the partitions)")
    appliedAt: str | None = Field(description="ISO-8601 UTC: the oldest partition's last checkpoint; a projector "
                                              "that stopped shows here (it checkpoints every second, idle or not)")
    partitions: list[PartitionPosition]


class Snapshot(BaseModel):
    """One user's status: what every stream event carries too."""

    masterAccountId: str
    version: int = Field(description="increases with every visible change; 0 when nothing is known")
    updatedAt: str | None
    balance: Balance
    liveTasks: list[LiveTask]
    liveTasksOmitted: int = Field(
        0, ge=0, description="live tasks left out of liveTasks (it lists the oldest LIVE_TASKS_SHOWN)"
    )
    recentlyFinished: list[FinishedTask] = Field(
        default_factory=list, description="how recent tasks ended, so a client that was away never misses it"
    )
    source: Source | None = Field(default=None, description="up to which source position this snapshot reflects")


class ReportTask(BaseModel):
    idHash: str
    status: str
    costUsd: float | None
    progress: float | None
    sourcePlatform: str | None
    updatedAt: str | None
    startedAt: str | None
    toolId: str | None


class StatusReport(BaseModel):
    """The shape the bots consume today."""

    points: int
    exp: int
    walletAddress: None = None
    liveTasks: list[ReportTask]


class StatusText(BaseModel):
    masterAccountId: str
    version: int
    platform: Literal["telegram", "discord"]
    parseMode: str | None = Field(description="Telegram's parse_mode to send the text with; null for Discord")
    allowedMentions: dict[str, list[str]] | None = Field(
        default=None,
        description='Discord: the `allowed_mentions` to send the text with (`{"parse": []}`: ping nobody); null for Telegram',
    )
    text: str = Field(description="fits the platform's limit (Telegram 4096, Discord 2000 characters)")
    source: Source | None = Field(default=None, description="up to which source position the text reflects")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    projectorHeartbeatAgeMs: int
