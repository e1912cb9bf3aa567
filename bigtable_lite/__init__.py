"""bigtable_lite: a multi-version tablet store on LevelDB, served over gRPC.

A table is a sorted map (row, column, ts) -> value with atomic single-row
check-and-mutate.  Use :class:`LocalStore` in-process or :class:`RemoteStore` over
gRPC; both implement :class:`TabletStore`.
"""

from .encoding import MAX_TS
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
from .local import LocalStore, UncheckedStore
from .model import (
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
)
from .remote import RemoteStore
from .store import StoreOps, TabletStore

__all__ = [
    "ALL_TIME", "DEFAULT_LIMITS", "MAX_TS", "NOT_ATTEMPTED", "Cell", "Condition",
    "DataCorruption", "DeleteRange", "DeleteVersion", "InvalidArgument",
    "LimitExceeded", "Limits", "LocalStore", "Mutation", "MutationResult", "NoValuePrefixAt",
    "NoVersionIn", "PermissionDenied", "Put", "RemoteStore", "ReplyTooLarge", "Row",
    "RowMutation", "RowRead", "ScanRequest", "StorageError", "StoreClosed", "StoreLocked",
    "StoreOps", "TabletInfo", "TabletStore", "TimeRange", "Unauthenticated", "Unavailable",
    "UncheckedStore", "ValuePrefixAt", "VersionAt", "WrongTablet",
]
