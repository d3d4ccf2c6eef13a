#!/usr/bin/env python
"""Convert ROOT TTrees (voxel arrays or per-hit) to a CaloChallenge HDF5 file.

A thin script over :mod:`fastsim.data.root_cli` (the same as ``fastsim prep-root``); run with
``--help`` for the options. Exit status 2 on bad input, with one line naming the file and problem.
"""

from __future__ import annotations

import sys

from fastsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["prep-root", *sys.argv[1:]]))
