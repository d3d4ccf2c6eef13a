"""Ctrl-C for subprocess tests: press it until the process exits, as a user would."""

from __future__ import annotations

import signal
import subprocess


def restore_sigint() -> None:
    """``preexec_fn`` for Popen: SIGINT back to its default in the child.

    A shell that starts a job in the background without job control (``cmd &`` in a script, as
    some CI runners do) sets SIGINT to "ignore", children inherit that, and a Python started with
    SIGINT ignored never installs its KeyboardInterrupt handler: Ctrl-C tests would then wait forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def press_ctrl_c(proc: subprocess.Popen, presses: int = 12, wait: float = 10.0) -> str:
    """Send SIGINT up to ``presses`` times, ``wait`` seconds apart, until ``proc`` exits; kill it
    if it never does. Returns its stderr ("" if it was killed).

    A KeyboardInterrupt that lands inside a finaliser is swallowed by Python (more likely on a
    loaded machine), so one press is not always enough, for a user either.
    """
    err = ""
    try:
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err or ""
