"""Server reflection that serves the contracts' comments.

gRPC's reflection servicer answers from a descriptor pool, but a file descriptor copied
out of a pool has no ``source_code_info`` (where protoc keeps comments), and the
generated Python modules do not carry it anyway.  ``proto/generate.py`` therefore
writes each contract's descriptor with its comments beside the generated module
(``<name>_source.binpb``, protoc ``--include_source_info``); :class:`SourcePool`
answers the reflection servicer's lookups from the default pool (which the generated
modules fill) and hands out those descriptors, comments included, where it has them.
So ``grpcurl describe`` and other reflection clients show each method's contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor

__all__ = ["SourcePool", "source_descriptors"]

SOURCE_SUFFIX = "_source.binpb"


def source_descriptors(package: str) -> list[bytes]:
    """The serialized ``FileDescriptorSet``s with comments in a generated package
    (e.g. ``"bigtable_lite.v1"``)."""
    root = resources.files(package)
    return [entry.read_bytes() for entry in sorted(root.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(SOURCE_SUFFIX)]


class _File:
    """What the reflection servicer reads of a file descriptor: its name, its
    dependencies, and ``CopyToProto`` (here with the comments, where known)."""

    def __init__(self, descriptor: FileDescriptor,
                 sources: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._descriptor = descriptor
        self._sources = sources
        self.name: str = descriptor.name

    @property
    def dependencies(self) -> list[_File]:
        return [_File(d, self._sources) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        source = self._sources.get(self.name)
        if source is None:
            self._descriptor.CopyToProto(proto)
        else:
            proto.CopyFrom(source)


class SourcePool:
    """A descriptor pool for ``grpc_reflection``'s servicer (its ``pool`` argument):
    lookups in the default pool, file descriptors with comments from ``sources``
    (serialized ``FileDescriptorSet``s, e.g. from :func:`source_descriptors`)."""

    def __init__(self, sources: Iterable[bytes]) -> None:
        self._pool = descriptor_pool.Default()
        self._sources: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for data in sources:
            for proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
                self._sources[proto.name] = proto

    def FindFileByName(self, name: str) -> _File:
        return _File(self._pool.FindFileByName(name), self._sources)

    def FindFileContainingSymbol(self, symbol: str) -> _File:
        return _File(self._pool.FindFileContainingSymbol(symbol), self._sources)

    def FindMessageTypeByName(self, name: str) -> Any:
        return self._pool.FindMessageTypeByName(name)

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:
        return self._pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: Any) -> Any:
        return self._pool.FindAllExtensions(message)
