from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetTimestampsRequest(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class GetTimestampsResponse(_message.Message):
    __slots__ = ("first", "count", "safe_point")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    first: int
    count: int
    safe_point: int
    def __init__(self, first: _Optional[int] = ..., count: _Optional[int] = ..., safe_point: _Optional[int] = ...) -> None: ...

class GetOracleStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OracleStats(_message.Message):
    __slots__ = ("timestamps_served", "requests", "persisted_high_water")
    TIMESTAMPS_SERVED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    timestamps_served: int
    requests: int
    persisted_high_water: int
    def __init__(self, timestamps_served: _Optional[int] = ..., requests: _Optional[int] = ..., persisted_high_water: _Optional[int] = ...) -> None: ...
