"""Files beside a log that other people may share a folder with: the writer lock and private temporary files.

Names beside a log are predictable (``.run.h5.lock``, the checkpoint ``run.h5.ckpt``), so they are opened
without following a symbolic link planted there, and temporary files get an unpredictable name created
exclusively (``O_EXCL``, as `tempfile.mkstemp` does), then renamed over their target. A temporary file's
name is ``.<target name>.tmp-<random>`` and `remove_stale_temps` removes exactly those names for exactly the
targets of the run holding the lock, never another log's files (``--out c/live`` does not touch ``c/live.h5``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py

from ef21_mpi.errors import InputError

TEMP_MARK = ".tmp-"
FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # the disk (or the file size limit, or the quota) is full


class StorageFull(InputError):
    """Writing the log or the checkpoint failed for lack of space: the run stops with one line and stays resumable."""
_RANDOM = re.compile(r"[a-z0-9_]+")  # the alphabet of tempfile's random names


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@dataclass
class WriterLock:
    """The open lock file, and whether this process created it (a stale one left by a killed writer is reused)."""

    handle: object
    created: bool

    def close(self) -> None:
        self.handle.close()


def acquire_writer_lock(path: Path) -> WriterLock:
    """Hold an exclusive lock beside the log while a process writes it (released when the process dies).

    The lock file is opened without following a symbolic link and must be a regular file (a FIFO or a device
    planted at its name is refused). Raises BlockingIOError when another live process holds it, OSError when
    the file cannot be created or is not a plain file.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd, created = os.open(lock_path(path), flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        fd, created = os.open(lock_path(path), flags), False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "the lock's name is taken by something that is not a plain file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return WriterLock(os.fdopen(fd, "r+"), created)


def release_writer_lock(path: Path, lock: WriterLock, *, refused: bool = False) -> None:
    """Remove the lock file (it is ours while we hold it) and let go of the lock. After a refusal (nothing was
    run) a lock file found at start-up is left as it was found: a refused command changes no file."""
    try:
        if lock.created or not refused:
            lock_path(path).unlink(missing_ok=True)
    finally:
        lock.close()


def write_atomically(target: Path, data: bytes, *, sync: bool = False,
                     before_rename: Callable[[], None] | None = None) -> None:
    """Put ``data`` at ``target`` atomically: a private temporary file ``.<target>.tmp-<random>`` beside it, created
    exclusively (never through a link) with the permission bits of the file it replaces, then renamed over it.

    On any failure (a full disk: ENOSPC, EFBIG) the temporary file is removed and ``target`` is left as it was.
    ``before_rename`` runs between writing and renaming (the fault-injection hook of the crash tests).
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARK}", dir=target.parent)
    try:
        try:
            os.fchmod(fd, file_mode(target))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename()
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def hdf5_image(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file built in memory by ``fill``: HDF5 itself never writes to disk, so a full disk is a
    plain OSError of `write_atomically`, never an HDF5 library left half-closed."""
    # the HDF5 1.8 format: attributes past 64 KiB (L_i and shard_sizes of 10^4 workers) go to dense storage
    with h5py.File(f"in-memory-{id(fill)}-{time.monotonic_ns()}", "w", driver="core", backing_store=False,
                   libver=("v108", "latest")) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def file_mode(target: Path) -> int:
    """Permission bits for a file about to replace ``target``: its own if it exists, else 0o666 minus the umask."""
    try:
        return stat.S_IMODE(os.lstat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def is_temp_of(name: str, target: Path) -> bool:
    """Is ``name`` exactly a temporary file of ``target`` (as `write_atomically` names them)?"""
    prefix = f".{target.name}{TEMP_MARK}"
    return name.startswith(prefix) and _RANDOM.fullmatch(name[len(prefix):]) is not None


def remove_stale_temps(targets: list[Path]) -> None:
    """Delete the temporary files a killed writer of these targets left behind (call it holding their lock)."""
    folder = targets[0].parent
    for entry in os.scandir(folder if str(folder) else "."):
        if any(is_temp_of(entry.name, t) for t in targets) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)


def lock_output(out: Path, overwrite: bool, companions: tuple[Path, ...] = ()):
    """Take the writer lock of ``out`` before anything slow happens (the data load), then, holding it, check
    again that an existing log may be replaced and remove the temporary files a killed writer of ``out`` (and
    of its ``companions``, the checkpoint) left behind. Returns the lock; one-line `InputError` otherwise."""
    try:
        handle = acquire_writer_lock(out)
    except BlockingIOError:
        raise InputError(f"{out} is being written by a running job (lock {lock_path(out)} is held)") from None
    except OSError as err:
        raise InputError(f"--out {out}: cannot create its lock file {lock_path(out)} ({err.strerror})") from None
    try:
        if out.exists() and not overwrite:  # a run that finished while we waited to start
            raise InputError(f"--out {out} already exists; pass --overwrite to replace it")
        remove_stale_temps([out, *companions])
    except BaseException:
        release_writer_lock(out, handle, refused=True)
        raise
    return handle


def make_folders(folder: Path, label: str = "") -> list[Path]:
    """Create ``folder`` and its missing parents (``mkdir -p``); returns the folders created, outermost first,
    for `remove_folders`. One-line `InputError` (starting with ``label``) when one cannot be created."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made meanwhile by another process: not ours to remove
            continue
        except OSError as err:
            remove_folders(created)
            raise InputError(f"{label}cannot create folder {path} ({err.strerror})") from None
        created.append(path)
    return created


def remove_folders(created: list[Path]) -> None:
    """Remove the folders `make_folders` created, innermost first, as long as they are empty."""
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            return
