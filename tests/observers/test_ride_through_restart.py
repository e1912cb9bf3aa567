"""Clients ride through a node restart (issue 16).

``percolator citations load`` once exited 1 when the node restarted under it and had
to be run again by hand.  The node here is a real ``percolator serve`` process killed
with -9 and started again on the same port and data directory.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from observers.citations import REFS, generate_graph
from observers.citations.schema import encode_refs, row_key
from percolator import Client
from tests.procs import ServerProcess, percolator_command

WAIT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def papers_loaded(address: str) -> dict[bytes, bytes]:
    """Every paper's refs cell in the table."""
    with Client.connect(address, timeout=WAIT) as client:
        return {row: value for row, _, value in client.begin().scan(columns=[REFS])}


def test_a_loader_rides_through_a_node_killed_and_restarted(tmp_path: Path) -> None:
    papers = {row_key(p): encode_refs(refs) for p, refs in generate_graph(4000, seed=1).items()}
    server = ServerProcess(tmp_path / "data", listen=f"127.0.0.1:{free_port()}").start()
    try:
        loader = subprocess.Popen(
            percolator_command("citations", "load", "--generate", "4000", "--seed", "1",
                               "--batch", "5", "--no-progress", "--connect", server.address),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + WAIT
            while not papers_loaded(server.address):  # the loader is writing
                assert time.monotonic() < deadline and loader.poll() is None, loader.poll()
            assert loader.poll() is None, "the loader was still loading when the node died"
            server.kill()
            server.start()
            out, err = loader.communicate(timeout=180)
        finally:
            if loader.poll() is None:
                loader.kill()
                loader.wait(timeout=30)
        assert loader.returncode == 0, err
        assert f"loaded {4000:,} papers" in out, out
        assert papers_loaded(server.address) == papers
    finally:
        server.kill()
