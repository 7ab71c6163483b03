"""Atomic writes (newton_lab.io): all-or-nothing replacement, no temporary files left behind,
and the permissions of any newly created file."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from newton_lab.io import atomic_write, atomic_write_bytes, atomic_write_text


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_success_replaces_the_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old content")
    with atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old content"  # nothing visible before the end
    assert target.read_bytes() == b"new"
    assert _names(tmp_path) == ["f.bin"]


def test_creates_missing_parent_directories(tmp_path):
    target = tmp_path / "a" / "b" / "f.txt"
    atomic_write_text(target, "héllo")
    assert target.read_bytes() == "héllo".encode()


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_exception_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(error):
        with atomic_write(target) as f:
            f.write(b"half-writ")
            raise error
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["f.bin"], "temporary file left behind"


def test_exception_without_a_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "f.bin"):
            raise RuntimeError
    assert _names(tmp_path) == []


def test_failed_replace_removes_the_temporary(tmp_path):
    target = tmp_path / "d"
    target.mkdir()  # os.replace of a file onto a directory fails
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"x")
    assert _names(tmp_path) == ["d"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
        with open(tmp_path / "reference", "wb"):  # oracle: how the OS creates any new file
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "f.bin").stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE((tmp_path / "reference").stat().st_mode)
