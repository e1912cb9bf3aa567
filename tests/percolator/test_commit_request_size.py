"""A two-phase commit's requests fit the message limit, however large its keys.

Prewrite calls are cut by bytes; the commit step's request names the secondaries it
carries, so it must be cut by bytes too: a transaction of many long keys, within every
limit, must commit (the rest of its secondaries are settled through the primary).
"""

from __future__ import annotations

from pathlib import Path

from bigtable_lite import Limits
from percolator import Client
from percolator._node_client import NodeClient

from .test_node_batch import WAIT, serve

LIMITS = Limits(max_message_bytes=256 * 1024)
TABLE = b"t"


def test_a_transaction_of_many_long_keys_commits_at_a_node(tmp_path: Path) -> None:
    rows = [b"%04d" % i + b"r" * 2000 for i in range(200)]  # ~400 KiB of keys
    with serve(tmp_path / "data", limits=LIMITS) as served, \
            Client(NodeClient(served.address, timeout=WAIT, limits=LIMITS),
                   table=TABLE) as client:
        with client.transaction() as txn:
            for row in rows:
                txn.set(row, b"c" * 2000, b"v")
        reader = client.begin()
        got = [reader.get_many([(row, b"c" * 2000) for row in rows[i:i + 20]])
               for i in range(0, len(rows), 20)]  # reads cut by count only: a few at once
        assert [set(g.values()) for g in got] == [{b"v"}] * 10
        assert served.service.kinds().count("commit") == 1, "one commit step"
        assert served.service.kinds().count("resolve") >= 1, "the rest through resolve"
