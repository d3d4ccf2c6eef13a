#!/usr/bin/env python
"""Thin script over ``fastsim generate`` (same options): showers from a checkpoint into HDF5.

Usage: ``python data_prep/generate.py --checkpoint wgan.ckpt -o gen.h5 --like ref.h5``
"""

from __future__ import annotations

import sys

from fastsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
