"""Output files written whole or not at all: every exporter writes to temporary names beside the
target and renames them into place only once everything succeeded (DESIGN.md, Runs)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class ExportError(ValueError):
    """An export the user asked for cannot be done; the message is one sentence saying why."""


def check_file_target(path: str | Path, overwrite: bool = False, suffixes: Sequence[str] = ()) -> Path:
    """Validate an output file path and create its folder; raise :class:`ExportError` on a bad one."""
    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise ExportError(f"'{path}' should end in {' or '.join(suffixes)} for this format.")
    if path.is_dir():
        raise ExportError(f"'{path}' is a folder; give a file name to export to.")
    if path.exists() and not overwrite:
        raise ExportError(f"'{path}' already exists; pass overwrite=True (--overwrite) to replace it.")
    _make_folder(path.parent)
    return path


def check_folder_target(path: str | Path, overwrite: bool = False, marker: str | None = None) -> Path:
    """Validate an output folder; an existing one is replaced only with ``overwrite`` and only if it
    holds ``marker`` (a file this exporter wrote), so a user's own folder is never deleted."""
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"'{path}' is a file; this format writes a folder.")
        if any(path.iterdir()):
            if not overwrite:
                raise ExportError(f"'{path}' already exists and is not empty; pass overwrite=True (--overwrite) "
                                  f"to replace it.")
            if marker is not None and not (path / marker).exists():
                raise ExportError(f"'{path}' is not empty and was not written by this exporter; choose another folder.")
    _make_folder(path.parent)
    return path


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create the folder '{folder}' ({err.strerror or err}).") from None
    if not os.access(folder, os.W_OK):
        raise ExportError(f"the folder '{folder}' is not writable.")


def _temp_name(path: Path) -> Path:
    # Same folder (so the rename is atomic), same suffix (so writers that look at it pick the format).
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


@contextmanager
def atomic_files(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; on success rename each into place, on failure delete them."""
    temps = [_temp_name(Path(p)) for p in paths]
    try:
        yield temps
        for tmp, path in zip(temps, paths, strict=True):
            if not tmp.exists():
                raise RuntimeError(f"exporter did not write '{path.name}'")
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
    except OSError as err:
        _remove(temps)
        raise ExportError(f"writing '{paths[0]}' failed ({err.strerror or err}).") from None
    except BaseException:
        _remove(temps)
        raise


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` once the block succeeds."""
    tmp = _temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"writing '{path}' failed ({err.strerror or err}).") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove(paths: Sequence[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
