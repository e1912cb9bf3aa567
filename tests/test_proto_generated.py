"""The committed protobuf/gRPC code is exactly what proto/generate.py makes from proto/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generate = load_generator()
    outputs = generate.generate(tmp_path)
    assert outputs, "no .proto files found"
    stale = []
    for fresh in outputs:
        rel = fresh.relative_to(tmp_path)
        committed = REPO / rel
        if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
            stale.append(str(rel))
    assert not stale, (f"generated code is stale or missing: {stale}; run"
                       f" `{Path(sys.executable).name} proto/generate.py` and commit the result")


def test_every_proto_has_generated_code() -> None:
    generate = load_generator()
    for proto in generate.proto_files():
        rel = proto.relative_to(REPO / "proto")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (REPO / rel.parent / f"{rel.stem}{suffix}").exists(), rel
