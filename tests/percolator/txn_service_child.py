"""A Python process using the Transactions service, the twin of tests/node/scenarios.js and
examples/node/bank.js (same scenarios, same JSON lines), for the tests that run the same
scenarios from Python and from Node.js.

    python -m tests.percolator.txn_service_child [--native] SCENARIO ADDRESS ARGS...

    bank ADDRESS PREFIX ACCOUNTS TRANSFERS SEED
    commit-big ADDRESS PREFIX CELLS BYTES
    begin-and-hang ADDRESS TTL_MS
    write ADDRESS ROW COLUMN VALUE

``--native``: every call in TXN frames of the node's native transport, not gRPC.
"""

from __future__ import annotations

import json
import random
import sys
import threading

from tests.percolator.txn_service_client import ServiceClient, ServiceTxn

INITIAL = 100
COLUMN = b"balance"
NATIVE = False


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def account(prefix: str, i: int) -> bytes:
    return f"{prefix}/acct{i:04d}".encode()


def snapshot_total(client: ServiceClient, prefix: str, accounts: int) -> int:
    txn = client.begin([(account(prefix, i), COLUMN) for i in range(accounts)],
                       read_only=True)
    return sum(int(v or 0) for v in txn.values.values())


def bank(address: str, prefix: str, accounts: int, transfers: int, seed: int) -> None:
    rng = random.Random(seed)
    moves: list[tuple[int, int, int]] = []
    committed = retries = audits = bad = 0
    with ServiceClient(address, native=NATIVE) as client:
        while committed < transfers:
            a, b = rng.sample(range(accounts), 2)
            amount = rng.randint(1, 10)
            ra, rb = account(prefix, a), account(prefix, b)
            attempts = 0

            def move(txn: ServiceTxn) -> bool:
                nonlocal attempts
                attempts += 1
                va = int(txn.values[(ra, COLUMN)] or 0)
                vb = int(txn.values[(rb, COLUMN)] or 0)
                if va < amount:
                    return False
                txn.set(ra, COLUMN, b"%d" % (va - amount))
                txn.set(rb, COLUMN, b"%d" % (vb + amount))
                return True

            if client.run(move, reads=[(ra, COLUMN), (rb, COLUMN)]):
                moves.append((a, b, amount))
            committed += 1
            retries += attempts - 1
            if committed % 10 == 0:
                audits += 1
                bad += snapshot_total(client, prefix, accounts) != accounts * INITIAL
    say(committed=committed, retries=retries, audits=audits, badAudits=bad, moves=moves)


def commit_big(address: str, prefix: str, cells: int, size: int) -> None:
    with ServiceClient(address, native=NATIVE) as client:
        txn = client.begin()
        for i in range(cells):
            txn.set(f"{prefix}/{i}".encode(), b"blob", b"x" * size)
        say(committing=str(txn.txn_id))
        say(committed=str(txn.commit()))


def begin_and_hang(address: str, ttl_ms: int) -> None:
    with ServiceClient(address, native=NATIVE) as client:
        txn = client.begin([(b"r", b"c")], ttl_ms=ttl_ms)
        say(begun=str(txn.txn_id))
        threading.Event().wait()  # abandoned: the test kills this process


def write(address: str, row: str, column: str, value: str) -> None:
    with ServiceClient(address, native=NATIVE) as client:
        txn = client.begin()
        txn.set(row.encode(), column.encode(), value.encode())
        say(committed=str(txn.commit()))


def main(argv: list[str]) -> None:
    global NATIVE
    if argv[0] == "--native":
        NATIVE = True
        argv = argv[1:]
    name, address, *args = argv
    if name == "bank":
        bank(address, args[0], int(args[1]), int(args[2]), int(args[3]))
    elif name == "commit-big":
        commit_big(address, args[0], int(args[1]), int(args[2]))
    elif name == "begin-and-hang":
        begin_and_hang(address, int(args[0]))
    elif name == "write":
        write(address, *args)
    else:
        raise SystemExit(f"unknown scenario {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
