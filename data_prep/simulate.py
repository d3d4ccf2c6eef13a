#!/usr/bin/env python
"""Geant4 single-particle showers into CaloChallenge HDF5: a thin wrapper of ``fastsim simulate``.

Example (the embedded photon reference, see fastsim/refdata/README.md)::

    python data_prep/simulate.py -o photons.h5 --pow2 8:16 -n 1000 --seed 20261129
"""

from __future__ import annotations

import sys

from fastsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", *sys.argv[1:]]))
