"""``fastsim validate`` and ``fastsim prep-train``.

``fastsim validate FILE... [--geometry NAME|XML]`` prints ``FILE: OK`` or one line per problem;
the exit status is 2 when any file has a problem.

``fastsim prep-train IN.h5 [IN2.h5 ...] -o OUT.h5 --geometry 1-photons [--transform divide]
[--seed 0] [--chunk-size N] [--skip-bad]`` writes a training tensors file
(:func:`fastsim.data.tensors.prepare_training_tensors`). Errors in the inputs are reported as one
line naming the file (exit status 2) and no output file is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys

from fastsim.cli import ArgumentParser
from fastsim.geometry import BUILTIN
from fastsim.outputs import check_output_file, remove_stale_partials

_PRESETS = (
    "divide",
    "log",
    "standardize",
    "log-standardize",
)  # fastsim.data.transforms.PRESETS (no torch import)


def _validate(argv: list[str]) -> int:
    from fastsim.data.hdf5 import validate_calochallenge
    from fastsim.geometry import Geometry

    parser = ArgumentParser(
        prog="fastsim validate", description="Check CaloChallenge HDF5 files (structure, values, units)."
    )
    parser.add_argument("files", nargs="+", help="CaloChallenge HDF5 files")
    parser.add_argument(
        "--geometry",
        help=f"check the voxel count against a built-in geometry ({', '.join(BUILTIN)}) or an XML file",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="rows read at a time (default 10000, fewer for wide geometries)",
    )
    parser.add_argument(
        "--no-unit-check",
        action="store_true",
        help="skip the GeV/MeV heuristics (E_dep > 1.5 x E_inc), e.g. for files from a barely trained generator",
    )
    args = parser.parse_args(argv)
    geo = Geometry.resolve(args.geometry) if args.geometry else None
    n_bad = 0
    for path in args.files:
        problems = validate_calochallenge(
            path, geo, chunk_size=args.chunk_size, check_units=not args.no_unit_check
        )
        if problems:
            n_bad += 1
            for p in problems:
                print(f"{path}: {p}")
        else:
            print(f"{path}: OK")
    if n_bad:
        print(f"{n_bad} of {len(args.files)} files have problems", file=sys.stderr)
        return 2
    return 0


def _prep_train(argv: list[str]) -> int:
    from fastsim.data.tensors import DEFAULT_BUCKET_BYTES, prepare_training_tensors

    parser = ArgumentParser(
        prog="fastsim prep-train",
        description="Turn CaloChallenge HDF5 files into one shuffled training tensors file.",
    )
    parser.add_argument("inputs", nargs="+", help="CaloChallenge HDF5 files (MeV)")
    parser.add_argument("-o", "--output", required=True, help="training tensors file to write")
    parser.add_argument(
        "--geometry", required=True, help=f"built-in geometry ({', '.join(BUILTIN)}) or XML file"
    )
    parser.add_argument(
        "--transform",
        default="divide",
        help=f"voxel transform: one of {', '.join(_PRESETS)} or a JSON config (default: divide)",
    )
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="rows read at a time (default 10000, fewer for wide geometries)",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="drop (and count) showers with NaN/inf, bad incident energies or negative voxels instead of stopping",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument(
        "--compression",
        choices=("none", "lzf", "gzip"),
        default="none",
        help="compression of x/cond (default none)",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.0, metavar="MEV",
        help="readout threshold: voxels below it (MeV) are set to 0 before training, as the benchmark "
             "does to both samples (CaloChallenge: 1 MeV for dataset 1; default 0: none)",
    )
    parser.add_argument(
        "--no-angle", action="store_true",
        help="ignore the inputs' incident_angles: one condition column (the energy). By default, inputs that "
             "all carry the incidence angle get it as a second condition column (docs/angles.md)",
    )
    parser.add_argument(
        "--bucket-mb", type=float, default=DEFAULT_BUCKET_BYTES / 2**20, help="memory per shuffle bucket, MiB"
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    check_output_file(args.output, args.overwrite)  # before reading anything
    remove_stale_partials(args.output)  # what a killed earlier run to this output left
    summary = prepare_training_tensors(
        args.inputs,
        args.output,
        args.geometry,
        transform_config=args.transform,
        seed=args.seed,
        chunk_size=args.chunk_size,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        compression=None if args.compression == "none" else args.compression,
        bucket_bytes=int(args.bucket_mb * 2**20),
        threshold=args.threshold,
        angles=False if args.no_angle else None,
    )
    print(
        f"wrote {summary['output']}: {summary['n_written']} showers "
        f"(read {summary['n_read']}, skipped {summary['n_skipped']}) in {summary['seconds']:.1f} s"
        + (f"; conditions: energy, angle {summary['angle_range'][0]:g}–{summary['angle_range'][1]:g} deg"
           if summary.get("angle_range") else "")
    )
    for reason, count in summary["skipped"].items():
        print(f"  skipped {count}: {reason}")
    if summary["n_skipped"]:
        print(json.dumps(summary["files"], indent=1))
    return 0


def main(argv: list[str]) -> int:
    """Entry point: ``argv[0]`` is the command name ("validate" or "prep-train")."""
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "validate":
        return _validate(rest)
    if command == "prep-train":
        return _prep_train(rest)
    print(f"fastsim.data.cli: unknown command {command!r}", file=sys.stderr)
    return 2
