"""The role each command of a node's batch needs (``bigtable_lite.auth``; issue 16).

A batch (``Node.Batch``, ``Node.BatchStream``) is admitted with the ``read`` role, and
the node checks every command against the role of the call's token itself: a command
above it gets PERMISSION_DENIED as its own result, and the rest of its batch runs.

==========  ==========================================================================
role        commands
==========  ==========================================================================
``read``    get_timestamps, read, scan, observed_columns, check_txn_status, read_rows,
            report_snapshots (a reader's snapshots hold garbage collection back)
``write``   + prewrite, commit, one_phase, resolve, rollback, heartbeat,
            register_observed
``admin``   + mutate_rows; collect_garbage (a pass now: an operator's)
==========  ==========================================================================

Why raw writes are the admin's: they reach around the protocol.  A raw write can
rewrite a committed value in place, slip a write record below a running transaction's
snapshot, leave a lock that never expires, set the oracle's high-water mark back,
delete the observed-column registry, or forge, drop or park notifications and the
workers' reported counters -- all of which the protocol's own commands refuse or cannot
express.  Observer workers need none: the notification log, parking and their counters
are the node's, reached through the ``percolator.v1.Notifications`` verbs
(``percolator._notify.service``), which check their own roles.
"""

from __future__ import annotations

from bigtable_lite import PermissionDenied
from bigtable_lite.auth import Role

__all__ = ["COMMAND_ROLES", "check_command"]

COMMAND_ROLES: dict[str, Role] = {
    "get_timestamps": Role.READ, "read": Role.READ, "scan": Role.READ,
    "observed_columns": Role.READ, "check_txn_status": Role.READ, "read_rows": Role.READ,
    "clock": Role.READ,
    "prewrite": Role.WRITE, "commit": Role.WRITE, "one_phase": Role.WRITE,
    "resolve": Role.WRITE, "rollback": Role.WRITE, "heartbeat": Role.WRITE,
    "register_observed": Role.WRITE, "mutate_rows": Role.ADMIN,
    # A reader holds snapshots: its reports keep GC below them.  A pass is an operator's.
    "report_snapshots": Role.READ, "collect_garbage": Role.ADMIN,
}
"""The least role of each command."""


def check_command(kind: str, role: Role) -> None:
    """PermissionDenied unless ``role`` may send commands of ``kind``."""
    needed = COMMAND_ROLES[kind]
    if role < needed:
        raise PermissionDenied(f"a {kind} command needs the {needed.label} role; the call's"
                               f" token has {role.label}")
