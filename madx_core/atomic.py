"""Atomic writing: a file or a directory appears whole, or not at all; readers never see half of one.

Everything madx_core and the app write to disk (adapters, checkpoints, results, zips, the converted backbone) goes
through here: write a temporary sibling, then `os.replace` it into place. A run killed while writing leaves the last
whole version (and at most a dot-named temporary, which nothing reads).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing ("w" text, "wb" bytes); it replaces `path` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


@contextmanager
def atomic_dir(out_dir: str | Path, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling directory to fill; on success it is moved to `out_dir`.

    An existing `out_dir` is swapped out (never left half-written), or with `replace=False` kept as it is: then the
    other writer that finished first wins and this one's files are dropped (e.g. two processes building one cache).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if not (out.exists() and not replace):
            replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place; an existing one is swapped out, never left half-written."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old.{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
