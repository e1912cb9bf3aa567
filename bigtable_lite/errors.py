"""Errors of the tablet store.

The hierarchy, closed and small (each maps to exactly one gRPC status code in
``bigtable_lite.status``)::

    StorageError
    ├── InvalidArgument        (also ValueError)  caller sent something malformed
    ├── LimitExceeded          (also ValueError)  a row/column/value/batch over its limit
    │   └── ReplyTooLarge                         a reply over the server's byte budget
    ├── WrongTablet                               row not in a tablet this server hosts
    ├── StoreLocked                               another process owns the data directory
    ├── StoreClosed                               the store was closed
    ├── Unavailable                               the server could not be reached
    ├── Unauthenticated                           no valid token came with the call
    ├── PermissionDenied                          the token's role may not call the method
    └── DataCorruption                            stored bytes are damaged or lost

Expected outcomes ("condition not met") are *results*, never exceptions.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error raised by bigtable_lite."""


class InvalidArgument(StorageError, ValueError):
    """A request is malformed: empty row, wrong type, inverted range, ..."""


class LimitExceeded(StorageError, ValueError):
    """A row, column, value or batch is larger than the configured limit."""


class ReplyTooLarge(LimitExceeded):
    """The reply would exceed the server's byte budget for one message: the server stopped
    gathering it.  Read less at once, or stream (``RemoteStore.read_rows`` does so itself)."""


class WrongTablet(StorageError):
    """The row belongs to no tablet hosted by this server."""


class StoreLocked(StorageError):
    """Another process (or another store in this process) owns the data directory."""


class StoreClosed(StorageError):
    """The store has been closed."""


class Unavailable(StorageError):
    """The remote store could not be reached or timed out; the call may be retried."""


class Unauthenticated(StorageError):
    """The server takes calls only with a valid token (``authorization: Bearer TOKEN``)."""


class PermissionDenied(StorageError):
    """The call's token is valid, but its role may not call this method."""


class DataCorruption(StorageError):
    """Stored bytes are damaged or lost: a checksum does not match, a record does not
    decode, or the data directory lost the file that names its database."""
