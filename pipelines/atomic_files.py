"""Files that are either fully written or not there: write to a temporary name, fsync, rename.

A crash, ``kill -9`` or a full disk in the middle of a write leaves the previous version intact and
at most a stray ``*.tmp-*`` file, which readers ignore.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class DiskWriteError(OSError):
    """A file could not be written (full disk, read-only folder); the message says which and why."""


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` atomically; the folder is created when missing."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DiskWriteError(err.errno, _describe(err, path)) from err
    _fsync_dir(path.parent)
    return path


def append_line(path: str | Path, line: str) -> None:
    """Append one line with a single ``write`` (O_APPEND), so concurrent appenders never interleave
    inside a line and a crash leaves at most the last line incomplete."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _describe(err: OSError, path: Path) -> str:
    if err.errno == errno.ENOSPC:
        return f"could not write '{path}': the disk is full; free some space and resume the run."
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"could not write '{path}': the folder is not writable; choose another output folder."
    return f"could not write '{path}': {err.strerror or err}."


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
