"""Regenerate the Python protobuf/gRPC code from proto/ (never edit the output by hand).

Usage: python proto/generate.py [OUTPUT_ROOT]   (default: the repository root)

The generated modules land beside the packages they belong to, e.g.
proto/bigtable_lite/v1/tablet.proto -> bigtable_lite/v1/tablet_pb2.py, with
tablet_source.binpb: the file's descriptor *with* its comments (protoc
--include_source_info), which the generated Python modules do not carry; server
reflection serves it (bigtable_lite/reflection.py), so tools such as grpcurl show
the contracts' comments.
tests/test_proto_generated.py regenerates into a temporary directory and fails if
the committed files differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Generate every proto into out_root; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc  # test/dev dependency only

    include = Path(grpc_tools.__file__).parent / "_proto"
    outputs: list[Path] = []
    for proto in proto_files():
        rel = proto.relative_to(PROTO_ROOT)
        (out_root / rel.parent).mkdir(parents=True, exist_ok=True)
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            "--include_source_info",
            f"--descriptor_set_out={out_root / rel.parent / f'{rel.stem}_source.binpb'}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {rel}")
        package_dir = out_root / rel.parent
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf/gRPC code (see proto/generate.py)."""\n')
        stem = rel.stem
        outputs += [package_dir / f"{stem}_pb2.py", package_dir / f"{stem}_pb2.pyi",
                    package_dir / f"{stem}_pb2_grpc.py", package_dir / f"{stem}_source.binpb",
                    init]
    return outputs


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT
    for path in generate(target):
        print(path.relative_to(target))
