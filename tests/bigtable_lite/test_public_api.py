"""The public surface of bigtable_lite is pinned: changing it must be a deliberate edit here."""

from __future__ import annotations

import inspect

import bigtable_lite
from bigtable_lite import server

PUBLIC = {
    "ALL_TIME", "DEFAULT_LIMITS", "MAX_TS", "NOT_ATTEMPTED", "Cell", "Condition",
    "DataCorruption", "DeleteRange", "DeleteVersion", "InvalidArgument",
    "LimitExceeded", "Limits", "LocalStore", "Mutation", "MutationResult", "NoValuePrefixAt",
    "NoVersionIn", "PermissionDenied", "Put", "RemoteStore", "ReplyTooLarge", "Row",
    "RowMutation", "RowRead", "ScanRequest", "StorageError", "StoreClosed", "StoreLocked",
    "StoreOps", "TabletInfo", "TabletStore", "TimeRange", "Unauthenticated", "Unavailable",
    "UncheckedStore", "ValuePrefixAt", "VersionAt", "WrongTablet",
    # for the layers above: sync modes, the data-directory check, fast value types
    "SYNC_MODES", "SyncMode", "disk_bytes", "fast_init", "is_store",
}


def test_package_exports() -> None:
    assert set(bigtable_lite.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(bigtable_lite, name)


def test_both_stores_implement_the_interface() -> None:
    ops = {"read_rows", "scan", "mutate_rows", "list_tablets", "split_tablet", "close", "get",
           "put", "check_and_mutate", "read_row", "scan_rows"}
    for cls in (bigtable_lite.LocalStore, bigtable_lite.RemoteStore, bigtable_lite.UncheckedStore):
        assert ops <= set(dir(cls)), cls


def test_server_api() -> None:
    assert set(server.__all__) == {"DEFAULT_STREAM_IDLE", "HEALTH_STREAMS", "InsecureListen",
                                   "REFLECTION_STREAMS", "ServerPolicy",
                                   "ServiceRegistration", "build_server", "check_exposure",
                                   "server_options", "set_not_serving", "stop_server"}
    params = inspect.signature(server.build_server).parameters
    assert list(params) == ["store", "listen", "extra", "max_workers", "policy",
                            "interceptors"]
    assert params["extra"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["policy"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["max_workers"].default == 32
    assert [f for f in server.ServiceRegistration.__dataclass_fields__] == [
        "name", "add", "roles", "max_request_bytes", "streams", "sources"]
    remote = inspect.signature(bigtable_lite.RemoteStore).parameters
    assert list(remote) == ["address", "timeout", "limits"] and remote["timeout"].default == 30.0


def test_client_works_in_a_fresh_interpreter() -> None:
    """Nothing the client needs may depend on what tests or the server imported first."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import bigtable_lite.remote as r; r.channel_options(r.DEFAULT_LIMITS);"
            " r.RemoteStore('127.0.0.1:1').close()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
