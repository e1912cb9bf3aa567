"""Framing (percolator._transport.framing): a batch joined from framed entries is byte for
byte what the generated code serializes, for every command and result kind, and the
tags come from the descriptors (a varint: one byte up to field 15, two from 16)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from percolator._node_codec import COMMAND_TAGS, ENTRY_TAG, RESULT_TAGS
from percolator._transport.framing import field, frame, tags, varint
from percolator.v1 import node_pb2 as pb
from percolator.v1 import oracle_pb2

LONG = 300  # bytes of a filled bytes field: its length takes a two-byte varint


def filled(message: Message, depth: int = 0) -> Message:
    """``message`` with every field set to something not default (nested messages too,
    two levels deep; one entry per repeated field; the first member of a oneof)."""
    seen_oneofs: set[str] = set()
    for f in message.DESCRIPTOR.fields:
        if f.containing_oneof is not None:
            if f.containing_oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(f.containing_oneof.name)
        value = _sample(f)
        if f.message_type is not None:
            if depth >= 2:
                continue
            if f.is_repeated:
                filled(getattr(message, f.name).add(), depth + 1)
            else:
                filled(getattr(message, f.name), depth + 1)
        elif f.is_repeated:
            getattr(message, f.name).append(value)
        else:
            setattr(message, f.name, value)
    return message


def _sample(f: Any) -> Any:
    if f.message_type is not None:
        return None
    if f.type == FieldDescriptor.TYPE_BYTES:
        return b"\x00\xff" * (LONG // 2)
    if f.type == FieldDescriptor.TYPE_STRING:
        return "s" * LONG
    if f.type == FieldDescriptor.TYPE_BOOL:
        return True
    if f.type == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values[-1].number
    return 2**32 + 7 if f.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT64) \
        else 300


def kinds(oneof_holder: Any) -> list[str]:
    """The field names of a message Descriptor."""
    return [f.name for f in oneof_holder.fields]


def entry(holder: type[Message], kind: str, msg: Message) -> Any:
    """A ``Command`` or ``Result`` of ``kind`` holding ``msg``."""
    out = holder()
    getattr(out, kind).CopyFrom(msg)
    return out


def payload_class(holder: type[Message], kind: str) -> type[Message]:
    cls: type[Message] = type(getattr(holder(), kind))
    return cls


# --- tags ---------------------------------------------------------------------------------


def test_tags_are_the_descriptors_field_numbers_length_delimited() -> None:
    for descriptor, got in ((pb.Command.DESCRIPTOR, COMMAND_TAGS),
                            (pb.Result.DESCRIPTOR, RESULT_TAGS)):
        assert set(got) == {f.name for f in descriptor.fields}
        for f in descriptor.fields:
            assert got[f.name] == varint(f.number << 3 | 2), f.full_name
    assert ENTRY_TAG == bytes((pb.BatchRequest.DESCRIPTOR.fields_by_name["commands"].number
                               << 3 | 2,))
    assert tags(pb.BatchResponse.DESCRIPTOR)["results"] == ENTRY_TAG


def test_a_field_numbered_past_15_takes_a_two_byte_tag() -> None:
    proto = descriptor_pb2.FileDescriptorProto(name="framing_test.proto", package="ft")
    message = proto.message_type.add(name="M")
    for name, number in (("fits", 15), ("past", 16), ("far", 2047), ("farther", 2048)):
        message.field.add(name=name, number=number, type=FieldDescriptor.TYPE_BYTES,
                          label=FieldDescriptor.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    got = tags(pool.FindMessageTypeByName("ft.M"))
    assert {name: len(tag) for name, tag in got.items()} == {
        "fits": 1, "past": 2, "far": 2, "farther": 3}
    assert got["past"] == b"\x82\x01"


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**21, 2**35, 2**64 - 1])
def test_varint_is_the_protobuf_encoding(n: int) -> None:
    # GetTimestampsResponse.first is field 1, a varint: tag 0x08, then the number.
    encoded = oracle_pb2.GetTimestampsResponse(first=n).SerializeToString()
    assert varint(n) == (encoded[1:] if n else b"\x00")


# --- every command and every result -----------------------------------------------------------


@pytest.mark.parametrize("kind", kinds(pb.Command.DESCRIPTOR))
@pytest.mark.parametrize("content", ["filled", "empty"])
def test_a_framed_command_is_what_the_generated_code_serializes(kind: str, content: str) -> None:
    msg = payload_class(pb.Command, kind)()
    if content == "filled":
        filled(msg)
        assert msg.ListFields() or not msg.DESCRIPTOR.fields, "something set"
    expected = pb.BatchRequest(commands=[entry(pb.Command, kind, msg)]).SerializeToString()
    assert frame(ENTRY_TAG, COMMAND_TAGS[kind], msg.SerializeToString()) == expected
    parsed = pb.BatchRequest.FromString(expected)
    assert parsed.commands[0].WhichOneof("kind") == kind  # set, even when empty
    assert getattr(parsed.commands[0], kind) == msg


@pytest.mark.parametrize("kind", kinds(pb.Result.DESCRIPTOR))
@pytest.mark.parametrize("content", ["filled", "empty"])
def test_a_framed_result_is_what_the_generated_code_serializes(kind: str, content: str) -> None:
    msg = payload_class(pb.Result, kind)()
    if content == "filled":
        filled(msg)
    expected = pb.BatchResponse(results=[entry(pb.Result, kind, msg)]).SerializeToString()
    assert frame(ENTRY_TAG, RESULT_TAGS[kind], msg.SerializeToString()) == expected
    assert pb.BatchResponse.FromString(expected).results[0].WhichOneof("kind") == kind


def test_a_batch_of_every_kind_joined_is_the_generated_batch() -> None:
    commands = [entry(pb.Command, k, filled(payload_class(pb.Command, k)()))
                for k in kinds(pb.Command.DESCRIPTOR)]
    results = [entry(pb.Result, k, filled(payload_class(pb.Result, k)()))
               for k in kinds(pb.Result.DESCRIPTOR)]
    joined = b"".join(frame(ENTRY_TAG, COMMAND_TAGS[str(c.WhichOneof("kind"))],
                            getattr(c, str(c.WhichOneof("kind"))).SerializeToString())
                      for c in commands)
    assert joined == pb.BatchRequest(commands=commands).SerializeToString()
    joined = b"".join(frame(ENTRY_TAG, RESULT_TAGS[str(r.WhichOneof("kind"))],
                            getattr(r, str(r.WhichOneof("kind"))).SerializeToString())
                      for r in results)
    assert joined == pb.BatchResponse(results=results).SerializeToString()


def test_a_large_entry_has_a_multi_byte_length() -> None:
    """A command of several MiB: both lengths (the entry's, the command's) take 4 bytes."""
    msg = pb.PrewriteRequest(table=b"t", rows=[pb.RowWrites(row=b"r", cells=[
        pb.CellWrite(column=b"c", value=b"v" * (3 << 20))])])
    framed = frame(ENTRY_TAG, COMMAND_TAGS["prewrite"], msg.SerializeToString())
    assert framed == pb.BatchRequest(commands=[pb.Command(prewrite=msg)]).SerializeToString()


def test_field_is_one_length_delimited_field() -> None:
    key = pb.Key(row=b"r" * 200, column=b"c")
    as_field = field(tags(pb.PrewriteRequest.DESCRIPTOR)["primary"], key.SerializeToString())
    assert as_field == pb.PrewriteRequest(primary=key).SerializeToString()
