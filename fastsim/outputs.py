"""Output files: checked before any work, written under a temporary name, published when complete.

The one place for "write under a temporary name, publish when complete, refuse or overwrite":

- :func:`temporary_path` names a hidden file next to the output (same directory, so the final
  rename is atomic); :func:`publish` moves the finished file onto the output, refusing (or
  replacing, with ``overwrite``) one that appeared meanwhile; :func:`atomic_output` does both
  around a ``with`` block and removes the temporary file on any exception; :func:`write_text`
  and :func:`write_json` are the one-call forms. :func:`temporary_dir`/:func:`publish_dir` do
  the same for a directory of outputs (a report) replaced whole.
- :func:`check_target` is the library writers' output-exists check (a one-line
  :class:`~fastsim.errors.InputFileError`); commands check earlier still with
  :func:`check_output_file` or :func:`check_output_dir`.
- :func:`remove_stale_partials` removes what killed writers left behind.
- :func:`read_json` reads back what :func:`write_json` wrote, with one-line errors.

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
import json
import math
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

from fastsim.errors import InputFileError

__all__ = [
    "atomic_output",
    "check_output_dir",
    "check_output_file",
    "check_target",
    "discard",
    "jsonable",
    "publish",
    "publish_dir",
    "read_json",
    "remove_stale_partials",
    "temporary_dir",
    "temporary_path",
    "write_json",
    "write_text",
]


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


#: ``.{name}.{tag}-{pid}-{random}`` (:func:`temporary_path`, :func:`temporary_dir`) or
#: ``.{name}.{tag}-{pid}`` (files of older versions)
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

    Only entries named like :func:`temporary_path` makes them for this very
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
    (:func:`temporary_path`, removed by :func:`remove_stale_partials` if its process dies)."""
    tmp = temporary_path(os.fspath(path).rstrip(os.sep) or os.sep)
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


# --------------------------------------------------------------------------------------- files
def temporary_path(path: str | os.PathLike, tag: str = "partial") -> str:
    """A hidden temporary name next to ``path`` (same directory, so the final rename is atomic).

    ``.{name}.{tag}-{pid}-{random}``: the pid says which process left it behind after a hard
    kill (:func:`remove_stale_partials`), the random part keeps two writers of one process apart.
    """
    d, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(d, f".{name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def check_target(path: str | os.PathLike, overwrite: bool) -> str:
    """The library writers' check of an output file before they create its temporary file.

    Raises:
        InputFileError: ``path`` is a directory, exists without ``overwrite``, or its directory
            is missing.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputFileError(path, "output path is a directory")
    if os.path.exists(path) and not overwrite:
        raise InputFileError(path, "output file exists (pass overwrite=True / --overwrite to replace it)")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise InputFileError(path, f"output directory {d} does not exist")
    return path


def publish(tmp_path: str, path: str | os.PathLike, overwrite: bool) -> None:
    """Move a finished temporary file onto ``path`` atomically.

    With ``overwrite`` this is :func:`os.replace`. Without it, a hard link is made first, which
    fails if ``path`` appeared meanwhile (another process, another writer), so the promise not
    to overwrite holds even against races; on file systems without hard links it falls back to
    a check followed by :func:`os.replace`.

    Raises:
        InputFileError: ``path`` exists and ``overwrite`` is false.
    """
    path = os.fspath(path)
    if overwrite:
        os.replace(tmp_path, path)
        return
    try:
        os.link(tmp_path, path)
    except FileExistsError:
        raise InputFileError(path, "output file appeared while writing; not overwritten") from None
    except OSError:  # no hard links here (some network/FUSE file systems)
        if os.path.exists(path):
            raise InputFileError(path, "output file appeared while writing; not overwritten") from None
        os.replace(tmp_path, path)
        return
    os.remove(tmp_path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True, tag: str = "partial") -> Iterator[str]:
    """Yield a temporary name for ``path``; publish it there when the block ends cleanly.

    Any exception, ``KeyboardInterrupt`` included, removes the temporary file, so ``path`` is
    either the old file or the complete new one, never half of one.

    Example::

        with atomic_output("model.onnx") as tmp:
            onnx.save(proto, tmp)
    """
    tmp = temporary_path(path, tag)
    try:
        yield tmp
        publish(tmp, path, overwrite)
    finally:
        if os.path.lexists(tmp):
            discard(tmp)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_output`."""
    with atomic_output(path, overwrite) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def jsonable(obj: Any) -> Any:
    """``obj`` as strict JSON values, recursively: NaN/inf -> None, numpy scalars and arrays ->
    Python, tuples -> lists, keys -> str."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        val = float(obj)
        return val if math.isfinite(val) else None
    return obj


def write_json(path: str | os.PathLike, data: Any, overwrite: bool = True) -> None:
    """Write strict JSON (:func:`jsonable`: NaN/inf as null) to ``path`` through :func:`atomic_output`."""
    text = json.dumps(jsonable(data), indent=1, allow_nan=False)
    write_text(path, text + "\n", overwrite)


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON content of a file :func:`write_json` wrote; ``what`` names the file in the errors.

    Raises:
        InputFileError: ``"<what> not found"``, or ``"not readable JSON <what> (<reason>)"``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileError(path, f"{what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise InputFileError(path, f"not readable JSON {what} ({type(err).__name__}: {err})") from None

