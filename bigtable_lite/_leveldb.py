"""The LevelDB binding: plyvel's code, from the distribution that has wheels for this Python.

plyvel itself publishes wheels for CPython up to 3.12 on x86_64 Linux only; elsewhere pip
compiles it and needs LevelDB's headers.  Its code is republished unchanged, with LevelDB and
Snappy inside wheels for Linux x86_64 and aarch64 and for macOS, by plyvel-ci for 3.11 and by
its maintained successor plyvel-next (module renamed ``plyvel_next``) for 3.12 on.
pyproject.toml installs one or the other on the same Python-version test as here.
"""

import sys

if sys.version_info >= (3, 12):
    import plyvel_next as plyvel
else:
    import plyvel

__all__ = ["plyvel"]
