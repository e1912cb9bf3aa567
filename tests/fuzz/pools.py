"""Field values the fuzz draws from: the names and timestamps the node holds, and the edges.

Random bytes almost never name a table, row or transaction the node has, so most
requests would fail their first check; drawing names from these pools (beside random
bytes and edge values) takes requests past validation into the steps and the store,
where a committed canary, undecided transfers and a 1 MiB cell wait for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bigtable_lite import MAX_TS, Limits
from percolator import layout, records
from percolator._node_codec import MAX_TTL_MS
from percolator.oracle import MAX_COUNT, ORACLE_TABLE

from .bank import ACCOUNT_ROWS, BALANCE, BANK_TABLE, Pending
from .target import BIG_ROW, CANARY_ROWS, CANARY_TABLE, FUZZ_TABLE
from .wire import U64, Pools

LIMITS = Limits()

_FUZZ_SYSTEM = (layout.notify_table(FUZZ_TABLE), layout.config_table(FUZZ_TABLE))
READ_TABLES = (FUZZ_TABLE, FUZZ_TABLE, FUZZ_TABLE, *_FUZZ_SYSTEM, CANARY_TABLE, BANK_TABLE,
               layout.notify_table(CANARY_TABLE), ORACLE_TABLE)
"""Tables of every command that does not write: the protected ones too."""
WRITE_TABLES = (FUZZ_TABLE, FUZZ_TABLE, FUZZ_TABLE, *_FUZZ_SYSTEM, b"fuzz-other")
"""Tables of raw writes, prewrites and one-phase commits: never a protected one."""
ODD_TABLES = (b"", b"\x00", b"t" * LIMITS.max_table_bytes, b"t" * (LIMITS.max_table_bytes + 1))

DECIDING = ("CommitRequest", "RollbackRequest", "ResolveRequest", "HeartbeatRequest",
            "CheckTxnStatusRequest")
"""Commands that decide (or keep alive) a transaction: aimed at the pending transfers."""
ROWS = (BIG_ROW, b"small", *ACCOUNT_ROWS[:4], *CANARY_ROWS, b"r", b"\x00sys",
        layout.OBSERVED_ROW, b"high_water", b"\xff" * 4)
ODD_ROWS = (b"", b"x" * LIMITS.max_row_bytes, b"x" * (LIMITS.max_row_bytes + 1))
_USER_COLUMNS = (b"c", BALANCE, b"note", b"\x00ack")
COLUMNS = (*_USER_COLUMNS, *_USER_COLUMNS, b"mark",
           *(kind + c for kind in (layout.DATA, layout.LOCK, layout.WRITE, layout.ROLLBACK)
             for c in _USER_COLUMNS))
ODD_COLUMNS = (b"", b"x" * (LIMITS.max_column_bytes - 1), b"x" * LIMITS.max_column_bytes,
               b"x" * (LIMITS.max_column_bytes + 1))
VALUES = (b"v", b"x" * records.INLINE_VALUE_MAX, b"x" * (records.INLINE_VALUE_MAX + 1),
          b"\x02\x00")
ODD_VALUES = (b"", b"B" * (1 << 20), b"x" * LIMITS.max_value_bytes,
              b"x" * (LIMITS.max_value_bytes + 1))
COUNTS = (1, 2, 1000)
ODD_COUNTS = (0, MAX_COUNT - 1, MAX_COUNT, MAX_COUNT + 1, (1 << 32) - 1)
TTLS = (1, 1000, 60_000)
ODD_TTLS = (0, MAX_TTL_MS, MAX_TTL_MS + 1, (1 << 32) - 1)
ROW_LIMITS = (1, 2, 10, 100)
VERSIONS = (0, 1, 2)
ODD_COUNTS_32 = (0, LIMITS.max_batch_rows, LIMITS.max_batch_rows + 1, (1 << 32) - 1, U64)
SERVICES = ("", "bigtable_lite.v1.TabletService", "percolator.v1.Node",
            "percolator.v1.TimestampOracle", "grpc.health.v1.Health", "nope")
FILES = ("bigtable_lite/v1/tablet.proto", "percolator/v1/node.proto",
         "percolator/v1/oracle.proto", "grpc_health/v1/health.proto", "nope.proto", "")
SYMBOLS = ("percolator.v1.Node", "percolator.v1.Node.Batch", "bigtable_lite.v1.Cell",
           "bigtable_lite.v1.TabletService", "percolator.v1.Command", "grpc.health.v1.Health",
           "nope", "")


def pools(timestamps: Sequence[int], pending: Sequence[Pending],
          messages: Sequence[Any], command: str | None, sessions: Sequence[int] = ()) -> Pools:
    """The pools for one call: ``timestamps`` the node has handed out (committed
    transactions' and a fresh one), ``pending`` the undecided transfers, ``sessions`` the
    ids of Transactions sessions the fuzz began (in its own tables)."""
    now = max(timestamps)
    ts = (now, now + 1, now + 1_000_000, *timestamps, *(p.start_ts for p in pending),
          *(p.start_ts for p in pending))
    odd_ts = (0, 1, 2, 1 << 32, 1 << 63, MAX_TS - 1, MAX_TS)
    rows = (*ROWS, *(row for p in pending for row in (p.source, p.target)))
    owners = tuple(records.lock_owner(t) for t in ts)
    good: dict[str, Sequence[Any]] = {
        "table": READ_TABLES,
        "bigtable_lite.v1.RowMutation.table": WRITE_TABLES,
        "percolator.v1.PrewriteRequest.table": WRITE_TABLES,
        "percolator.v1.OnePhaseRequest.table": WRITE_TABLES,
        "row": rows, "start_row": rows, "end_row": rows,
        "column": COLUMNS, "columns": COLUMNS, "prefixes": COLUMNS,
        "value": VALUES, "value_prefix": owners,
        "ts": ts, "start_ts": ts, "txn_id": (*sessions, *sessions, *ts),
        "percolator.v1.TxnBeginRequest.table": (b"", *WRITE_TABLES),
        # A plausible time range is in order: low bounds from the past, high ones later.
        "min_ts": (0, 1, *timestamps), "max_ts": (now, now + 1, now + 1_000_000, MAX_TS),
        "count": COUNTS, "ttl_ms": TTLS, "limit": ROW_LIMITS, "max_versions": VERSIONS,
        "service": SERVICES, "host": ("", "localhost"), "file_by_filename": FILES,
        "file_containing_symbol": SYMBOLS, "containing_type": SYMBOLS,
        "all_extension_numbers_of_type": SYMBOLS, "list_services": ("", "*"),
    }
    edges: dict[str, Sequence[Any]] = {
        "table": ODD_TABLES, "row": ODD_ROWS, "start_row": ODD_ROWS, "end_row": ODD_ROWS,
        "column": ODD_COLUMNS, "columns": ODD_COLUMNS, "prefixes": ODD_COLUMNS,
        "value": ODD_VALUES, "value_prefix": (b"", b"\x02"),
        "ts": odd_ts, "min_ts": odd_ts, "max_ts": odd_ts, "start_ts": odd_ts,
        "txn_id": odd_ts,
        "count": ODD_COUNTS, "ttl_ms": ODD_TTLS, "limit": ODD_COUNTS_32,
        "max_versions": ODD_COUNTS_32,
    }
    if pending:  # decisions aimed at the undecided transfers: their table, ts and cells
        pending_ts = tuple(p.start_ts for p in pending) * 4
        pending_rows = tuple(row for p in pending for row in (p.source, p.target)) * 4
        for kind in DECIDING:
            good[f"percolator.v1.{kind}.table"] = (BANK_TABLE,) * len(READ_TABLES) + READ_TABLES
            good[f"percolator.v1.{kind}.start_ts"] = (*pending_ts, *ts)
        for message in ("Key", "RowColumns"):
            good[f"percolator.v1.{message}.row"] = (*pending_rows, *rows)
        good["percolator.v1.Key.column"] = (BALANCE,) * len(COLUMNS) + COLUMNS
        good["percolator.v1.RowColumns.columns"] = (BALANCE,) * len(COLUMNS) + COLUMNS
    oneofs = {"percolator.v1.Command": command} if command else {}
    exclusive = {"bigtable_lite.v1.ColumnFilter": ("columns", "prefixes"),
                 "percolator.v1.CellWrite": ("delete", "value"),
                 "percolator.v1.TxnWrite": ("delete", "value")}
    return Pools(good, edges, oneofs, exclusive, tuple(messages))
