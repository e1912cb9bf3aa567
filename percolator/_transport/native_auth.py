"""Native admission: who a native connection's HELLO says its caller is, and its role.

The native transport is guarded as the node's gRPC port is (docs/security.md): the TLS
handshake (the node's ``ServerTLS``) comes first, in ``native_server``; then the HELLO's
token is looked up in the node's ``TokenTable`` as gRPC's guard looks up the
``authorization`` metadata.  No valid token: UNAUTHENTICATED (the connection is closed
with that code, nothing is executed).  The caller's role then goes with every frame
the connection carries: a batch's commands are checked against it one by one
(``percolator._node_roles``), as ``Node.Batch`` does for a gRPC caller, so a command
above it is PERMISSION_DENIED alone.  Admission asks for the ``read`` role, the least
(``Node.Batch`` is a reader's too).  On a node without tokens every caller is admin and
the same caller, as on its gRPC port.
"""

from __future__ import annotations

from dataclasses import dataclass

from bigtable_lite import Unauthenticated
from bigtable_lite.auth import Role, TokenTable

from ..v1 import node_pb2 as pb

__all__ = ["NativeCaller", "admit"]


@dataclass(frozen=True, slots=True)
class NativeCaller:
    """A native connection's caller: its role, and who it is (the token's SHA-256
    digest, as ``bigtable_lite.auth.caller_of``; ``b""`` on a node without tokens)."""

    role: Role
    caller: bytes


_ANYONE = NativeCaller(Role.ADMIN, b"")


def admit(tokens: TokenTable | None, hello: pb.NativeHello) -> NativeCaller:
    """The caller of a connection that said ``hello``; Unauthenticated without a valid
    token on a node with ``tokens``."""
    if tokens is None:
        return _ANYONE
    found = tokens.identify(hello.token or None)
    if found is None:
        raise Unauthenticated("this node takes native connections only with a valid token"
                              " in the HELLO")
    role, caller = found
    return NativeCaller(role, caller)
