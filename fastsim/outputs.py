"""Output paths checked before any work, and stale temporary files of dead writers.

Every command that writes checks its outputs first with :func:`check_output_file` or
:func:`check_output_dir`, so a typo in ``-o`` costs no computing and is one line: an existing
output without ``--overwrite``, a missing parent directory, a parent that is a regular file, a
directory nobody may create files in (a read-only mount, ``/proc``, no permission). The
writability test creates and removes a hidden probe file in the directory: permission bits say
nothing for root, and read-only file systems only show themselves when written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid

from fastsim.errors import InputFileError


def _probe_directory(path: str, directory: str) -> None:
    probe = os.path.join(directory, f".fastsim-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as err:
        reason = {
            errno.EROFS: "is on a read-only file system",
            errno.EACCES: "is not writable (permission denied)",
            errno.EPERM: "is not writable (operation not permitted)",
            errno.ENOSPC: "is full (no space left on the device)",
        }.get(err.errno, f"cannot hold new files ({err.strerror})")
        raise InputFileError(path, f"cannot write here: directory {directory} {reason}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.remove(probe)


def _check_parent(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path)) or os.sep
    if not os.path.exists(parent):
        # the nearest existing ancestor says whether it is a typo or a file in the way
        up = parent
        while not os.path.exists(up):
            up = os.path.dirname(up)
        if not os.path.isdir(up):
            raise InputFileError(path, f"{up} is a file, not a directory")
        raise InputFileError(path, f"output directory {parent} does not exist")
    if not os.path.isdir(parent):
        raise InputFileError(path, f"{parent} is a file, not a directory")
    return parent


def check_output_file(path: str | os.PathLike, overwrite: bool = False) -> str:
    """Check that a file can be written at ``path``, before any work.

    Raises:
        InputFileError: ``path`` is a directory, exists without ``overwrite``, or its directory
            is missing, a file, or not writable.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputFileError(path, "is a directory, not an output file name")
    if os.path.lexists(path) and not overwrite:
        raise InputFileError(path, "already exists (pass --overwrite to replace it)")
    _probe_directory(path, _check_parent(path))
    return path


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> str:
    """Check that a directory of outputs (a report) can be made at ``path``, before any work.

    An existing directory is refused without ``overwrite`` (and must then be writable).

    Raises:
        InputFileError: ``path`` is a file, exists without ``overwrite``, or its parent is
            missing, a file, or not writable.
    """
    path = os.fspath(path).rstrip(os.sep) or os.sep
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise InputFileError(path, "is a file, not a directory")
        if not overwrite:
            raise InputFileError(path, "already exists (pass --overwrite to replace it)")
        _probe_directory(path, path)
        return path
    _probe_directory(path, _check_parent(path))
    return path


#: ``.{name}.{tag}-{pid}-{random}`` (fastsim.data.hdf5.temporary_path, temporary_dir) or
#: ``.{name}.{tag}-{pid}`` (the simulation runner)
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<tag>[A-Za-z]+)-(?P<pid>\d+)(?:-[0-9a-f]{8})?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[str]:
    """Remove the hidden temporary files (and directories) that dead processes left for the
    output ``path``.

    Only entries named like :func:`fastsim.data.hdf5.temporary_path` makes them for this very
    output (``.{name}.{tag}-{pid}-{random}``) whose process no longer runs are removed: a
    concurrent writer's file (its process is alive) is never touched, nor is this process's.

    Returns:
        the removed paths.
    """
    path = os.path.abspath(os.fspath(path))
    d, name = os.path.split(path)
    removed = []
    try:
        entries = os.listdir(d)
    except OSError:
        return removed
    for entry in entries:
        m = _PARTIAL.match(entry)
        if not m or m.group("name") != name:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or _alive(pid):
            continue
        stale = os.path.join(d, entry)
        discard(stale)
        if not os.path.lexists(stale):
            removed.append(stale)
    return removed


def temporary_dir(path: str | os.PathLike) -> str:
    """Create and return a hidden directory next to ``path`` to build a directory of outputs in
    (``.{name}.partial-{pid}-{random}``, removed by :func:`remove_stale_partials` if its
    process dies)."""
    path = os.path.abspath(os.fspath(path).rstrip(os.sep))
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp)
    return tmp


def publish_dir(tmp: str, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Put the finished directory ``tmp`` at ``path``. An existing ``path`` (with ``overwrite``)
    is first renamed aside and removed only after the new one is in place, so the old run's
    files never stay beside the new ones, and a failure before this point leaves the old
    directory whole.

    Raises:
        InputFileError: ``path`` exists and ``overwrite`` is false.
    """
    import shutil

    path = os.fspath(path).rstrip(os.sep)
    old = None
    if os.path.lexists(path):
        if not overwrite:
            raise InputFileError(path, "appeared while writing; not overwritten")
        d, name = os.path.split(os.path.abspath(path))
        old = os.path.join(d, f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(tmp: str) -> None:
    """Remove a temporary file or directory, quietly."""
    import shutil

    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(tmp)
