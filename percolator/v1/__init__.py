"""Generated protobuf/gRPC code (see proto/generate.py)."""
