"""Metrics (issue 18): what a node and a worker export, the docs and the Grafana dashboard.

Real `percolator serve` and `percolator worker` processes are scraped over HTTP; the
counts asserted are the events the test caused (the node is its own, so its counters
start at zero), never "some number".  In-process checks read the default registry
before and after, as deltas.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bigtable_lite import LocalStore, Unavailable
from observers import Backoff, Worker, observer
from percolator import Client, CommitConflict, CommitUndetermined, Transaction
from percolator._local import LocalBackend
from percolator.clock import FakeClock
from percolator.metric_types import CounterChild, Family, HistogramChild, counter
from percolator.metrics import NAMES
from percolator.metrics_endpoint import MAX_CONNECTIONS, MAX_PER_PEER, MetricsEndpoint
from percolator.oracle import Oracle
from tests.certs import CA
from tests.observers import sum_observers
from tests.observers.observer_fixtures import eventually, write_cells
from tests.observers.worker_procs import SUM_OBSERVERS, WorkerProcess
from tests.percolator.steps import must_prewrite, new_txn
from tests.percolator.txn_service_client import ServiceClient, ServiceError
from tests.procs import REPO, ServerProcess, percolator_command

WAIT = 60.0
METRICS_LINE = re.compile(r"metrics on (https?://\S+)")
DOCS = REPO / "docs" / "operations.md"
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum", "_created")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=WAIT) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value (0.0 if it is not exported: nothing counted yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def base_name(sample: str) -> str:
    """The metric a sample belongs to (histograms' series; a counter's ``_created``)."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = sample[:-len(suffix)]
        if sample.endswith(suffix) and base in NAMES:
            return base
    if sample.endswith("_created") and f"{sample[:-len('_created')]}_total" in NAMES:
        return f"{sample[:-len('_created')]}_total"
    return sample


def metrics_url(lines: list[str]) -> str:
    for line in lines:
        match = METRICS_LINE.search(line)
        if match:
            return match.group(1)
    raise AssertionError(f"no metrics line in {lines}")


def ours_only(samples: Samples) -> None:
    """Every percolator_* sample belongs to a metric of percolator.metrics.NAMES."""
    unknown = {name for name, _ in samples if name.startswith("percolator_")
               and base_name(name) not in NAMES}
    assert not unknown, f"exported but not defined in percolator.metrics: {unknown}"


@pytest.fixture(name="node")
def node_fixture(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "node", "--metrics-listen", "127.0.0.1:0") as node:
        yield node


# --- a node ---------------------------------------------------------------------------------


def test_a_node_exports_its_calls_commands_commits_and_resolutions(node: ServerProcess) -> None:
    url = metrics_url(node.output)
    # gRPC: the per-RPC figures are checked against the batches (the native transport
    # carries the same batches without gRPC's; its commands are counted alike).
    with Client.connect(node.address, transport="grpc") as client:
        for i in range(3):
            with client.transaction() as txn:
                txn.set(b"r%d" % i, b"c", b"v")
        loser = client.begin()
        loser.set(b"r0", b"c", b"lost")
        with client.transaction() as winner:
            winner.set(b"r0", b"c", b"won")
        with pytest.raises(CommitConflict):
            loser.commit()
        backend = client.backend
        stranded = new_txn(backend, client.table, {(b"q", b"c"): b"never"})
        must_prewrite(backend, stranded, ttl_ms=1)
        expired_at = backend.now_ms() + 2
        eventually(lambda: backend.now_ms() > expired_at, "the stranded lock expires")
        assert client.begin().get(b"q", b"c") is None  # the node's read rolls it back
        with pytest.raises(ValueError):
            backend.read(b"", None, [(b"r", b"c")])  # a command the node refuses
    with Client.connect(node.address, one_phase=False, transport="grpc") as client:
        with client.transaction() as txn:
            txn.set(b"two", b"c", b"v")
            txn.set(b"two", b"d", b"v")
        gc_pass = client.backend.collect_garbage()  # as `percolator gc --connect` asks
    with grpc.insecure_channel(node.address) as channel:
        call = channel.unary_unary("/percolator.v1.Node/Batch")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"\xff\xff\xff", timeout=WAIT)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    got = scrape(url)
    ours_only(got)
    commands = "percolator_node_commands_total"
    assert value(got, commands, kind="one_phase", outcome="ok") == 4
    assert value(got, commands, kind="one_phase", outcome="conflict") == 1
    assert value(got, commands, kind="prewrite", outcome="ok") == 2  # stranded, two-phase
    assert value(got, commands, kind="commit", outcome="ok") == 1
    assert value(got, commands, kind="read", outcome="INVALID_ARGUMENT") == 1
    assert value(got, "percolator_lock_resolutions_total", result="rolled_back") == 1
    assert value(got, "percolator_lock_resolutions_total", result="rolled_forward") == 0
    executed = sum(v for (name, labels), v in got.items() if name == commands)
    assert value(got, "percolator_node_batch_commands_sum") == executed
    assert value(got, "percolator_node_command_duration_seconds_count", kind="one_phase") == 5
    rpc = "percolator_grpc_requests_total"
    assert value(got, rpc, service="percolator.v1.Node", method="Batch",
                 code="INVALID_ARGUMENT") == 1
    batches = value(got, "percolator_node_batch_commands_count")
    answered = sum(v for (name, labels), v in got.items()
                   if name == "percolator_grpc_msg_duration_seconds_count"
                   and ("service", "percolator.v1.Node") in labels
                   and ("code", "OK") in labels)
    assert answered == batches  # one answer per batch, by Batch or BatchStream
    stamps = value(got, "percolator_oracle_timestamps_total")
    assert stamps > 0 and value(got, "percolator_oracle_requests_total") > 0
    assert value(got, "percolator_oracle_persisted_high_water") >= stamps
    assert value(got, "percolator_oracle_batch_size_sum") > 0
    assert value(got, "percolator_store_disk_bytes") > 0
    assert value(got, "percolator_gc_passes_total") >= 1
    assert value(got, "percolator_gc_safe_point") >= gc_pass.safe_point
    assert value(got, "percolator_gc_versions_removed_total") >= gc_pass.removed
    assert value(got, "percolator_gc_seconds_total") > 0
    assert value(got, "process_cpu_seconds_total") > 0  # the process collector, too


def test_a_node_that_fsyncs_counts_the_passes_its_loop_shared(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "node", "--sync", "always", "--metrics-listen",
                       "127.0.0.1:0") as node:
        url = metrics_url(node.output)
        with Client.connect(node.address) as client:  # the native transport: the loop
            for i in range(5):
                with client.transaction() as txn:
                    txn.set(b"row%d" % i, b"v", b"x")
        got = scrape(url)
    writes = value(got, "percolator_store_deferred_writes_total")
    passes = value(got, "percolator_store_log_syncs_total")
    assert writes >= 5 and 1 <= passes <= writes
    assert value(got, "percolator_store_disk_bytes") > 0


def test_metrics_are_off_unless_asked_and_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "quiet") as quiet:
        assert not any(METRICS_LINE.search(line) for line in quiet.output)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            percolator_command("serve", "--data-dir", str(tmp_path / "busy"), "--listen",
                               "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}"),
            capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 1, done
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("percolator serve: error: cannot serve metrics on 127.0.0.1:"), line


# --- protected mode: beyond loopback only over TLS ---------------------------------------------


def scrape_tls(url: str, ca: Path) -> Samples:
    """Scrape an HTTPS endpoint whose certificate ``ca`` signed, at 127.0.0.1."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=WAIT,
                                context=context) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def refused_line(*args: str) -> str:
    done = subprocess.run(percolator_command(*args), capture_output=True, text=True,
                          timeout=WAIT, check=False)
    assert done.returncode == 1, done
    [line] = done.stderr.strip().splitlines()
    return line


def test_metrics_beyond_loopback_are_refused_without_tls_and_say_why(tmp_path: Path) -> None:
    line = refused_line("serve", "--data-dir", str(tmp_path / "n"), "--listen", "127.0.0.1:0",
                        "--metrics-listen", "0.0.0.0:0")
    assert line.startswith("percolator serve: error: refusing to serve metrics on 0.0.0.0:0"
                           " over plain HTTP: it is not a loopback address"), line
    assert line.endswith("(give --tls-cert and --tls-key to serve it over HTTPS, or"
                         " --insecure)"), line
    assert not (tmp_path / "n").exists(), "refused before the data directory is touched"
    line = refused_line("worker", "--connect", "127.0.0.1:1", "--observers", SUM_OBSERVERS,
                        "--metrics-listen", "0.0.0.0:0")
    assert line.startswith("percolator worker: error: refusing to serve metrics on 0.0.0.0:0"
                           " over plain HTTP"), line
    assert line.endswith("(give --metrics-tls-cert and --metrics-tls-key, or"
                         " --metrics-insecure)"), line


def test_metrics_beyond_loopback_are_served_over_https_with_the_nodes_certificate(
        tmp_path: Path) -> None:
    ca = CA("metrics CA")
    ca_file = ca.write(tmp_path / "ca.pem")
    cert, key = ca.issue("node", server=True).write(tmp_path, "node")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{'a' * 32} admin\n")
    with ServerProcess(tmp_path / "node", "--metrics-listen", "0.0.0.0:0", "--tls-cert",
                       str(cert), "--tls-key", str(key), "--auth-tokens", str(tokens)) as node:
        url = metrics_url(node.output)
        assert url.startswith("https://0.0.0.0:"), url
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port)):  # connected, sending nothing:
            # its handshake waits in its own thread, not in the one accepting scrapers
            assert value(scrape_tls(url, ca_file), "process_cpu_seconds_total") > 0
        with pytest.raises(OSError):  # plain HTTP gets no metrics (reset, or URLError)
            scrape(url.replace("https://0.0.0.0", "http://127.0.0.1"))
        assert scrape_tls(url, ca_file), "and the endpoint still serves scrapers over TLS"
    with ServerProcess(tmp_path / "open", "--metrics-listen", "0.0.0.0:0",
                       "--insecure") as node:  # a network its operator trusts
        url = metrics_url(node.output)
        assert url.startswith("http://0.0.0.0:"), url
        assert scrape(url.replace("0.0.0.0", "127.0.0.1"))


def test_a_workers_metrics_beyond_loopback_are_served_over_https(node: ServerProcess,
                                                                 tmp_path: Path) -> None:
    ca = CA("worker metrics CA")
    ca_file = ca.write(tmp_path / "ca.pem")
    cert, key = ca.issue("worker", server=True).write(tmp_path, "worker")
    with WorkerProcess("--connect", node.address, "--observers", SUM_OBSERVERS,
                       "--metrics-listen", "0.0.0.0:0", "--metrics-tls-cert", str(cert),
                       "--metrics-tls-key", str(key)) as worker:
        url = metrics_url([worker.wait_for("metrics on")])
        assert url.startswith("https://0.0.0.0:"), url
        worker.wait_for("running as")
        got = scrape_tls(url, ca_file)
        assert value(got, "percolator_observer_notifications_pending",
                     observer="add_value") == 0
        assert worker.terminate() == 0, worker.stderr()


# --- commits, in-process ----------------------------------------------------------------------


def commits(path: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("percolator_txn_commit_duration_seconds_count",
                                     {"path": path, "outcome": outcome}) or 0.0


class _LostReplies(LocalBackend):
    """Every commit's reply lost, and the store unreachable after it."""

    def commit_one_phase(self, request: Any) -> Any:
        raise Unavailable("reply lost")

    def rollback(self, *args: Any) -> None:
        raise Unavailable("unreachable")


def test_commits_are_counted_by_path_and_outcome(tmp_path: Path) -> None:
    before = {(p, o): commits(p, o) for p in ("one_phase", "two_phase")
              for o in ("committed", "conflict", "undetermined", "error")}
    with Client.embedded(tmp_path / "one") as client:
        with client.transaction() as txn:
            txn.set(b"a", b"c", b"1")
        loser = client.begin()
        loser.set(b"a", b"c", b"2")
        with client.transaction() as txn:
            txn.set(b"a", b"c", b"3")
        with pytest.raises(CommitConflict):
            loser.commit()
    with Client.embedded(tmp_path / "two", one_phase=False) as client:
        with client.transaction() as txn:
            txn.set(b"a", b"c", b"1")
    clock = FakeClock()  # the retries' backoff passes at once
    backend = _LostReplies(*_opened(tmp_path / "lost"), clock=clock)
    with Client(backend, clock=clock) as client:
        txn = client.begin()
        txn.set(b"a", b"c", b"1")
        with pytest.raises(CommitUndetermined):
            txn.commit()
    after = {key: commits(*key) for key in before}
    assert {key: after[key] - before[key] for key in before if after[key] != before[key]} == {
        ("one_phase", "committed"): 2, ("one_phase", "conflict"): 1,
        ("two_phase", "committed"): 1, ("one_phase", "undetermined"): 1}


def test_the_transactions_service_calls_and_commits_are_counted(node: ServerProcess) -> None:
    """Issue 17's service at a node: each unary call and each message of a Stream is
    counted and timed like the Node's; its transactions' commits are counted in the node."""
    url = metrics_url(node.output)
    service = "percolator.v1.Transactions"
    with ServiceClient(node.address) as svc:
        for i in range(2):
            txn = svc.begin([(b"x", b"c")])
            txn.set(b"x", b"c", b"%d" % i)
            txn.commit()
        loser = svc.begin([(b"x", b"c")])
        winner = svc.begin()
        winner.set(b"x", b"c", b"won")
        winner.commit()
        loser.set(b"x", b"c", b"lost")
        with pytest.raises(ServiceError) as aborted:
            loser.commit()
        assert aborted.value.code == grpc.StatusCode.ABORTED
        assert svc.begin().get(b"x", b"c") == b"won"
    with ServiceClient(node.address, stream=True) as streamed:
        txn = streamed.begin([(b"y", b"c")])
        txn.set(b"y", b"c", b"1")
        txn.commit()
        assert streamed.stream  # not refused: Begin and Commit were messages of one Stream
        open_streams = value(scrape(url), "percolator_grpc_streams_open", service=service,
                             method="Stream")
        assert open_streams == 1

        streamed.end_stream()  # the node ends it with OK once the requests are done
    got = scrape(url)
    ours_only(got)
    calls = {(dict(labels)["method"], dict(labels)["code"]): v
             for (name, labels), v in got.items()
             if name == "percolator_grpc_requests_total" and ("service", service) in labels}
    assert calls == {("Begin", "OK"): 5, ("Commit", "OK"): 3, ("Commit", "ABORTED"): 1,
                     ("Get", "OK"): 1, ("Stream", "OK"): 1}
    assert value(got, "percolator_grpc_msg_duration_seconds_count", service=service,
                 method="Stream", code="OK") == 2  # an answer per message
    assert value(got, "percolator_grpc_streams_open", service=service, method="Stream") == 0
    assert value(got, "percolator_txn_commit_duration_seconds_count", path="one_phase",
                 outcome="committed") == 4
    assert value(got, "percolator_txn_commit_duration_seconds_count", path="one_phase",
                 outcome="conflict") == 1


def _opened(path: Path) -> tuple[LocalStore, Oracle]:
    store = LocalStore(path)
    return store, Oracle(store)


# --- a worker -------------------------------------------------------------------------------


def test_a_worker_exports_its_observers(node: ServerProcess) -> None:
    with WorkerProcess("--connect", node.address, "--observers", SUM_OBSERVERS,
                       "--threads", "2", "--metrics-listen", "127.0.0.1:0") as worker:
        url = metrics_url([worker.wait_for("metrics on")])
        worker.wait_for("running as")
        with Client.connect(node.address) as client:
            write_cells(client, {(b"row%d" % i, sum_observers.VALUE): b"%d" % i
                                 for i in range(5)})

        def processed() -> bool:
            got = scrape(url)
            return value(got, "percolator_observer_notifications_processed_total",
                         observer="add_value") == 5 and value(
                got, "percolator_observer_notifications_pending", observer="add_value") == 0

        eventually(processed, "the worker exports 5 processed, none pending")
        got = scrape(url)
        ours_only(got)
        assert value(got, "percolator_observer_duration_seconds_count",
                     observer="add_value") >= 1
        observer_commits = sum(v for (name, labels), v in got.items()
                               if name == "percolator_txn_commit_duration_seconds_count"
                               and ("outcome", "committed") in labels)
        assert observer_commits == value(got, "percolator_observer_duration_seconds_count",
                                         observer="add_value")
        assert value(got, "percolator_client_batch_commands_count") > 0
        assert worker.terminate() == 0


def _observer_counts(name: str) -> dict[str, float]:
    out = {}
    for metric in ("processed", "parked"):
        out[metric] = REGISTRY.get_sample_value(
            f"percolator_observer_notifications_{metric}_total", {"observer": name}) or 0.0
    for metric in ("collisions", "failures"):
        out[metric] = REGISTRY.get_sample_value(
            f"percolator_observer_{metric}_total", {"observer": name}) or 0.0
    return out


def test_collisions_failures_and_parks_are_counted_per_observer(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        clashed = threading.Event()

        @observer(b"clash", name="metrics_clash")
        def clash(txn: Transaction, row: bytes, column: bytes) -> None:
            txn.set(row, b"out", b"mine")
            if not clashed.is_set():  # once: another writer commits the cell first
                clashed.set()
                with client.transaction() as other:
                    other.set(row, b"out", b"theirs")

        @observer(b"fail", name="metrics_fail")
        def fail(txn: Transaction, row: bytes, column: bytes) -> None:
            raise ValueError("always")

        before = {name: _observer_counts(name) for name in ("metrics_clash", "metrics_fail")}
        worker = Worker(client, [clash, fail], threads=1, max_failures=2,
                        backoff=Backoff(0.0))
        write_cells(client, {(b"r", b"clash"): b"1", (b"r", b"fail"): b"1"})
        worker.run_until_idle(timeout=WAIT)
        after = {name: _observer_counts(name) for name in before}
    delta = {name: {k: after[name][k] - before[name][k] for k in after[name]}
             for name in after}
    assert delta == {
        "metrics_clash": {"processed": 1, "parked": 0, "collisions": 1, "failures": 0},
        "metrics_fail": {"processed": 0, "parked": 1, "collisions": 0, "failures": 2}}


# --- docs and dashboard -------------------------------------------------------------------------


def _standard_names() -> set[str]:
    """Names the process's default collectors (process_, python_) export."""
    return {m.name for m in REGISTRY.collect() if not m.name.startswith("percolator_")} | {
        f"{m.name}_total" for m in REGISTRY.collect() if m.type == "counter"}


def test_every_metric_is_documented_and_the_docs_name_no_other() -> None:
    text = DOCS.read_text()
    mentioned = {base_name(name) for name in re.findall(r"\bpercolator_[a-z_]+", text)}
    assert NAMES - mentioned == set(), "metrics missing from docs/operations.md"
    assert mentioned - NAMES == set(), "docs/operations.md names metrics that do not exist"
    assert "grafana-dashboard.json" in text


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key == "expr" and isinstance(item, str):
                yield item
            else:
                yield from _exprs(item)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def test_the_dashboard_refers_only_to_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]
    exprs = list(_exprs(dashboard))
    assert len(exprs) >= len(dashboard["panels"]) - sum(
        1 for p in dashboard["panels"] if p.get("type") == "row")
    standard = _standard_names()
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b((?:percolator|process|python)_[a-z_]+)\b", expr):
            used.add(base_name(name))
            assert base_name(name) in NAMES or name in standard, (name, expr)
    percolator = {name for name in used if name.startswith("percolator_")}
    assert len(percolator) >= len(NAMES) // 2, f"the dashboard shows only {percolator}"


def test_metric_names_follow_prometheus_conventions() -> None:
    for name in NAMES:
        assert re.fullmatch(r"percolator_[a-z]+(_[a-z]+)*", name), name
        assert not name.endswith("_total") or "duration" not in name, name


def test_no_module_but_percolator_metrics_defines_a_metric() -> None:
    defined = []
    for package in ("bigtable_lite", "percolator", "observers"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.relative_to(REPO) == Path("percolator/metrics.py"):
                continue
            if re.search(r"\b(counter|gauge|histogram|Counter|Gauge|Histogram|Summary|Info|Enum)"
                         r"\(\s*\"", path.read_text()):
                defined.append(str(path.relative_to(REPO)))
    assert defined == []



# --- the metric types ---------------------------------------------------------------------------


def _registry_of(family: Family[Any]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(family)
    return registry


def test_a_histogram_counts_a_value_on_a_bound_in_that_bucket() -> None:
    family: Family[HistogramChild] = Family("t_seconds", "test", ["k"], "histogram",
                                            buckets=(0.1, 1.0))
    child = family.labels("a")
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        child.observe(v)
    got = {(s.name, s.labels.get("le")): s.value
           for m in text_string_to_metric_families(generate_latest(_registry_of(family))
                                                   .decode())
           for s in m.samples}
    assert got == {("t_seconds_bucket", "0.1"): 2, ("t_seconds_bucket", "1.0"): 4,
                   ("t_seconds_bucket", "+Inf"): 5, ("t_seconds_count", None): 5,
                   ("t_seconds_sum", None): pytest.approx(8.65)}


def test_counts_are_exact_across_threads() -> None:
    family: Family[CounterChild] = Family("t_total", "test", [], "counter")
    hist: Family[HistogramChild] = Family("t2_seconds", "test", [], "histogram",
                                          buckets=(1.0,))
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait(timeout=WAIT)
        counter, histogram = family.labels(), hist.labels()
        for _ in range(20_000):
            counter.inc()
            histogram.observe(0.5)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    assert family.labels().value == 160_000
    assert hist.labels().snapshot() == ([160_000, 0], 80_000.0)


def test_a_family_refuses_wrong_labels_and_a_counter_needs_total() -> None:
    family: Family[CounterChild] = Family("t3_total", "test", ["a", "b"], "counter")
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("only one")
    with pytest.raises(ValueError, match="_total"):
        counter("percolator_test_count", "no _total")


def _connect_from(host: str, endpoint: MetricsEndpoint) -> socket.socket:
    """A connection to ``endpoint`` from the loopback address ``host`` (a peer of its own:
    127.0.0.0/8 is all loopback)."""
    return socket.create_connection(
        ("127.0.0.1", int(endpoint.address.rpartition(":")[2])), timeout=WAIT,
        source_address=(host, 0))


def _scrape_from(host: str, endpoint: MetricsEndpoint) -> bytes:
    """A plain scrape from ``host``: the reply, b"" if the endpoint closed the
    connection unanswered."""
    with _connect_from(host, endpoint) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := conn.recv(1 << 16):
            reply += chunk
        return reply


def test_idle_connections_to_the_metrics_endpoint_hold_a_bounded_number_of_threads() -> None:
    """Anyone who reaches the port may connect (a scrape needs no credential): connections
    beyond MAX_CONNECTIONS are closed at once, so idle ones cannot take every thread and
    file descriptor of the node; once they go, scrapes are served again.  (Each from an
    address of its own: one address gets MAX_PER_PEER.)"""
    endpoint = MetricsEndpoint("127.0.0.1:0").start()
    idle: list[socket.socket] = []
    try:
        threads = threading.active_count()
        for n in range(4 * MAX_CONNECTIONS):
            conn = _connect_from(f"127.0.1.{n + 1}", endpoint)
            conn.sendall(b"G")  # a request begun, never finished
            idle.append(conn)
        refused = 0
        for conn in idle:  # the ones beyond the slots are closed by the endpoint
            conn.settimeout(0.5)
            try:
                refused += conn.recv(1) == b""
            except TimeoutError:
                pass  # served: waiting for the rest of its request
        assert refused == 3 * MAX_CONNECTIONS
        # One thread per connection served, and the endpoint's deadline thread.
        assert threading.active_count() <= threads + MAX_CONNECTIONS + 1
    finally:
        for conn in idle:
            conn.close()
    try:
        deadline = time.monotonic() + WAIT
        while True:  # the served ones notice their peers left
            try:
                with urllib.request.urlopen(endpoint.url, timeout=5) as scrape:
                    assert b"process_cpu_seconds_total" in scrape.read()
                break
            except (OSError, urllib.error.URLError):
                assert time.monotonic() < deadline, "no scrape served after the idle went"
                threading.Event().wait(0.1)  # polling, bounded by the deadline
    finally:
        endpoint.stop()


def test_one_address_holds_a_few_slots_and_scrapes_from_others_are_served() -> None:
    """A host that opens connections and sends nothing (reconnecting as fast as each is
    cut) holds MAX_PER_PEER slots, not every one: a scraper elsewhere is served while it
    holds them, and the hoarder's own connections beyond its share are closed at once."""
    endpoint = MetricsEndpoint("127.0.0.1:0").start()
    hoard: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            conn = _connect_from("127.0.3.1", endpoint)
            conn.sendall(b"G")  # a request begun, never finished
            hoard.append(conn)
        closed = 0
        for conn in hoard:
            conn.settimeout(0.5)
            try:
                closed += conn.recv(1) == b""
            except TimeoutError:
                pass  # served: waiting for the rest of its request
        assert closed == MAX_CONNECTIONS - MAX_PER_PEER
        reply = _scrape_from("127.0.3.2", endpoint)
        assert reply.startswith(b"HTTP/1.0 200") and b"process_cpu_seconds_total" in reply
        assert _scrape_from("127.0.3.1", endpoint) == b"", "the hoarder's share is full"
    finally:
        for conn in hoard:
            conn.close()
        endpoint.stop()


def test_slow_drip_connections_are_cut_at_the_deadline_and_scrapes_are_served() -> None:
    """A scraper dripping its request a byte at a time never waits long for one read: each
    connection gets a deadline for the whole exchange, so MAX_CONNECTIONS drippers cannot
    hold every slot and refuse real scrapes for as long as they keep dripping."""
    deadline = 1.0
    endpoint = MetricsEndpoint("127.0.0.1:0", deadline=deadline).start()
    port = int(endpoint.address.rpartition(":")[2])
    drippers: list[socket.socket] = []
    opened: list[float] = []  # when each connection was made
    for n in range(MAX_CONNECTIONS):  # from as many addresses: each gets a slot
        drippers.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT,
                                                 source_address=(f"127.0.2.{n + 1}", 0)))
        opened.append(time.monotonic())
    cut: dict[int, float] = {}  # dripper -> when the endpoint closed it
    stop = threading.Event()

    def drip() -> None:
        request = b"GET /metrics HTTP/1.0\r\n" + b"X-Slow: " + b"x" * 10_000
        for i in range(len(request)):
            for n, conn in enumerate(drippers):
                if n in cut:
                    continue
                try:
                    conn.sendall(request[i:i + 1])
                    conn.settimeout(0.0)
                    try:
                        ended = conn.recv(1) == b""
                    except BlockingIOError:
                        ended = False
                    conn.settimeout(WAIT)
                except OSError:  # reset by the endpoint
                    ended = True
                if ended:
                    cut[n] = time.monotonic()
            if stop.wait(0.05) or len(cut) == len(drippers):
                return

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    try:
        scraped = None
        give_up = time.monotonic() + WAIT
        while scraped is None and time.monotonic() < give_up:
            try:
                with urllib.request.urlopen(endpoint.url, timeout=5) as reply:
                    scraped = reply.read()
            except (OSError, urllib.error.URLError):  # refused while the slots are held
                threading.Event().wait(0.1)  # polling, bounded by give_up
        assert scraped is not None and b"process_cpu_seconds_total" in scraped, \
            "no scrape served while the drippers dripped"
        dripping.join(WAIT)
        assert not dripping.is_alive()
        assert sorted(cut) == list(range(MAX_CONNECTIONS)), "every dripper is cut"
        # Each was cut at its deadline: not before, and not much after.
        lasted = [cut[n] - opened[n] for n in range(MAX_CONNECTIONS)]
        assert all(deadline - 0.1 <= t <= deadline + 5.0 for t in lasted), lasted
    finally:
        stop.set()
        dripping.join(WAIT)
        for conn in drippers:
            conn.close()
        endpoint.stop()
