"""Per-layer sparsity and widths of generated showers against Geant4, before and after a readout threshold.

    python scripts/shower_check.py GENERATED.h5 REFERENCE.h5 [--threshold MEV ...] [--json OUT.json]

For each threshold (default 0 and 1 MeV: voxels at or below it are set to 0 in both samples, as
the CaloChallenge evaluation does at 1 MeV) and each layer it prints the mean fraction of hit
voxels (sparsity) generated / Geant4, the separation power of the sparsity and of the radial
width (``fastsim.metrics.shapes``; 30 bins over the reference range, all energies together) and
the fraction of showers with no energy in the layer; plus the largest E_tot/E_inc generated.
"""

from __future__ import annotations

import argparse
import json
import sys

import h5py
import numpy as np

from fastsim.geometry import Geometry
from fastsim.metrics.compare import separation_power
from fastsim.metrics.shapes import shower_features


def read(path: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["showers"][:].astype(np.float64), f["incident_energies"][:].astype(np.float64).ravel()


def sep(g: np.ndarray, r: np.ndarray) -> float:
    lo, hi = float(r.min()), float(r.max())
    if hi <= lo:
        hi = lo + 1e-9
    return float(separation_power(g, r, np.linspace(lo, hi, 31), n_bootstrap=0, clip=True)[0])


def check(gen: str, ref: str, thresholds: list[float], geometry: str = "1-photons") -> dict:
    geo = Geometry.builtin(geometry)
    xg, eg = read(gen)
    xr, er = read(ref)
    out: dict = {"max_etot_over_einc": float((xg.sum(1) / eg).max()), "thresholds": {}}
    for t in thresholds:
        fg = shower_features(np.where(xg > t, xg, 0.0), eg, geo)
        fr = shower_features(np.where(xr > t, xr, 0.0), er, geo)
        rows = []
        for k, lid in enumerate(geo.layer_ids):
            rows.append(
                {
                    "layer": lid,
                    "sparsity_gen": float(fg["sparsity"][:, k].mean()),
                    "sparsity_g4": float(fr["sparsity"][:, k].mean()),
                    "sparsity_sep": sep(fg["sparsity"][:, k], fr["sparsity"][:, k]),
                    "width_r_gen": float(np.median(fg["width_r"][:, k])),
                    "width_r_g4": float(np.median(fr["width_r"][:, k])),
                    "width_r_sep": sep(fg["width_r"][:, k], fr["width_r"][:, k]),
                    "empty_gen": float((fg["e_layer"][:, k] <= 0).mean()),
                    "empty_g4": float((fr["e_layer"][:, k] <= 0).mean()),
                }
            )
        out["thresholds"][str(t)] = rows
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("generated")
    p.add_argument("reference")
    p.add_argument("--threshold", type=float, action="append", help="MeV (repeatable; default 0 and 1)")
    p.add_argument("--json", help="also write the numbers here")
    a = p.parse_args(argv)
    res = check(a.generated, a.reference, a.threshold or [0.0, 1.0])
    print(f"max E_tot/E_inc generated: {res['max_etot_over_einc']:.3f}")
    for t, rows in res["thresholds"].items():
        print(f"\nthreshold {t} MeV")
        print(
            "| layer | hit fraction gen / G4 | sparsity sep. | median width_r gen / G4 (mm) | width_r sep. | empty layer gen / G4 |"
        )
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['layer']} | {r['sparsity_gen']:.3f} / {r['sparsity_g4']:.3f} | {r['sparsity_sep']:.3f} "
                f"| {r['width_r_gen']:.1f} / {r['width_r_g4']:.1f} | {r['width_r_sep']:.3f} "
                f"| {r['empty_gen']:.3f} / {r['empty_g4']:.3f} |"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
