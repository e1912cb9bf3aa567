"""The role each command of a node's batch needs (``bigtable_lite.auth``; issue 16).

A batch (``Node.Batch``, ``Node.BatchStream``) is admitted with the ``read`` role, and
the node checks every command against the role of the call's token itself: a command
above it gets PERMISSION_DENIED as its own result, and the rest of its batch runs.

==========  ==========================================================================
role        commands
==========  ==========================================================================
``read``    get_timestamps, read, scan, observed_columns, check_txn_status, read_rows
``write``   + prewrite, commit, one_phase, resolve, rollback, heartbeat,
            register_observed; mutate_rows of the observers' side tables only
``admin``   + mutate_rows of any table
==========  ==========================================================================

Why raw writes are the admin's: they reach around the protocol.  A raw write can
rewrite a committed value in place, slip a write record below a running transaction's
snapshot, leave a lock that never expires, set the oracle's high-water mark back,
or delete the observed-column registry -- all of which the protocol's own commands
refuse or cannot express.  ``write`` clients (observer workers) still write raw the
tables the observers layer keeps beside a Percolator table (``layout.SIDE_SUFFIXES``:
worker leases and counters, parked notifications) and delete exact notification
versions they handled (``DeleteVersion`` in ``<table>.notify``; never a put, which would
forge a notification, nor a range, which would drop pending ones wholesale).
"""

from __future__ import annotations

from collections.abc import Sequence

from bigtable_lite import DeleteVersion, PermissionDenied, RowMutation
from bigtable_lite.auth import Role

from .layout import NOTIFY_SUFFIX, SIDE_SUFFIXES

__all__ = ["COMMAND_ROLES", "check_command", "check_raw_writes"]

COMMAND_ROLES: dict[str, Role] = {
    "get_timestamps": Role.READ, "read": Role.READ, "scan": Role.READ,
    "observed_columns": Role.READ, "check_txn_status": Role.READ, "read_rows": Role.READ,
    "prewrite": Role.WRITE, "commit": Role.WRITE, "one_phase": Role.WRITE,
    "resolve": Role.WRITE, "rollback": Role.WRITE, "heartbeat": Role.WRITE,
    "register_observed": Role.WRITE, "mutate_rows": Role.WRITE,  # + check_raw_writes
}
"""The least role of each command (mutate_rows: and its tables, :func:`check_raw_writes`)."""


def check_command(kind: str, role: Role) -> None:
    """PermissionDenied unless ``role`` may send commands of ``kind``."""
    needed = COMMAND_ROLES[kind]
    if role < needed:
        raise PermissionDenied(f"a {kind} command needs the {needed.label} role; the call's"
                               f" token has {role.label}")


def check_raw_writes(rows: Sequence[RowMutation], role: Role) -> None:
    """PermissionDenied unless ``role`` may write every row of ``rows`` raw."""
    if role >= Role.ADMIN:
        return
    for m in rows:
        table = m.table
        if table.endswith(SIDE_SUFFIXES):
            continue
        if table.endswith(NOTIFY_SUFFIX) and all(type(x) is DeleteVersion for x in m.mutations):
            continue
        raise PermissionDenied(
            f"raw writes to table {table!r} need the admin role (the call's token has"
            f" {role.label}): a write role writes raw only the observers' side tables"
            f" ({', '.join(s.decode() for s in SIDE_SUFFIXES)}) and deletes exact versions"
            f" of {NOTIFY_SUFFIX.decode()}; data changes go through transactions")
