"""A wire-level MongoDB stand-in on MockupDB: real pymongo talks to it, change streams included.

``StandIn`` is the entry point; ``python -m standin --port 27017`` runs one as a process.

It advertises a replica-set primary (MongoDB 7.0, wire version 21, sessions) and keeps
everything in memory. It holds what the projector, the demo, the benchmarks and pymongo's own
change-stream tests use, and nothing else (docs/standin.md): insert/update/delete (``$set
$unset $inc``, replacements, upserts, multi, ordered batches), find (equality, ``$in $nin $ne
$gt $lt $exists $or``; sort, skip, limit, projection, batches), findAndModify, distinct, count, ``count_documents``'s
aggregate (``$match $skip $limit $group``/``$sum $sample $project``), create/drop/rename/list of collections,
dropDatabase, the handshake and admin commands a driver's test harness sends (every login is
refused, as unknown credentials are), the
``failCommand`` and ``failGetMoreAfterCursorCheckout`` fail points, and change streams on a
collection, a database or the cluster (``$match`` and ``$project`` stages; fullDocument
default/updateLookup; resumeAfter/startAfter/startAtOperationTime; postBatchResumeToken;
long-polling getMore; drop/dropDatabase/rename/invalidate events), multi-document transactions
and ``$out``. Where the projector relies on a server behaviour, the stand-in follows the server's
own tests and source: tests/test_server_conformance*.py name the file for each (docs/standin.md).

Anything else is refused with an error naming it, among others: indexes, pre/post images,
expanded events, pipeline-style updates, other update and query operators, TLS, compression.
"""

from .changestream import ChangeStreamOpen
from .errors import CommandError, DuplicateKey
from .server import StandIn

__all__ = ["ChangeStreamOpen", "CommandError", "DuplicateKey", "StandIn"]
