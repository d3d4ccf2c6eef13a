#!/usr/bin/env python
"""Geant4 full-simulation cost: seconds per shower vs incident energy, on one core, both scorings.

This is the cost the generators' speed-up is quoted against. Every energy runs in the same
invocation (one worker process, so one core), with the default detector (ATLAS-barrel-like, 1-photons
binning) and the physics list ``fastsim simulate`` would choose, once with each voxel scoring:
``volumes`` (one Geant4 volume per voxel, the scoring before issue 16) and ``steps`` (plain active
gaps, compiled step scorer, the default). The two runs of an energy follow each other (their order
alternates from energy to energy), so a change of machine load affects both alike. Printed per
energy and scoring: the Geant4 event time (BeginOfEvent to EndOfEvent, the
``time_per_shower_by_energy`` attribute), the whole worker time per shower including start-up
(``time_per_shower_s``), the response on the file's scale, and the ratio volumes/steps of the event
times (the speed-up, showers/s after over before).

    python benchmarks/bench_fullsim.py                   # 1, 4, 16, 64 GeV photons, 20 each
    python benchmarks/bench_fullsim.py --energies-gev 16,64 --events 40
    python benchmarks/bench_fullsim.py --scorings steps  # one scoring only

The machine's core count and load average are printed with the numbers: on a shared machine the
times are upper bounds, the ratios much less affected.
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
    p.add_argument("--events", type=int, default=20, help="showers per energy and scoring")
    p.add_argument("--particle", default="gamma")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scorings", default="volumes,steps", help="comma-separated: volumes (before), steps (after)")
    args = p.parse_args()
    energies = [float(e) * 1000 for e in args.energies_gev.split(",")]
    scorings = [s.strip() for s in args.scorings.split(",") if s.strip()]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} (start)")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for k, e in enumerate(energies):
            times: dict[str, tuple[float, float, float]] = {}
            for scoring in scorings if k % 2 == 0 else scorings[::-1]:
                s = simulate(os.path.join(d, f"{e:g}-{scoring}.h5"), np.full(args.events, e), particle=args.particle,
                             seed=args.seed, workers=1, progress=False, energy_spec="benchmark", scoring=scoring)
                times[scoring] = (s.attrs["time_per_shower_by_energy"][f"{e:g}"], s.attrs["time_per_shower_s"],
                                  float(s.file_response.mean()))
            rows.append((e, times))
        phys = s.attrs["physics_list"].split(":")[0]
        version = s.attrs["geant4_version"]
    print(f"{version}; physics {phys}; detector atlas-barrel-like; {args.events} {args.particle} per energy "
          "and scoring; 1 worker")
    print(f"{'E [GeV]':>8} {'scoring':>8} {'event s':>9} {'worker s':>9} {'ms/GeV':>8} {'response':>9} {'showers/s':>9}")
    for e, times in rows:
        for scoring in scorings:
            event, worker, resp = times[scoring]
            print(f"{e / 1000:8g} {scoring:>8} {event:9.4f} {worker:9.4f} {1000 * event / (e / 1000):8.2f} "
                  f"{resp:9.4f} {1 / event:9.2f}")
    if {"volumes", "steps"} <= set(scorings):
        print("speed-up steps over volumes (showers/s after / before, Geant4 event time; worker time with start-up):")
        for e, times in rows:
            print(f"  {e / 1000:g} GeV: {times['volumes'][0] / times['steps'][0]:.2f}x "
                  f"(worker {times['volumes'][1] / times['steps'][1]:.2f}x)")
    print(f"load average {os.getloadavg()[0]:.2f} (end); showers/s on all {os.cpu_count()} cores with "
          f"{scorings[-1]} scoring ≈ " + ", ".join(f"{os.cpu_count() / t[scorings[-1]][0]:.1f} at {e / 1000:g} GeV"
                                                  for e, t in rows))


if __name__ == "__main__":
    main()
