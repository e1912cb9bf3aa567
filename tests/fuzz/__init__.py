"""Property-based fuzzing of every RPC a `percolator serve` node serves (issue 16)."""
