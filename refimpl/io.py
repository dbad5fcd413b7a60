"""Files: atomic writes and checked reads. Nothing else in refimpl opens a file for writing."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import UsageError

__all__ = ["write_atomic", "check_writable"]


def write_atomic(path, text: str) -> bool:
    """Write ``text`` to ``path`` via a temp file in the same directory + fsync + rename.

    A reader (or a crash) sees the old file or the new one, never a mix. Returns False (and writes
    nothing) when the file already has exactly this content.
    """
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        while True:     # the temp file is named before it exists: an interrupt (SIGTERM raises during an export)
            #             arriving just after it is made still finds it to remove (mkstemp names it after)
            tmp = name = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the usual mode, umask applied
                break
            except FileExistsError:             # another writer's: never ours to remove
                tmp = None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def check_directory(path, what: str) -> Path:
    """Refuse, before any work is done, a directory option (``--repro-dir``) that is a file or cannot be made."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {path}: is a file, not a directory")
    existing = next((a for a in (p, *p.parents) if a.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: {existing} is not a writable directory")
    return p


def check_writable(path, what: str) -> Path:
    """Refuse, before any work is done, a report path that cannot be written as a regular file.

    ``what`` names the option (``--output``) in the message. Returns the path.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        kind = "a directory" if p.is_dir() else "not a regular file"
        raise UsageError(f"{what} {path}: is {kind}; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: the directory {parent} does not exist")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{what} {path}: the file is not writable")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: the directory {parent} is not writable (a temp file is written there "
                         f"and renamed)")
    if p.exists() and stat.S_ISREG(p.stat().st_mode) and str(p.resolve()).startswith("/proc/"):
        raise UsageError(f"{what} {path}: is a kernel file, not a report file")
    return p
