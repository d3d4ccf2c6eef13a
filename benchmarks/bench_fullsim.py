#!/usr/bin/env python
"""Geant4 full-simulation cost: seconds per shower vs incident energy, on one core.

This is the cost the generators' speed-up is quoted against. Every energy runs in the same
invocation (one worker process, so one core), with the default detector (ATLAS-barrel-like, 1-photons
binning) and the physics list ``fastsim simulate`` would choose. Printed per energy: the Geant4
event time (BeginOfEvent to EndOfEvent, the ``time_per_shower_by_energy`` attribute), and the whole
worker time per shower including start-up (``time_per_shower_s``) for the run of that energy.

    python benchmarks/bench_fullsim.py                   # 1, 4, 16, 64 GeV photons, 20 each
    python benchmarks/bench_fullsim.py --events 50 --particle e-

The machine's core count and load average are printed with the numbers: on a shared machine the
times are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

import numpy as np

from fastsim.fullsim.runner import simulate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--energies-gev", default="1,4,16,64", help="comma-separated energies in GeV")
    p.add_argument("--events", type=int, default=20, help="showers per energy")
    p.add_argument("--particle", default="gamma")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    energies = [float(e) * 1000 for e in args.energies_gev.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} (start)")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for e in energies:
            s = simulate(os.path.join(d, f"{e:g}.h5"), np.full(args.events, e), particle=args.particle,
                         seed=args.seed, workers=1, progress=False, energy_spec="benchmark")
            event = s.attrs["time_per_shower_by_energy"][f"{e:g}"]
            rows.append((e, event, s.attrs["time_per_shower_s"], s.response.mean()))
        phys = s.attrs["physics_list"].split(":")[0]
        version = s.attrs["geant4_version"]
    print(f"{version}; physics {phys}; detector atlas-barrel-like; {args.events} {args.particle} per energy; 1 worker")
    print(f"{'E [GeV]':>8} {'event s':>9} {'worker s':>9} {'ms/GeV':>8} {'response':>9}")
    for e, event, worker, resp in rows:
        print(f"{e / 1000:8g} {event:9.4f} {worker:9.4f} {1000 * event / (e / 1000):8.2f} {resp:9.4f}")
    print(f"load average {os.getloadavg()[0]:.2f} (end); showers/s on all {os.cpu_count()} cores ≈ "
          + ", ".join(f"{os.cpu_count() / ev:.1f} at {e / 1000:g} GeV" for e, ev, _, _ in rows))


if __name__ == "__main__":
    main()
