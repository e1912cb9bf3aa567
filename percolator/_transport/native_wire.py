"""Native frames: the node's batches over a plain socket, the encoding and the reader.

The format (``proto/percolator/v1/node.proto``, "The native transport") is, per frame:

=========  ==========  ==============================================================
bytes      field       meaning
=========  ==========  ==============================================================
0..3       length      payload bytes, big-endian; at most the node's message limit
4          kind        HELLO 1, BATCH 2, TXN 6 (client); WELCOME 3, REPLY 4, CLOSE 5
                       (node)
5..        payload     a serialized NativeHello, BatchRequest, TxnStreamRequest,
                       NativeWelcome, BatchResponse or TxnStreamResponse (a REPLY
                       answers what it replies to), or CommandError, by kind
=========  ==========  ==============================================================

TXN frames carry the Transactions service's requests (``percolator._txn_service``),
answered as on its gRPC ``Stream``: one transport for the node's batches and for
callers of the service in any language (docs/grpc.md, "The native transport").

Why a socket of our own beside gRPC: gRPC-Python hands every message between
threads several times (measured ~1.2 ms of client and ~0.85 ms of node CPU per
remote transfer over ``Node.BatchStream``, against ~0.28 + ~0.30 ms for the same
bytes in these frames).  The reader reads what the kernel has (one ``recv`` carries a
whole small frame) and bounds every wait with the socket's own receive timeout
(``SO_RCVTIMEO``: one system call per read, where a Python socket timeout adds a
``poll`` before each).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Mapping

__all__ = ["BATCH", "CLOSE", "HEADER", "HELLO", "KINDS", "REPLY", "TXN", "VERSION", "WELCOME",
           "FrameError", "FrameReader", "FrameTooLarge", "PeerClosed", "ReadTimeout", "encode",
           "set_send_timeout"]

VERSION = 1
"""NativeHello.version of this release."""

HELLO, BATCH, WELCOME, REPLY, CLOSE, TXN = 1, 2, 3, 4, 5, 6
KINDS = {HELLO: "HELLO", BATCH: "BATCH", WELCOME: "WELCOME", REPLY: "REPLY", CLOSE: "CLOSE",
         TXN: "TXN"}
HEADER = struct.Struct(">IB")
_TIMEVAL = struct.Struct("@ll")  # struct timeval, as SO_RCVTIMEO/SO_SNDTIMEO take it
_CHUNK = 1 << 16  # bytes asked of one recv


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class FrameTooLarge(FrameError):
    """A frame's length exceeds the limit."""


class PeerClosed(Exception):
    """The peer closed the connection (or it broke) before a whole frame arrived."""


class ReadTimeout(Exception):
    """No (whole) frame arrived in time."""


def encode(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


def _timeval(seconds: float) -> bytes:
    seconds = max(seconds, 0.001)  # 0 would mean "never time out"
    whole = int(seconds)
    return _TIMEVAL.pack(whole, int((seconds - whole) * 1_000_000))


def set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound every send on ``sock`` (a peer that reads nothing cannot hold the sender)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))


class FrameReader:
    """Frames from a blocking socket (plain or TLS), one at a time.

    ``wait`` bounds the wait for a frame's first byte; once it has begun, the whole frame
    must arrive within ``deadline`` seconds (a slow peer cannot hold the reader longer).
    A frame's length is checked on its header, before its body is read: at most
    ``budgets[kind]`` (``max_frame`` for a kind without a budget of its own).
    Not thread-safe: one reader at a time (the connection's owner sees to it).
    """

    __slots__ = ("_budgets", "_buf", "_deadline", "_max_frame", "_sock", "_timeout", "_wait")

    def __init__(self, sock: socket.socket, *, max_frame: int, wait: float,
                 deadline: float) -> None:
        self._sock = sock
        self._max_frame = max_frame
        self._budgets: Mapping[int, int] = {}
        self._wait = wait
        self._deadline = deadline
        self._buf = b""
        self._timeout = -1.0
        self._set_timeout(wait)

    def _set_timeout(self, seconds: float) -> None:
        if seconds != self._timeout:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
            self._timeout = seconds

    def configure(self, *, max_frame: int, wait: float, deadline: float,
                  budgets: Mapping[int, int] | None = None) -> None:
        """New bounds for the frames after this one (e.g. once the HELLO is read)."""
        self._max_frame, self._wait, self._deadline = max_frame, wait, deadline
        self._budgets = budgets or {}

    def _recv(self) -> bytes:
        try:
            data = self._sock.recv(_CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError, TimeoutError) as exc:
            raise ReadTimeout() from exc
        except (OSError, ssl.SSLError) as exc:  # reset, or shut and closed by its owner
            raise PeerClosed(str(exc)) from exc
        if not data:
            raise PeerClosed("connection closed by the peer")
        return data

    def read(self, expect: frozenset[int] | None = None) -> tuple[int, bytes]:
        """The next frame's (kind, payload).  ``expect``: the kinds allowed here.

        Raises ReadTimeout (nothing, or not all of a frame, in time), PeerClosed, or
        FrameError (an unknown or unexpected kind, a length over the limit).
        """
        buf = self._buf
        if not buf:
            self._set_timeout(self._wait)
            buf = self._recv()
        if len(buf) >= 5:
            length, kind = HEADER.unpack_from(buf)
            if len(buf) >= length + 5:
                self._check(length, kind, expect)
                self._buf = buf[5 + length:]
                return kind, buf[5:5 + length]
        return self._read_slow(buf, expect)

    def _read_slow(self, buf: bytes, expect: frozenset[int] | None) -> tuple[int, bytes]:
        """The rest of a frame that began in ``buf``: within the frame deadline."""
        deadline = time.monotonic() + self._deadline
        parts = [buf]
        have = len(buf)
        need = 5
        checked = False
        try:
            while True:
                if have >= 5 and not checked:
                    head = b"".join(parts)
                    parts = [head]
                    length, kind = HEADER.unpack_from(head)
                    self._check(length, kind, expect)
                    need, checked = 5 + length, True
                if have >= need:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReadTimeout()
                self._set_timeout(left)
                chunk = self._recv()
                parts.append(chunk)
                have += len(chunk)
        finally:
            self._set_timeout(self._wait)
        data = b"".join(parts)
        self._buf = data[need:]
        return kind, data[5:need]

    def _check(self, length: int, kind: int, expect: frozenset[int] | None) -> None:
        if kind not in KINDS or (expect is not None and kind not in expect):
            raise FrameError(f"unexpected frame kind {kind}")
        limit = self._budgets.get(kind, self._max_frame)
        if length > limit:
            raise FrameTooLarge(f"{KINDS[kind]} frame of {length} bytes exceeds the limit of"
                                f" {limit}")

    def take_buffered(self) -> bytes:
        """The bytes of next frames read already (the reader's buffer, now emptied): for
        whoever reads the connection from now on."""
        buf, self._buf = self._buf, b""
        return buf
