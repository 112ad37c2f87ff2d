"""A wire-level MongoDB stand-in on MockupDB: real pymongo talks to it, change streams included.

``StandIn`` is the entry point; ``python -m standin --port 27017`` runs one as a process.
"""

from .changestream import ChangeStreamOpen
from .errors import CommandError, DuplicateKey
from .server import StandIn

__all__ = ["ChangeStreamOpen", "CommandError", "DuplicateKey", "StandIn"]
