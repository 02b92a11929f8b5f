"""The store's exception tree (one root, so callers can catch everything the store raises).

StoreError                 root; also "the store file cannot be opened or is busy"
├── NodeNotFound           no node with that name or uuid
├── DuplicateNode          a node with that name already exists
│   └── InstanceInUse      another node has that Nova instance
├── NodeLocked             the node is reserved by another holder (e.g. delete refused)
├── InvalidNode            a field value is invalid; the message names the field
├── StoreCorrupt           the file is damaged or not a powersync store; names the file
├── SchemaTooNew           the file was written by a newer powersync; names the file
└── LeaseLost              a fenced call's lease is no longer held with its token
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of every error the store raises."""


class NodeNotFound(StoreError):
    """No node has the given name or uuid."""


class DuplicateNode(StoreError):
    """A node with the same name already exists."""


class InstanceInUse(DuplicateNode):
    """Another node already has the Nova instance (one instance runs on one node)."""


class NodeLocked(StoreError):
    """The node is reserved (locked) by a holder and the operation needs it free."""


class InvalidNode(StoreError):
    """A node field has an invalid value. The message names the field, never a password."""


class StoreCorrupt(StoreError):
    """The store file is damaged or is not a powersync store. It is never replaced silently."""


class SchemaTooNew(StoreError):
    """The store was written by a newer schema version than this program understands."""


class LeaseLost(StoreError):
    """The lease a call was fenced with has expired or changed hands."""
