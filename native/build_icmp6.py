# SPDX-License-Identifier: MIT
"""cffi builder (out-of-line API mode) for shim._icmp6.

The cdef is native/icmp6.h then native/engine.h, minus their '#' lines, so
the headers are the one contract between C and Python. Strict flags apply
to our C only: icmp6.c, classify.c (the compiled classifier) and engine.c (the batched NFQUEUE loop) turn every
-Wall/-Wextra/-Wpedantic/-Wshadow/-Wconversion warning into an error with
`#pragma GCC diagnostic error`, so they fail to build on any warning
whoever compiles them, while the cffi-generated wrapper (same
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
HEADERS = (HERE / "icmp6.h", HERE / "classify.h", HERE / "engine.h")  # cdef order: icmp6.h first
SOURCES = ("icmp6.c", "classify.c", "engine.c")

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
        line for header in HEADERS for line in header.read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
)
ffibuilder.set_source(
    "shim._icmp6",
    '#include "engine.h"\n#include "classify.h"',  # engine.h includes icmp6.h
    sources=[_rel(HERE / s) for s in SOURCES],
    include_dirs=[_rel(HERE)],
    depends=[_rel(h) for h in (*HEADERS, HERE / "strict.h")],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
