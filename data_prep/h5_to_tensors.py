"""CaloChallenge HDF5 -> training tensors: ``python data_prep/h5_to_tensors.py IN.h5 ... -o OUT.h5 --geometry 1-photons``.

A thin wrapper over ``fastsim prep-train`` (same options; exit status 2 on bad input).
"""

import sys

from fastsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["prep-train", *sys.argv[1:]]))
