"""``fastsim simulate``: Geant4 single-particle showers into CaloChallenge HDF5 (and ROOT).

Examples::

    fastsim simulate -o photons.h5 --pow2 8:16 -n 1000 --seed 1      # 2^8 … 2^16 MeV, 1000 each
    fastsim simulate -o e.h5 --particle e- --energies 1000,4000 -n 50
    fastsim simulate -o flat.h5 --log-uniform 1000:100000 -n 5000 --root flat.root
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fastsim.errors import FastsimError


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise FastsimError(f"{what}: expected numbers separated by commas, got {text!r}") from None


def _range(text: str, what: str) -> tuple[float, float]:
    parts = text.split(":")
    if len(parts) != 2:
        raise FastsimError(f"{what}: expected LOW:HIGH, got {text!r}")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise FastsimError(f"{what}: expected LOW:HIGH numbers, got {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise FastsimError(f"{what}: need finite LOW <= HIGH, got {text!r}")
    return lo, hi


def energies_from_args(args: argparse.Namespace) -> tuple[np.ndarray, str, bool]:
    """The per-event incident energies (MeV), a description, and whether they are discrete.

    Discrete lists (``--energies``, ``--pow2``) give ``-n`` events per energy, grouped by energy
    in the given order; ``--log-uniform LOW:HIGH`` draws ``-n`` energies with density ∝ 1/E from
    a generator seeded with ``--seed``.
    """
    if args.n < 1:
        raise FastsimError(f"-n/--events must be >= 1, got {args.n}")
    if args.pow2 is not None:
        lo, hi = _range(args.pow2, "--pow2")
        if lo != int(lo) or hi != int(hi) or not -10 <= lo <= 30 or not -10 <= hi <= 30:
            raise FastsimError(f"--pow2: expected integer exponents in [-10, 30], got {args.pow2!r}")
        values = [2.0**k for k in range(int(lo), int(hi) + 1)]
        return np.repeat(values, args.n), f"pow2 {args.pow2} MeV x {args.n}", True
    if args.energies is not None:
        values = _floats(args.energies, "--energies")
        if not values:
            raise FastsimError("--energies: no values")
        return np.repeat(values, args.n), f"energies {','.join(f'{v:g}' for v in values)} MeV x {args.n}", True
    lo, hi = _range(args.log_uniform, "--log-uniform")
    if lo <= 0:
        raise FastsimError(f"--log-uniform: energies must be > 0 MeV, got {args.log_uniform!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(args.seed), 0x10C]))
    e = np.exp(rng.uniform(np.log(lo), np.log(hi), size=args.n))
    return e, f"log-uniform {args.log_uniform} MeV, {args.n} events", False


def build_parser() -> argparse.ArgumentParser:
    from fastsim.cli import ArgumentParser

    p = ArgumentParser(
        prog="fastsim simulate",
        description="Geant4 full simulation of single particles (gamma, e-, e+) in a layered calorimeter; "
        "the energy deposited in the active material is scored per voxel of the binning, put on the "
        "calorimeter's EM scale (divided by each layer's sampling fraction) and written as CaloChallenge HDF5 (MeV).",
    )
    p.add_argument("-o", "--output", required=True, help="CaloChallenge HDF5 file to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--energies", help="comma-separated incident energies in MeV")
    src.add_argument("--pow2", metavar="LO:HI", help="energies 2^LO … 2^HI MeV (e.g. 8:16 = 256 MeV … 65.5 GeV)")
    src.add_argument("--log-uniform", metavar="LO:HI", help="energies drawn log-uniformly in [LO, HI] MeV")
    p.add_argument("-n", "--events", dest="n", type=int, default=100, help="events per energy (total for --log-uniform)")
    p.add_argument("--particle", default="gamma", help="gamma (default), e-, e+; pi+ needs hadronic data sets")
    p.add_argument("--geometry", default="1-photons", help="binning: built-in name or XML file (default 1-photons)")
    p.add_argument("--detector", default="atlas", choices=["atlas", "sampling"],
                   help="atlas: ATLAS-barrel-like 5-layer stack (default); sampling: Pb/LAr stack for any binning")
    p.add_argument("--physics", default="auto", choices=["auto", "datafree", "stock", "ftfp_bert"],
                   help="auto: stock G4EmStandardPhysics if its data sets are installed, else the data-free EM list")
    p.add_argument("--cut", type=float, default=0.7, help="production cut in mm (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="run seed; same seed gives the same file")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: os.cpu_count())")
    p.add_argument("--root", default=None, help="also write a ROOT file (TTree 'events': e_inc, voxels[V], MeV; what fastsim prep-root reads by default)")
    p.add_argument("--energy-scale", default="em", choices=["em", "active"],
                   help="em (default): each layer's active-material energy divided by its sampling fraction, "
                   "E_tot/E_inc ~ 1 as in the CaloChallenge files; active: the raw active-material deposits")
    p.add_argument("--scoring", default="steps", choices=["steps", "volumes"],
                   help="steps (default): plain active gaps, each step's energy in the voxel of its midpoint "
                   "(compiled scorer); volumes: one Geant4 volume per voxel (exact edges as boundaries, ~1.5x slower)")
    p.add_argument("--angle", default=None, metavar="DEG[,DEG...]",
                   help="incidence angle(s) in degrees from the calorimeter's normal, in [0, 45]; several values "
                   "repeat every energy at each angle (angle-major); written as the incident_angles dataset")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.add_argument("--describe", action="store_true", help="print the detector and exit")
    return p


def main(argv: list[str]) -> int:
    """Entry point; ``argv[0]`` is the command name ("simulate")."""
    args = build_parser().parse_args(argv[1:])
    if not args.describe:  # the outputs first: a typo in -o costs no simulation
        from fastsim.outputs import check_output_file, remove_stale_partials

        for path in (args.output, args.root):
            if path is not None:
                check_output_file(path, args.overwrite)
                remove_stale_partials(path)  # what a killed earlier run to this output left
    from fastsim.fullsim.detector import resolve_detector
    from fastsim.geometry import Geometry

    geometry = Geometry.resolve(args.geometry)
    spec = resolve_detector(args.detector, geometry)
    if args.describe:
        print(spec.describe())
        return 0
    if args.workers is not None and args.workers < 1:
        raise FastsimError(f"--workers must be >= 1, got {args.workers}")
    if args.cut <= 0 or not np.isfinite(args.cut):
        raise FastsimError(f"--cut must be a positive length in mm, got {args.cut}")
    energies, spec_text, discrete = energies_from_args(args)
    angles = None
    if args.angle is not None:
        from fastsim.fullsim.engine import check_angles

        try:
            values = check_angles(_floats(args.angle, "--angle"))
        except FastsimError as err:
            msg = str(err)
            raise FastsimError(msg if msg.startswith("--angle") else f"--angle: {msg}") from None
        if values.size == 0:
            raise FastsimError("--angle: no values")
        if args.scoring != "steps" and np.any(values != 0):
            raise FastsimError("--angle other than 0 needs --scoring steps")
        angles = np.repeat(values, len(energies))
        energies = np.tile(energies, len(values))
        spec_text += f"; angles {','.join(f'{v:g}' for v in values)} deg"
    from fastsim.fullsim.runner import simulate

    summary = simulate(
        args.output,
        energies,
        particle=args.particle,
        geometry=geometry,
        detector=args.detector,
        physics=args.physics,
        seed=args.seed,
        workers=args.workers,
        cut_mm=args.cut,
        root_output=args.root,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        energy_spec=spec_text,
        discrete=discrete,
        energy_scale=args.energy_scale,
        scoring=args.scoring,
        angles=angles,
    )
    a = summary.attrs
    print(f"wrote {len(summary.e_inc)} showers to {summary.path}" + (f" and {summary.root_path}" if summary.root_path else ""))
    print(f"  physics {a['physics_list'].split(':')[0]}; {a['geant4_version']}")
    print(f"  time per shower (per core): {a['time_per_shower_s']:.4f} s; wall {a['wall_time_s']:.1f} s with {a['workers']} workers")
    frac = a["energy_balance_mean_fraction"]
    print("  mean fractions of the incident energy: " + ", ".join(f"{k} {v:.4f}" for k, v in frac.items()))
    print(f"  energy scale {a['energy_scale']}" + (f"; sampling fractions {a['sampling_fractions']}" if a["energy_scale"] == "em" else "")
          + f"; measured on this run {a['sampling_fractions_this_run']}")
    for e, r in a["response_by_energy"].items():
        mask = summary.e_inc == float(e)
        resp = summary.file_response[mask]
        print(f"  E = {float(e):>9g} MeV: E_tot/E_inc {r:.4f}, resolution {resp.std() / resp.mean():.4f}, "
              f"{a['time_per_shower_by_energy'][e]:.4f} s/shower")
    return 0
