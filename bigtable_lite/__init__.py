"""bigtable_lite: a multi-version tablet store on LevelDB, served over gRPC.

A table is a sorted map (row, column, ts) -> value with atomic single-row
check-and-mutate.  Use :class:`LocalStore` in-process or :class:`RemoteStore` over
gRPC; both implement :class:`TabletStore`.

``RemoteStore`` is imported on first use, and with it grpc: an embedded store does
not load gRPC, and a program can configure gRPC's C core (its ``GRPC_VERBOSITY``
environment variable is read once, at import) after importing this package.
"""

from typing import TYPE_CHECKING

from ._datadir import disk_bytes, is_store
from ._encoding import MAX_TS
from ._engine import SYNC_MODES, SyncMode
from ._local import LocalStore, UncheckedStore
from ._model import (
    ALL_TIME,
    DEFAULT_LIMITS,
    NOT_ATTEMPTED,
    Cell,
    Condition,
    DeleteRange,
    DeleteVersion,
    Limits,
    Mutation,
    MutationResult,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletInfo,
    TimeRange,
    ValuePrefixAt,
    VersionAt,
    fast_init,
)
from ._store import StoreOps, TabletStore
from .errors import (
    DataCorruption,
    InvalidArgument,
    LimitExceeded,
    PermissionDenied,
    ReplyTooLarge,
    StorageError,
    StoreClosed,
    StoreLocked,
    Unauthenticated,
    Unavailable,
    WrongTablet,
)

if TYPE_CHECKING:
    from .remote import RemoteStore

__all__ = [
    "ALL_TIME", "DEFAULT_LIMITS", "MAX_TS", "NOT_ATTEMPTED", "SYNC_MODES", "SyncMode", "Cell",
    "Condition", "DataCorruption", "DeleteRange", "DeleteVersion", "InvalidArgument",
    "LimitExceeded", "Limits", "LocalStore", "Mutation", "MutationResult", "NoValuePrefixAt",
    "NoVersionIn", "PermissionDenied", "Put", "RemoteStore", "ReplyTooLarge", "Row",
    "RowMutation", "RowRead", "ScanRequest", "StorageError", "StoreClosed", "StoreLocked",
    "StoreOps", "TabletInfo", "TabletStore", "TimeRange", "Unauthenticated", "Unavailable",
    "UncheckedStore", "ValuePrefixAt", "VersionAt", "WrongTablet", "disk_bytes", "fast_init",
    "is_store",
]


def __getattr__(name: str) -> object:
    if name == "RemoteStore":
        from .remote import RemoteStore

        return RemoteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
