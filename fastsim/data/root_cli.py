"""``fastsim prep-root``: ROOT TTrees (voxel arrays or per-hit) -> one CaloChallenge HDF5 file.

Examples::

    # fixed-size voxel arrays, energies in GeV
    fastsim prep-root run1.root run2.root -o showers.h5 --geometry 1-photons \\
        --kind voxels --tree showers --voxels-branch edep --e-inc-branch e0 --energy-unit GeV

    # Geant4 hits, layers from z, per-event impact point and direction
    fastsim prep-root hits_*.root -o showers.h5 --geometry 2 --kind hits \\
        --hit-x x --hit-y y --hit-z z --hit-e edep --layer-z 0,10,20,...,450 \\
        --impact-branches x0,y0,z0 --direction-branches dx,dy,dz --skip-bad

The output is written to a temporary name and renamed at the end: an error or Ctrl-C leaves no
partial file. Invalid events (NaN/inf, incident energy <= 0, negative energies) stop the conversion
with the file, branch and entry, or with ``--skip-bad`` are skipped and counted in the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from fastsim.errors import FastsimError, InputFileError


def _triple(text: str) -> tuple[str, str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected three comma-separated names, got {text!r}")
    return parts[0], parts[1], parts[2]


def _float_triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (mm), got {text!r}") from None


def _step(text: str) -> int | str:
    if text.strip().isdigit():
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("step size must be >= 1 entries")
        return value
    return text  # a memory size such as "50 MB", passed to uproot


def build_parser() -> argparse.ArgumentParser:
    from fastsim.cli import ArgumentParser
    from fastsim.data.root import ENERGY_UNITS, LENGTH_UNITS

    p = ArgumentParser(
        prog="fastsim prep-root",
        description="Convert ROOT TTrees (voxel arrays or per-hit) to one CaloChallenge HDF5 file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="ROOT files, read in order")
    p.add_argument("-o", "--output", required=True, help="CaloChallenge HDF5 file to write")
    p.add_argument(
        "--geometry", required=True, help="built-in binning (1-photons, 1-pions, 2, 3) or XML file"
    )
    p.add_argument("--kind", choices=["voxels", "hits"], default="voxels", help="layout of the TTree")
    p.add_argument("--tree", default="events", help="TTree name")
    p.add_argument("--e-inc-branch", default="e_inc", help="per-event incident energy")
    p.add_argument("--voxels-branch", default="voxels", help="per-event voxel energies (--kind voxels)")
    g = p.add_argument_group("per-hit layout (--kind hits)")
    g.add_argument("--hit-e", default="hit_e", help="per-hit energy")
    g.add_argument("--hit-x", default="hit_x", help="per-hit x")
    g.add_argument("--hit-y", default="hit_y", help="per-hit y")
    g.add_argument(
        "--hit-z", default="hit_z", help="per-hit z ('' for none: needs --hit-layer and a +z axis)"
    )
    g.add_argument("--hit-layer", default=None, help="per-hit layer id (instead of z and --layer-z)")
    g.add_argument("--hit-cell", default=None, help="per-hit cell index in the layer (alpha_bin*n_r + r_bin)")
    g.add_argument(
        "--layer-z", type=_floats, default=None, help="layer z boundaries in mm, n_layers+1 comma-separated"
    )
    g.add_argument(
        "--impact-branches", type=_triple, default=None, metavar="X0,Y0,Z0", help="per-event impact point"
    )
    g.add_argument(
        "--impact", type=_float_triple, default=(0.0, 0.0, 0.0), metavar="X,Y,Z", help="fixed impact point"
    )
    g.add_argument(
        "--direction-branches", type=_triple, default=None, metavar="DX,DY,DZ", help="per-event direction"
    )
    g.add_argument(
        "--direction", type=_float_triple, default=(0.0, 0.0, 1.0), metavar="DX,DY,DZ", help="fixed direction"
    )
    u = p.add_argument_group("units")
    u.add_argument(
        "--energy-unit", choices=list(ENERGY_UNITS), default="MeV", help="unit of hit/voxel energies"
    )
    u.add_argument(
        "--incident-energy-unit", choices=list(ENERGY_UNITS), default=None, help="default: --energy-unit"
    )
    u.add_argument("--length-unit", choices=list(LENGTH_UNITS), default="mm", help="unit of positions")
    o = p.add_argument_group("output and run")
    o.add_argument(
        "--step-size",
        type=_step,
        default=None,
        help="entries per chunk or a size like '50 MB' (default: automatic)",
    )
    o.add_argument(
        "--skip-bad", action="store_true", help="skip invalid events (counted) instead of stopping"
    )
    o.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    o.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip", help="HDF5 filter")
    o.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    return p


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`fastsim.data.root.RootSpec` described by parsed options."""
    from fastsim.data.root import RootSpec

    return RootSpec(
        kind=args.kind,
        tree=args.tree,
        incident_branch=args.e_inc_branch,
        voxels_branch=args.voxels_branch,
        hit_e=args.hit_e,
        hit_x=args.hit_x or None,
        hit_y=args.hit_y or None,
        hit_z=args.hit_z or None,
        hit_layer=args.hit_layer,
        hit_cell=args.hit_cell,
        impact_branches=args.impact_branches,
        impact=args.impact,
        direction_branches=args.direction_branches,
        direction=args.direction,
        layer_z=args.layer_z,
        energy_unit=args.energy_unit,
        incident_energy_unit=args.incident_energy_unit,
        length_unit=args.length_unit,
    )


def convert(
    inputs: list[str],
    output: str,
    geometry: Any,
    spec: Any,
    *,
    step_size: int | str | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    compression: str | None = "gzip",
    progress: bool = True,
) -> Any:
    """ROOT inputs -> CaloChallenge HDF5 at ``output`` (atomic). Returns the total VoxeliseStats.

    Raises:
        InputFileError: any input problem (see :func:`fastsim.data.root.iter_root_showers`); the
            output is not created then.
        FastsimError: no valid event at all.
    """
    from dataclasses import asdict

    from tqdm import tqdm

    from fastsim.data.hdf5 import ShowerWriter
    from fastsim.data.root import check_root_inputs, iter_root_showers
    from fastsim.data.voxelise import VoxeliseStats

    inputs_checked = check_root_inputs(inputs, spec, geometry)
    n_total = sum(i.n_entries for i in inputs_checked)
    total = VoxeliseStats()
    attrs = {
        "producer": "fastsim-prep-root",
        "geometry": geometry.to_json(),
        "source_files": [
            {
                "path": os.path.abspath(i.path),
                "tree": i.tree,
                "entries": i.n_entries,
                "bytes": os.path.getsize(i.path),
            }
            for i in inputs_checked
        ],
        "root_spec": asdict(spec),
    }
    t0 = time.perf_counter()
    with (
        ShowerWriter(
            output, geometry.n_voxels, attrs=attrs, compression=compression, overwrite=overwrite
        ) as writer,
        tqdm(total=n_total, unit="ev", disable=not progress, desc="prep-root", file=sys.stderr) as bar,
    ):
        for e_inc, showers, stats in iter_root_showers(
            inputs,
            geometry,
            spec,
            step_size=step_size,
            bad="skip" if skip_bad else "raise",
            inputs=inputs_checked,
        ):
            writer.append(e_inc, showers)
            total = total + stats
            bar.update(stats.entry_stop - stats.entry_start)
            if spec.kind == "hits":  # per-chunk bookkeeping of what fell outside the geometry
                bar.set_postfix(outside=f"{100 * stats.outside_fraction:.2f}%", skipped=total.n_skipped, refresh=False)
        if writer.n_written == 0:
            raise FastsimError(f"no valid events in {len(inputs)} input file(s): nothing written to {output}")
        if spec.kind == "hits" and total.n_hits > 0 and total.n_hits_outside == total.n_hits:
            # an all-zero file would pass `validate`: say what is wrong instead
            where = inputs[0] if len(inputs) == 1 else f"{inputs[0]} (and {len(inputs) - 1} more)"
            raise InputFileError(
                where,
                f"all {total.n_hits} hits fall outside the geometry {geometry.name!r} "
                "(check --length-unit, --layer-z and the hit coordinate branches); nothing written",
            )
        writer.set_attrs(
            n_showers=writer.n_written,
            n_skipped=total.n_skipped,
            skipped_reasons=total.skipped_reasons,
            n_hits=total.n_hits,
            n_hits_outside=total.n_hits_outside,
            e_hits_mev=total.e_hits,
            e_outside_mev=total.e_outside,
            conversion_time_s=time.perf_counter() - t0,
        )
    return total


def main(argv: list[str]) -> int:
    """``fastsim prep-root …``; argv[0] is the command name. Returns the exit status."""
    from fastsim.geometry import Geometry
    from fastsim.outputs import check_output_file, remove_stale_partials

    args = build_parser().parse_args(argv[1:])
    check_output_file(args.output, args.overwrite)  # before reading anything
    remove_stale_partials(args.output)  # what a killed earlier run to this output left
    geometry = Geometry.resolve(args.geometry)
    spec = spec_from_args(args)
    t0 = time.perf_counter()
    total = convert(
        args.inputs,
        args.output,
        geometry,
        spec,
        step_size=args.step_size,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        compression=None if args.compression == "none" else args.compression,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )
    dt = time.perf_counter() - t0
    read = total.n_events + total.n_skipped
    print(
        f"wrote {args.output}: {total.n_events} showers × {geometry.n_voxels} voxels from {read} events "
        f"in {len(args.inputs)} file(s), {dt:.1f} s ({read / max(dt, 1e-9):.0f} events/s)"
    )
    if total.n_skipped:
        reasons = json.dumps(total.skipped_reasons, sort_keys=True)
        print(f"skipped {total.n_skipped} invalid events: {reasons}")
    else:
        print("skipped 0 events")
    if spec.kind == "hits":
        print(
            f"hits: {total.n_hits}; outside the geometry: {total.n_hits_outside} hits, "
            f"{total.e_outside:.6g} of {total.e_hits:.6g} MeV ({100 * total.outside_fraction:.3g}%)"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    from fastsim.cli import main as fastsim_main

    sys.exit(fastsim_main(["prep-root", *sys.argv[1:]]))
