"""Server errors as MongoDB reports them: a numeric code, its name, and error labels."""

from __future__ import annotations

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    9: "FailedToParse",
    11: "UserNotFound",
    14: "TypeMismatch",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    28: "PathNotViable",
    43: "CursorNotFound",
    50: "MaxTimeMSExpired",
    59: "CommandNotFound",
    63: "StaleShardVersion",
    48: "NamespaceExists",
    66: "ImmutableField",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    115: "CommandNotSupported",
    133: "FailedToSatisfyReadPreference",
    150: "StaleEpoch",
    189: "PrimarySteppedDown",
    234: "RetryChangeStream",
    260: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    9001: "SocketException",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13388: "StaleConfig",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
}

# Codes a real server labels ResumableChangeStreamError on a change stream getMore.
RESUMABLE_CHANGE_STREAM_CODES = frozenset(
    {6, 7, 43, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436}
)
# Codes a real server labels RetryableWriteError on a write command.
RETRYABLE_WRITE_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})

RESUMABLE = "ResumableChangeStreamError"
NON_RESUMABLE = "NonResumableChangeStreamError"
RETRYABLE_WRITE = "RetryableWriteError"


class CommandError(Exception):
    """A command failed; the reply is ``{"ok": 0, "code": ..., "errmsg": ...}``."""

    def __init__(self, code: int, message: str, labels: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.labels = list(labels)

    def reply(self) -> dict:
        doc = {
            "ok": 0.0,
            "errmsg": self.message,
            "code": self.code,
            "codeName": CODE_NAMES.get(self.code, f"Location{self.code}"),
        }
        if self.labels:
            doc["errorLabels"] = list(self.labels)
        return doc


class DuplicateKey(CommandError):
    """An insert or upsert collided with an existing _id."""

    def __init__(self, namespace: str, _id: object) -> None:
        super().__init__(
            11000, f"E11000 duplicate key error collection: {namespace} index: _id_ dup key: {{ _id: {_id!r} }}"
        )
        self.key_value = {"_id": _id}


def history_lost() -> CommandError:
    """Resuming from a point the oplog no longer holds (code 286)."""
    return CommandError(
        286, "Resume of change stream was not possible, as the resume point may no longer be in the oplog.", [NON_RESUMABLE]
    )
