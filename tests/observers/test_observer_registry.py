"""Defining and registering observers; plugin specs and entry points; the public API."""

from __future__ import annotations

from pathlib import Path

import pytest

import observers
from observers import (
    ConfigurationError,
    FunctionObserver,
    Observer,
    ObserverRegistry,
    PluginError,
    Worker,
    load_entry_points,
    load_registry,
    load_spec,
    observer,
)
from percolator import Client, Transaction

from . import plugin_fixtures


def test_public_surface_is_pinned() -> None:
    assert sorted(observers.__all__) == sorted([
        "ENTRY_POINT_GROUP", "Backoff", "ClusterStatus", "ConfigurationError",
        "FunctionObserver", "Observer", "ObserverError", "ObserverRegistry", "ParkInfo",
        "ParkedNotification", "PluginError", "Worker", "WorkerError", "WorkerFailed",
        "WorkerStats", "WorkerStatus", "WorkerTimeout", "cluster_status",
        "compact_notifications", "format_status", "list_parked", "load_entry_points",
        "load_registry", "load_spec", "observer", "replay_parked",
        # for the applications above (the citations app, the commands)
        "Placement", "format_column", "status_json", "through_outages"])
    for name in observers.__all__:
        assert getattr(observers, name) is not None


def test_decorated_function_is_an_observer_and_still_callable() -> None:
    calls: list[tuple[bytes, bytes]] = []

    @observer("paper:refs")
    def on_refs(txn: Transaction, row: bytes, column: bytes) -> None:
        calls.append((row, column))

    assert isinstance(on_refs, FunctionObserver) and on_refs.column == b"paper:refs"
    assert "on_refs" in on_refs.name
    on_refs(None, b"r", b"c")  # type: ignore[arg-type]
    assert calls == [(b"r", b"c")]


def test_class_observer_takes_its_column_from_the_class_or_the_constructor() -> None:
    assert plugin_fixtures.Three().column == b"plug:three"
    assert plugin_fixtures.Three("elsewhere").column == b"elsewhere"
    with pytest.raises(NotImplementedError):
        Observer("c").process(None, b"r", b"c")  # type: ignore[arg-type]


def test_max_batch_from_the_class_or_the_constructor_within_bounds() -> None:
    assert Observer("c").max_batch == 1
    assert Observer("c", max_batch=64).max_batch == 64

    class Batching(Observer):
        column = b"c"
        max_batch = 16

    assert Batching().max_batch == 16
    for bad in (0, -1, 1.5, True, 10**6):
        with pytest.raises(ConfigurationError, match="max_batch"):
            Observer("c", max_batch=bad)  # type: ignore[arg-type]


def test_gather_is_a_finite_number_of_seconds() -> None:
    assert Observer("c").gather == 0.0

    class Gathering(Observer):
        column = b"c"
        gather = 2.5

    assert Gathering().gather == 2.5
    for bad in (-1, float("inf"), float("nan"), True, "1"):
        Gathering.gather = bad  # type: ignore[assignment]
        with pytest.raises(ConfigurationError, match="gather"):
            Gathering()


def test_default_process_batch_runs_process_for_each_row() -> None:
    calls: list[bytes] = []

    @observer("c")
    def each(txn: Transaction, row: bytes, column: bytes) -> None:
        calls.append(row)

    each.process_batch(None, [b"a", b"b"], b"c")  # type: ignore[arg-type]
    assert calls == [b"a", b"b"]


@pytest.mark.parametrize("column", [b"", "", b"\x00ack", 5])
def test_bad_columns_are_refused(column: object) -> None:
    with pytest.raises(ConfigurationError):
        observer(column)  # type: ignore[arg-type]


def test_two_observers_on_one_column_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="two observers registered on column b'plug:one'"
                       ".*one.*one_again"):
        ObserverRegistry([plugin_fixtures.one, plugin_fixtures.one_again])
    with Client.embedded(tmp_path / "data") as client:
        with pytest.raises(ConfigurationError, match="two observers"):
            Worker(client, [plugin_fixtures.one, plugin_fixtures.one_again])
        assert client.observed_columns == frozenset(), "nothing registered on a bad config"
        with pytest.raises(ConfigurationError, match="at least one observer"):
            Worker(client, [])


def test_the_same_observer_twice_is_harmless() -> None:
    registry = ObserverRegistry([plugin_fixtures.one, plugin_fixtures.one])
    assert len(registry) == 1 and registry.get(b"plug:one") is plugin_fixtures.one


def test_plugin_specs_in_every_shape() -> None:
    mod = "tests.observers.plugin_fixtures"
    assert load_spec(f"{mod}:one") == [plugin_fixtures.one]
    assert load_spec(f"{mod}:LIST") == [plugin_fixtures.one, plugin_fixtures.two]
    [three] = load_spec(f"{mod}:factory")
    assert isinstance(three, plugin_fixtures.Three)
    [made] = load_spec(f"{mod}:Three")  # a class is a factory too
    assert isinstance(made, plugin_fixtures.Three)
    registry = load_registry([f"{mod}:LIST", f"{mod}:factory"])
    assert registry.columns == {b"plug:one", b"plug:two", b"plug:three"}
    with pytest.raises(ConfigurationError, match="two observers"):
        load_registry([f"{mod}:one", f"{mod}:one_again"])


@pytest.mark.parametrize("spec,match", [
    ("tests.observers.plugin_fixtures:NOT_AN_OBSERVER", "not an observer"),
    ("tests.observers.plugin_fixtures:missing", "no attribute"),
    ("tests.observers.no_such_module:x", "cannot import"),
    (":x", "pkg.module:name"),
    ("no-such-entry-point", "no entry point"),
])
def test_bad_plugin_specs_say_why(spec: str, match: str) -> None:
    with pytest.raises(PluginError, match=match):
        load_spec(spec)


@pytest.mark.parametrize("source,named", [
    ("raise RuntimeError('no config here')\n", "no config here"),
    ("def broken(:\n", "SyntaxError"),
])
def test_a_plugin_module_that_fails_to_import_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, named: str) -> None:
    """Whatever the module raises (not only ImportError): a PluginError naming it, which
    `percolator worker` reports in one line, not a traceback."""
    (tmp_path / "failing_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=f"cannot import 'failing_plugin'.*{named}"):
        load_spec("failing_plugin:OBSERVERS")


def test_entry_points_of_the_group_are_loaded(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[percolator.observers]\n"
        "fixtures = tests.observers.plugin_fixtures:LIST\n"
        "three = tests.observers.plugin_fixtures:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_entry_points(["fixtures"]) == [plugin_fixtures.one, plugin_fixtures.two]
    assert {o.column for o in load_spec("three")} == {b"plug:three"}
