"""Provenance attributes written into every output file (package version, host, time, …)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import time
from typing import Any


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_hash(config: Any) -> str:
    """Short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def provenance(**extra: Any) -> dict[str, Any]:
    """Attributes describing who wrote a file, when and with what.

    Values that are not str/int/float/bool are JSON-encoded so they fit an HDF5 attribute.
    """
    from fastsim import __version__

    attrs: dict[str, Any] = {
        "fastsim_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
    }
    for key, value in extra.items():
        if value is None:
            continue
        if isinstance(value, (str, int, float, bool)):
            attrs[key] = value
        else:
            attrs[key] = json.dumps(value, sort_keys=True, default=str)
    return attrs
