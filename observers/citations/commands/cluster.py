"""Run the demo cluster of docker-compose.yml as local processes.

`percolator cluster` runs the services in the order of the topology: the dev secrets,
the node, the workers, then each one-shot in turn (load, verify), all on 127.0.0.1,
with TLS and tokens as in docker-compose.yml (the secrets live in ``DATA_DIR/secrets``);
prints where the node listens; with ``--keep-running`` it then serves until Ctrl-C,
otherwise it stops everything once the one-shots are done and exits with the first
non-zero status among them.  It starts on a new or empty data directory; on one that
holds data only with ``--reuse`` (the loader then loads on top of it, and the secrets
made at the first start are kept).

Each service runs in a session of its own, as each runs in a container of its own under
compose.  Why: with the kernel's autogroup scheduling a session is a scheduling group,
so the node's one busy thread gets its share of the CPU against the workers' group, not
one thread's share among all of theirs; and Ctrl-C reaches this launcher alone, which
stops the workers first (their in-flight work ends against a live node), then the
node.  SIGTERM and SIGHUP (a closed terminal) stop the cluster the same way: no service
outlives its launcher, short of a ``kill -9`` of it.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from percolator.cli import CommandError
from percolator.commands.arg_types import positive_int

from ..cluster import DEMO_PAPERS, NODE, TOPOLOGY, Service

log = logging.getLogger(__name__)

_LISTENING = re.compile(r"listening on (\S+:\d+)")
_START_TIMEOUT = 60.0
_ONESHOT_TIMEOUT = 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="data root: a new or empty directory (see --reuse)")
    parser.add_argument("--reuse", action="store_true",
                        help="start on a data root that already holds data (the loader loads"
                        " on top of it)")
    parser.add_argument("--papers", type=positive_int, default=DEMO_PAPERS,
                        help="papers the loader generates (default %(default)s)")
    parser.add_argument("--keep-running", action="store_true",
                        help="keep the node and workers up after the one-shots, until Ctrl-C")


def _command(s: Service, values: dict[str, str], papers: int, log_level: str) -> list[str]:
    argv = s.render(**values)
    if s.name == "loader":
        argv[argv.index("--generate") + 1] = str(papers)
    return [sys.executable, "-m", "percolator", "--log-level", log_level, *argv]


def data_root(path: str, reuse: bool) -> Path:
    """The data root, created if missing; one that holds anything only with ``reuse``."""
    root = Path(path)
    if root.is_dir() and any(root.iterdir()) and not reuse:
        raise CommandError(f"{root} is not empty: pass --reuse to start on its data, or choose"
                           " a new directory")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _start_node(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=None, text=True,
                            start_new_session=True)
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(f"[node] {line}")
            match = _LISTENING.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(_START_TIMEOUT) or not found:
        proc.kill()
        raise CommandError("the node did not start")
    return proc, found[0]


class _Stop(Exception):
    """SIGTERM or SIGHUP: stop the cluster as Ctrl-C does."""


@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`_Stop` in the main thread meanwhile (by default
    they end this process at once, leaving its services running)."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    with _signals_stop():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    root = data_root(args.data_dir, args.reuse)
    values = {"data": str(root), "listen": "127.0.0.1:0", "node": "",
              "secrets": str(root / "secrets"), "host": "127.0.0.1"}
    node: subprocess.Popen[str] | None = None
    running: list[subprocess.Popen[str]] = []  # workers
    status = 0
    try:
        for s in TOPOLOGY:
            argv = _command(s, values, args.papers, args.log_level)
            if s.name == NODE:
                node, address = _start_node(argv)
                values["node"] = address
                print(f"percolator cluster: node listening on {address}", flush=True)
            elif not s.oneshot:
                for i in range(s.replicas):
                    running.append(subprocess.Popen(argv, text=True,
                                                    start_new_session=True))
                    print(f"percolator cluster: started {s.name} {i + 1}/{s.replicas}",
                          flush=True)
            else:
                print(f"percolator cluster: running {s.name}: {' '.join(argv[5:])}",
                      flush=True)
                code = subprocess.run(argv, timeout=_ONESHOT_TIMEOUT,
                                      start_new_session=True).returncode
                if code != 0:
                    log.error("%s exited with status %d; stopping the cluster", s.name, code)
                    status = status or code
                    break
        if args.keep_running and status == 0 and node is not None:
            print("percolator cluster: up; Ctrl-C to stop", flush=True)
            node.wait()
    except KeyboardInterrupt:
        pass
    except _Stop as stop:
        print(f"percolator cluster: {stop}: stopping", flush=True)
    finally:
        # Workers first (they finish in-flight work against a live node), then the node;
        # a one-shot running now was stopped already: the signal ended its ``run``.
        _stop_in_order([running, [node] if node is not None else []])
    return status


def _stop_in_order(groups: list[list[subprocess.Popen[str]]]) -> None:
    """Terminate each group and wait for it before the next, whatever signal comes."""
    with _deferred_signals():
        for group in groups:
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            _reap(group)


@contextmanager
def _deferred_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP are ignored meanwhile: a second Ctrl-C must not leave
    the node running while the workers stop."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _reap(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
