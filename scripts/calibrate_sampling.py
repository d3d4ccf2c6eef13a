"""Measure a detector's per-layer sampling fractions with Geant4 (the EM-scale calibration).

    python scripts/calibrate_sampling.py --detector atlas -n 100 --seed 777

Simulates photons at the dataset-1 energies (2^8 … 2^16 MeV, ``-n`` each) on the active-material
scale, computes each layer's sampling fraction Σ active / Σ (active + passive) over all showers
(:func:`fastsim.fullsim.calibration.sampling_fractions`) and prints them with their statistical
uncertainties, ready to paste into ``fastsim.fullsim.calibration.CALIBRATIONS``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", default="atlas", choices=["atlas", "sampling"])
    p.add_argument("--geometry", default="1-photons")
    p.add_argument("--particle", default="gamma")
    p.add_argument("--pow2", default="8:16", help="energies 2^LO … 2^HI MeV")
    p.add_argument("-n", type=int, default=100, help="showers per energy")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    from fastsim.fullsim.runner import simulate

    lo, hi = (int(v) for v in args.pow2.split(":"))
    energies = np.repeat([2.0**k for k in range(lo, hi + 1)], args.n)
    with tempfile.TemporaryDirectory() as d:
        s = simulate(os.path.join(d, "calib.h5"), energies, particle=args.particle, geometry=args.geometry,
                     detector=args.detector, seed=args.seed, workers=args.workers, energy_scale="active")
    f = json.loads(s.attrs["sampling_fractions_this_run"])
    u = json.loads(s.attrs["sampling_fractions_this_run_unc"])
    print(f"detector {s.attrs['detector']['name'] if isinstance(s.attrs['detector'], dict) else args.detector}, "
          f"{len(energies)} {args.particle} showers, {args.pow2} (2^k MeV) x {args.n}, seed {args.seed}")
    for i, (fi, ui) in enumerate(zip(f, u, strict=True)):
        print(f"  layer {i}: sampling fraction {fi:.6f} ± {ui:.6f}  (EM-scale factor {1 / fi:.4f})")
    print("fractions=" + repr(tuple(round(x, 6) for x in f)))
    print("uncertainties=" + repr(tuple(round(x, 6) for x in u)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
