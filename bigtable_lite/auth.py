"""Auth: bearer tokens and the role each grants, read from a token file.

A served store (``bigtable_lite.server.build_server``) given a :class:`TokenTable` takes a
call only with ``authorization: Bearer TOKEN`` in its metadata (gRPC's access-token
credentials send exactly that), and only if the token's role reaches the role the called
method's service declared for it (``ServiceRegistration.roles``).  Roles are ordered, each
including the ones below it:

==========  ===========================================================================
role        may call
==========  ===========================================================================
``read``    reads, scans, tablet listing, timestamps, oracle figures, reflection
``write``   + transactions and observer workers (``percolator.v1.Node`` batches)
``admin``   + raw store writes, splits, compaction; every method no service declared
==========  ===========================================================================

Health checking needs no token (load balancers and probes have none).  A method whose
service did not declare a role is admin-only: forgetting a declaration closes the method,
it never opens it.

The token file holds one ``TOKEN ROLE`` per line; ``#`` starts a comment, blank lines are
ignored.  A token is 16 to 256 printable ASCII characters without spaces (shorter ones are
refused: they are guessed, not kept secret); a token listed twice is refused.  Tokens are
kept as SHA-256 digests and a presented token is compared with every one of them with
:func:`hmac.compare_digest`, so how long a check takes does not depend on how much of a
token was right.  The file is read once, when the server is built.

Handlers learn the role their call was granted with :func:`role_of` (a dictionary
lookup, no parsing): e.g. a service that checks each command of a batch itself; and who
called with :func:`caller_of` (the token's digest, never the token): e.g. a service
holding state for its callers between calls keeps each caller's apart.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping

import grpc

__all__ = ["METADATA_KEY", "MIN_TOKEN_CHARS", "Role", "TokenTable", "bearer", "caller_of",
           "grant", "parse_tokens", "role_of"]

METADATA_KEY = "authorization"
"""Metadata key of the token (gRPC's access-token credentials use it)."""
_SCHEME = "Bearer "
MIN_TOKEN_CHARS = 16
_MAX_TOKEN_CHARS = 256
_ROLE_ATTRIBUTE = "_bigtable_lite_role"
_CALLER_ATTRIBUTE = "_bigtable_lite_caller"


class Role(enum.IntEnum):
    """What a token may do; a higher role may do everything a lower one may."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def parse_tokens(lines: Iterable[str], source: str = "token file") -> dict[str, Role]:
    """``TOKEN ROLE`` lines -> {token: role}; ValueError naming the line of the first mistake."""
    roles = {role.label: role for role in Role}
    tokens: dict[str, Role] = {}
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{source}, line {number}"
        if len(words) != 2:
            raise ValueError(f"{where}: expected TOKEN ROLE, found {len(words)} words")
        token, label = words
        if label not in roles:
            raise ValueError(f"{where}: unknown role {label!r} (roles: read, write, admin)")
        _check_token(token, where)
        if token in tokens:
            raise ValueError(f"{where}: this token is listed already")
        tokens[token] = roles[label]
    return tokens


def _check_token(token: str, where: str) -> None:
    if not MIN_TOKEN_CHARS <= len(token) <= _MAX_TOKEN_CHARS:
        raise ValueError(f"{where}: a token must have {MIN_TOKEN_CHARS} to {_MAX_TOKEN_CHARS}"
                         f" characters, this one has {len(token)}")
    if not all("!" <= ch <= "~" for ch in token):
        raise ValueError(f"{where}: a token may hold printable ASCII characters only")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


class TokenTable:
    """The tokens a server accepts and the role of each; immutable once built."""

    def __init__(self, tokens: Mapping[str, Role]) -> None:
        for token in tokens:
            _check_token(token, "token")
        if not tokens:
            raise ValueError("no tokens: nobody could call the server")
        self._entries = tuple((_digest(token), Role(role)) for token, role in tokens.items())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TokenTable:
        """Read a token file (OSError if unreadable, ValueError if malformed or empty)."""
        with open(path, encoding="utf-8") as f:
            tokens = parse_tokens(f, str(path))
        if not tokens:
            raise ValueError(f"{path}: no tokens (one TOKEN ROLE per line)")
        return cls(tokens)

    def __len__(self) -> int:
        return len(self._entries)

    def role(self, token: str | None) -> Role | None:
        """The role of ``token``, or None if it is not one of ours (constant time per entry)."""
        found = self.identify(token)
        return None if found is None else found[0]

    def identify(self, token: str | None) -> tuple[Role, bytes] | None:
        """The role of ``token`` and who holds it (its digest), or None if it is not one of
        ours (constant time per entry)."""
        if token is None:
            return None
        digest = _digest(token)
        found: tuple[Role, bytes] | None = None
        for known, role in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(known, digest):
                found = (role, known)
        return found

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None
                     ) -> tuple[Role, bytes] | None:
        """The role and caller (:meth:`identify`) of the bearer token in a call's metadata,
        or None."""
        return self.identify(bearer(metadata))


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of ``authorization: Bearer TOKEN`` in a call's metadata, if any."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str) and value.startswith(_SCHEME):
            return value[len(_SCHEME):]
    return None


def grant(context: grpc.ServicerContext, role: Role, caller: bytes = b"") -> None:
    """Record the role a call was granted and who made it (the server's guard does, before
    the handler runs)."""
    setattr(context, _ROLE_ATTRIBUTE, role)
    setattr(context, _CALLER_ATTRIBUTE, caller)


def role_of(context: grpc.ServicerContext) -> Role:
    """The role the call of ``context`` was granted.

    ``Role.ADMIN`` on a server without tokens (everyone may do everything there), and
    for a call that did not pass through the guard of ``build_server`` (no
    authentication at all).
    """
    role: Role = getattr(context, _ROLE_ATTRIBUTE, Role.ADMIN)
    return role


def caller_of(context: grpc.ServicerContext) -> bytes:
    """Who made the call of ``context``: the SHA-256 digest of its token.

    ``b""`` on a server without tokens (every caller is the same one there), and for a
    call that did not pass through the guard of ``build_server``.
    """
    caller: bytes = getattr(context, _CALLER_ATTRIBUTE, b"")
    return caller
