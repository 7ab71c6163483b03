"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Files are written to a temporary name in the target directory, flushed, ``fsync``-ed and renamed
over the target with ``os.replace`` (atomic on POSIX and Windows); the directory is then synced
so the rename survives a crash. Used by the data caches, run directories and reports.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "emit_table", "write_or_print"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary binary file next to ``path``; on success it replaces ``path`` atomically.

    On an exception (or interruption) inside the ``with`` block the temporary file is removed
    and ``path`` is left as it was. The new file's permissions follow the process umask, like
    any newly created file (0o644 under the usual umask 0o022).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> with atomic_write(target) as f:
        ...     _ = f.write(b"abc")
        >>> target.read_bytes()
        b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


_OPEN_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)  # fmt: skip


def _create_temporary(path: Path) -> tuple[int, str]:
    """Create a new, uniquely named file next to ``path``; returns ``(fd, name)``.

    Created with mode 0o666 so that the operating system applies the process umask (and any
    default ACL of the directory), as for a file opened with ``open(path, "w")``; ``mkstemp``
    would make it 0o600, and reading the umask to emulate this is not thread-safe.
    """
    for _ in range(100):
        name = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, _OPEN_FLAGS, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; not possible (nor needed) on every platform.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def emit_table(parser, build, out: str | os.PathLike | None) -> int:
    """The tail of the analysis scripts: ``build()`` makes the text; a ValueError from it (no such
    run directory, a pattern matching nothing, an unreadable run) becomes ``parser``'s usage
    error (exit 2); the text is written to ``out`` atomically or printed. Returns 0."""
    try:
        text = build()
    except ValueError as exc:
        parser.error(str(exc))
    write_or_print(text, out)
    return 0


def write_or_print(text: str, out: str | os.PathLike | None) -> None:
    """Print ``text`` to stdout, or, with a path, write it there atomically (creating the parent
    directories) and say so: the output step of the analysis scripts under ``scripts/``."""
    if out is None:
        sys.stdout.write(text)
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    print(f"written: {out}")
