# SPDX-License-Identifier: MIT
"""cffi builder (out-of-line API mode) for shim._icmp6.

The cdef is native/icmp6.h minus its '#' lines, so the header is the one
contract between C and Python. Strict flags apply to our C only: icmp6.c
turns every -Wall/-Wextra/-Wpedantic/-Wshadow/-Wconversion warning into an
error with `#pragma GCC diagnostic error`, so it fails to build on any
warning whoever compiles it, while the cffi-generated wrapper (same
extension, same command line) may warn without breaking the build.

Paths given to setuptools are relative to the project root (setuptools
rejects absolute source paths when it writes SOURCES.txt for an sdist);
setup.py runs with the project root as working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

__all__ = ["CFLAGS", "ffibuilder"]

HERE = Path(__file__).resolve().parent
HEADER = HERE / "icmp6.h"
SOURCES = ("icmp6.c",)

# No -Werror here on purpose: it would also apply to the generated wrapper.
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra"]


def _rel(path: Path) -> str:
    """Return path relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(path)


ffibuilder = FFI()
ffibuilder.cdef(
    "\n".join(
        line for line in HEADER.read_text().splitlines() if not line.lstrip().startswith("#")
    )
)
ffibuilder.set_source(
    "shim._icmp6",
    '#include "icmp6.h"',
    sources=[_rel(HERE / s) for s in SOURCES],
    include_dirs=[_rel(HERE)],
    depends=[_rel(HEADER)],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
