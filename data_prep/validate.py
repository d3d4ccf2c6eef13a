"""Check CaloChallenge HDF5 files: ``python data_prep/validate.py FILE... [--geometry NAME|XML]``.

A thin wrapper over ``fastsim validate`` (exit status 2 when any file has a problem).
"""

import sys

from fastsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
