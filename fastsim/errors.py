"""Errors meant for the user: one line that names the file and the problem.

The CLI catches :class:`FastsimError`, prints its message on one line and exits non-zero,
so library code raises these instead of calling ``exit()``.
"""

from __future__ import annotations

import os


class FastsimError(Exception):
    """A problem the user can fix (bad input, bad option); its message is one line."""


class InputFileError(FastsimError, ValueError):
    """A problem with one input file.

    Args:
        path: the file (or ``file:tree/branch``) the problem is in.
        problem: what is wrong, one line, no trailing full stop needed.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
