"""A wire-level MongoDB stand-in on MockupDB: real pymongo talks to it, change streams included.

``StandIn`` is the entry point; ``python -m standin --port 27017`` runs one as a process.

It advertises a replica-set primary (wire version 21, sessions) and keeps everything in
memory. Supported: insert/update/delete/findAndModify (``$set $unset $inc $mul $min $max
$setOnInsert $currentDate $push $addToSet $pull``, replacements, upserts, multi, ordered
batches), find (filters with equality, ``$in $nin $ne $gt(e) $lt(e) $exists $regex $not
$size $elemMatch $and $or $nor``; sort, skip, limit, projection, batches), count,
distinct, a small aggregate (``$match $sort $skip $limit $project $count $group``),
list/create/drop of collections and databases, and change streams on a collection, a
database or the cluster (``$match`` stages; fullDocument default/updateLookup/whenAvailable/
required; fullDocumentBeforeChange; resumeAfter/startAfter/startAtOperationTime;
postBatchResumeToken; long-polling getMore; drop/dropDatabase/invalidate events).

Not supported: transactions, secondary indexes (createIndexes is accepted and ignored),
pipeline-style updates, arrayFilters, positional ``$`` updates, aggregation expressions,
authentication, TLS, compression.
"""

from .changestream import ChangeStreamOpen
from .errors import CommandError, DuplicateKey
from .server import StandIn

__all__ = ["ChangeStreamOpen", "CommandError", "DuplicateKey", "StandIn"]
