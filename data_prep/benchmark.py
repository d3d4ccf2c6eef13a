#!/usr/bin/env python
"""Thin script over ``fastsim benchmark`` (same options): generated vs full simulation report.

    python data_prep/benchmark.py --generated gen.h5 --reference g4.h5 --out report/
"""

from __future__ import annotations

import sys

from fastsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
