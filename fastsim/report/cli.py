"""``fastsim benchmark``: compare generated showers with full simulation and write a report.

    fastsim benchmark --generated gen.h5 --reference fullsim.h5 --out report/
    fastsim benchmark --generated gen.h5 --reference g4.h5 --geometry 1-photons --out rep \\
        --no-classifier --response-tol 0.02 --max-showers 5000 --seed 3
    fastsim benchmark --generated gen.h5 --reference g4.h5 --out rep --protocol quick --threshold 0

Writes ``metrics.json``, ``report.md``, ``report.html``, PNG plots and ``mean_images.npz`` into
``--out``. Bad inputs raise :class:`fastsim.errors.InputFileError`, which ``fastsim`` turns into
one line on stderr and exit status 2. Exit status 0 otherwise, or 1 with ``--strict`` when a
tolerance check fails.
"""

from __future__ import annotations

import argparse
import sys

from fastsim.errors import FastsimError


def build_parser() -> argparse.ArgumentParser:
    from fastsim.cli import ArgumentParser

    p = ArgumentParser(
        prog="fastsim benchmark",
        description="Compare generated showers with full simulation (CaloChallenge HDF5) and write a report.",
    )
    p.add_argument("--generated", required=True, help="generated showers (CaloChallenge HDF5)")
    p.add_argument("--reference", required=True, help="full-simulation showers (CaloChallenge HDF5)")
    p.add_argument("--out", required=True, help="report directory (created; an existing one needs --overwrite)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing report directory (the old files all go)"
    )
    p.add_argument(
        "--geometry",
        default=None,
        help="built-in name (1-photons, 1-pions, 2, 3) or binning XML; default: the files' "
        "'geometry' attribute, else the built-in binning with the files' voxel count",
    )
    p.add_argument(
        "--classifier",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the classifier tests (default: yes)",
    )
    p.add_argument(
        "--protocol",
        default="calochallenge",
        metavar="{calochallenge,quick}",
        help="calochallenge (default): the official CaloChallenge evaluation's binnings, high-level vector, "
        "classifier (3x2048, 50 epochs) and FPD/KPD; quick: fastsim's lighter classifier and binnings",
    )
    p.add_argument(
        "--threshold",
        default=None,
        metavar="MEV",
        help="readout threshold: voxels below it are zeroed in both samples before every metric; "
        "default: the CaloChallenge value of the geometry (1 MeV for dataset 1, 0.5 keV/0.033 for 2 and 3, "
        "0 for other geometries); 0 = none",
    )
    p.add_argument("--tolerances", default=None, help="YAML file with response/resolution/separation/auc")
    p.add_argument("--response-tol", type=float, default=None, help="max |response ratio - 1| (default 0.01)")
    p.add_argument("--resolution-tol", type=float, default=None, help="max |resolution ratio - 1| (default 0.05)")
    p.add_argument(
        "--separation-tol", type=float, default=None, help="max mean separation power of E_tot/E_inc (default 0.003)"
    )
    p.add_argument("--auc-tol", type=float, default=None, help="max classifier AUC (default 0.8)")
    p.add_argument(
        "--max-showers",
        type=int,
        default=20_000,
        help="showers per sample for the classifier input (random, seeded; 0 = all); default 20000",
    )
    p.add_argument(
        "--classifier-inputs",
        default=None,
        metavar="LIST",
        help="comma-separated classifier inputs among low (voxels/E_inc), normed (voxels/E_layer), high "
        "(high-level vector); default low,normed,high (quick protocol: low,high). One official classifier "
        "on 2700 vs 2700 showers takes ~4.5 CPU-minutes",
    )
    p.add_argument(
        "--classifier-epochs", type=int, default=None, help="max classifier epochs (default 50; quick protocol 30)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--chunk-size", type=int, default=None, help="rows read at a time (default: ~64 MiB)")
    p.add_argument("--no-plots", action="store_true", help="write metrics.json and the report without PNGs")
    p.add_argument("--strict", action="store_true", help="exit 1 when a tolerance check fails")
    return p


def main(argv: list[str]) -> int:
    """Entry point; ``argv[0]`` is the command name (``"benchmark"``)."""
    args = build_parser().parse_args(argv[1:])
    if args.max_showers < 0:
        raise FastsimError(f"--max-showers must be >= 0, got {args.max_showers}")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise FastsimError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.protocol not in ("calochallenge", "quick"):
        raise FastsimError(f"--protocol must be calochallenge or quick, got {args.protocol!r}")
    threshold = None
    if args.threshold is not None:
        try:
            threshold = float(args.threshold)
        except ValueError:
            raise FastsimError(f"--threshold must be a number of MeV, got {args.threshold!r}") from None
        if not (threshold >= 0 and threshold < float("inf")):
            raise FastsimError(f"--threshold must be a finite number >= 0 MeV, got {args.threshold!r}")
    from fastsim.outputs import check_output_dir, discard, publish_dir, remove_stale_partials, temporary_dir
    from fastsim.report.report import run_benchmark
    from fastsim.report.tolerances import load_tolerances

    check_output_dir(args.out, args.overwrite)  # before seconds of reading and metrics
    remove_stale_partials(args.out)

    tol = load_tolerances(
        args.tolerances,
        response=args.response_tol,
        resolution=args.resolution_tol,
        separation=args.separation_tol,
        auc=args.auc_tol,
    )
    clf_opts = {} if args.classifier_epochs is None else {"max_epochs": args.classifier_epochs}
    # built in a hidden directory and moved into place when complete: an error leaves nothing
    # under --out, and an old report is replaced whole, never mixed with the new files
    tmp = temporary_dir(args.out)
    try:
        result = run_benchmark(
            args.generated,
            args.reference,
            tmp,
            geometry=args.geometry,
            tolerances=tol,
            classifier=args.classifier,
            classifier_options=clf_opts,
            max_showers=args.max_showers or None,
            seed=args.seed,
            chunk_size=args.chunk_size,
            plots=not args.no_plots,
            protocol=args.protocol,
            threshold=threshold,
            classifier_inputs=None if args.classifier_inputs is None else tuple(args.classifier_inputs.split(",")),
        )
        publish_dir(tmp, args.out, overwrite=args.overwrite)
    except BaseException:
        discard(tmp)
        raise
    s = result.summary
    verdict = "PASS" if s.passed else "FAIL"
    threshold_mev = (result.threshold or {}).get("mev")
    print(
        f"fastsim benchmark ({args.protocol}, threshold {threshold_mev:g} MeV): {verdict} "
        f"({s.n_passed}/{s.n_checks} checks), "
        f"mean separation power {s.mean_separation_power_e_ratio:.4g}; report in {args.out}/report.md"
    )
    if result.per_energy_angle:
        from fastsim.report.render import angle_table

        header, rows = angle_table(result)
        keep = [0, 1, 2, 3, 6, 9]  # energy, angle, counts, the two ratios
        print("per energy × angle (response and resolution ratios, generated/reference):")
        for line in [[header[i] for i in keep], *[[r[i] for i in keep] for r in rows]]:
            print("  " + "  ".join(f"{c:>14}" for c in line))
    return 1 if (args.strict and not s.passed) else 0


if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
