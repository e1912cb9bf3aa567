"""The notification verbs and the log's names, for the observers library above.

What a worker and an operator use (``client.notifications`` is the backend's
:class:`NotificationsBackend`): the values of the verbs, and the notification log's
bucket function and entry decoding (``percolator._notify.log`` owns the bytes).
"""

from ._notify.api import (
    ColumnInfo,
    Cursors,
    DoneRef,
    LogRow,
    MemberInfo,
    NotificationsBackend,
    ParkedCell,
    PullReply,
    PullRequest,
    Registered,
)
from ._notify.log import (
    BACKFILL,
    BUCKETS,
    MAX_COLUMN,
    REPLAY,
    WEAK,
    WRITE,
    bucket_of,
    decode_entry,
    decode_key,
)

__all__ = [
    "BACKFILL", "BUCKETS", "MAX_COLUMN", "REPLAY", "WEAK", "WRITE", "ColumnInfo", "Cursors",
    "DoneRef", "LogRow", "MemberInfo", "NotificationsBackend", "ParkedCell", "PullReply",
    "PullRequest", "Registered", "bucket_of", "decode_entry", "decode_key",
]
