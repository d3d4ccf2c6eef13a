"""``fastsim generate`` and ``fastsim export``.

Examples::

    fastsim generate --checkpoint wgan.ckpt -o gen.h5 --like photons_ref.h5
    fastsim generate --checkpoint wgan.ckpt -o gen.h5 --energies 1024,2048,4096 --n 10000
    fastsim generate --checkpoint wgan.ckpt -o gen.h5 --points 1024:1000,2048:500 --seed 7
    fastsim generate --checkpoint wgan.ckpt -o gen.h5 --log-uniform 1000 1e6 --n 100000
    fastsim generate --checkpoint wgan.ckpt -o gen.h5 --like ref.h5 --accelerator cpu --devices 2
    fastsim export --checkpoint wgan.ckpt -o wgan.onnx

Every problem with the inputs (missing or corrupt checkpoint or reference, bad energies or
counts, an existing output without ``--overwrite``) is one line on stderr and exit status 2,
and no output file is left behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from fastsim.errors import FastsimError, InputFileError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as a one-line :class:`FastsimError` (exit 2 in the CLI)."""

    def error(self, message: str) -> NoReturn:
        raise FastsimError(message)


def _generate_parser() -> argparse.ArgumentParser:
    from fastsim.generation.generate import DEFAULT_BATCH_SIZE

    p = _Parser(
        prog="fastsim generate",
        description="Generate showers from a generator checkpoint into a CaloChallenge HDF5 file "
        "(gzip, written in chunks, atomic; provenance and timing attributes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Every problem")[0].split("Examples::")[1],
    )
    p.add_argument("--checkpoint", "-c", required=True, help="generator checkpoint (.ckpt)")
    p.add_argument("--output", "-o", required=True, help="output CaloChallenge HDF5 file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--energies", metavar="E1,E2,...", help="incident energies in MeV, comma-separated")
    src.add_argument("--like", metavar="REF.h5", help="the incident energies of a reference file, in order")
    src.add_argument("--points", metavar="E:N,...", help="energy (MeV) : number of showers, comma-separated")
    src.add_argument("--log-uniform", nargs=2, type=float, metavar=("EMIN", "EMAX"),
                     help="log-uniform energies in [EMIN, EMAX] MeV (needs --n)")  # fmt: skip
    p.add_argument("--n", type=float, help="showers per energy with --energies; total with --log-uniform")
    p.add_argument(
        "--n-total", type=float, help="with --energies: total showers, shared evenly between the energies"
    )
    p.add_argument("--seed", type=int, default=0, help="noise (and log-uniform energy) seed (default 0)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"showers per forward pass (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        help="number of devices; > 1 runs Lightning's predict loop (default 1)",
    )
    p.add_argument(
        "--accelerator", help="accelerator for --devices > 1: cpu, cuda or auto (default: --device)"
    )
    p.add_argument(
        "--strategy",
        default="auto",
        help="Lightning strategy for --devices > 1 (default: ddp_fork on CPU, ddp on GPU)",
    )
    p.add_argument("--compression-level", type=int, default=4, help="gzip level 0-9 (default 4)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, OMP_NUM_THREADS)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        metavar="MEV",
        help="readout threshold: voxels below it are written as 0 (default 0 = none: the file keeps the model's "
        "full output, which any threshold can still be applied to later; fastsim benchmark and the official "
        "CaloChallenge evaluation apply the dataset's threshold to both samples themselves)",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with showers/s on stderr (default: when stderr is a terminal)")  # fmt: skip
    return p


def _count(value: float | None, option: str) -> int | None:
    from fastsim.generation.energies import check_count

    if value is None:
        return None
    if value != int(value):
        raise FastsimError(f"{option}: {value:g} is not a whole number")
    return check_count(int(value), option)


def _plan_without_model(args: argparse.Namespace):  # -> EnergyPlan | None
    """The energy plan for every source except ``--like`` (which needs the model's geometry)."""
    from fastsim.generation.energies import (
        DiscreteEnergies,
        LogUniformEnergies,
        parse_energy_list,
        parse_points,
    )

    n, n_total = _count(args.n, "--n"), _count(args.n_total, "--n-total")
    if args.energies is not None:
        values = parse_energy_list(args.energies)
        if (n is None) == (n_total is None):
            raise FastsimError("--energies needs exactly one of --n (showers per energy) or --n-total")
        return DiscreteEnergies.each(values, n) if n is not None else DiscreteEnergies.total(values, n_total)
    if n_total is not None:
        raise FastsimError("--n-total goes with --energies only")
    if args.points is not None:
        if n is not None:
            raise FastsimError("--points gives the counts itself; drop --n")
        return DiscreteEnergies.from_points(parse_points(args.points))
    if args.log_uniform is not None:
        if n is None:
            raise FastsimError("--log-uniform needs --n (the number of showers)")
        e_min, e_max = args.log_uniform
        return LogUniformEnergies(e_min, e_max, n, args.seed)
    if n is not None:
        raise FastsimError("--like takes the number of showers from the reference file; drop --n")
    if not os.path.exists(args.like):
        raise InputFileError(args.like, "reference file not found")
    return None


def _plan_range(plan) -> tuple[float, float]:  # noqa: ANN001 - an EnergyPlan
    """(lowest, highest) incident energy of a plan, MeV."""
    if hasattr(plan, "e_min") and hasattr(plan, "e_max"):
        return float(plan.e_min), float(plan.e_max)
    values = plan.discrete_values
    if not values:
        values = plan.slice(0, len(plan))
    return float(min(values)), float(max(values))


#: energies this far beyond the training range (factor) get a warning
EXTRAPOLATION_MARGIN = 1.05


def extrapolation_warning(plan, condition: dict | None) -> str | None:  # noqa: ANN001 - an EnergyPlan
    """A one-line warning when the plan reaches outside the training energies, else None.

    Args:
        plan: the EnergyPlan to generate.
        condition: the model's fitted condition config (``e_min``/``e_max`` in MeV: the training range).
    """
    if not isinstance(condition, dict) or "e_min" not in condition or "e_max" not in condition:
        return None
    lo, hi = _plan_range(plan)
    t_lo, t_hi = float(condition["e_min"]), float(condition["e_max"])
    if lo * EXTRAPOLATION_MARGIN >= t_lo and hi <= t_hi * EXTRAPOLATION_MARGIN:
        return None
    return (
        f"energies {lo:g}–{hi:g} MeV reach outside the model's training range {t_lo:g}–{t_hi:g} MeV; "
        "showers there are extrapolations"
    )


def generate_main(argv: list[str]) -> int:
    """``fastsim generate``: argv[0] is the command name."""
    args = _generate_parser().parse_args(argv[1:])
    from fastsim.generation.generate import check_output_path, energies_like

    if args.batch_size < 1:
        raise FastsimError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.compression_level <= 9:
        raise FastsimError(f"--compression-level must be 0-9, got {args.compression_level}")
    if args.devices < 1:
        raise FastsimError(f"--devices must be >= 1, got {args.devices}")
    if not (args.threshold >= 0 and args.threshold < float("inf")):
        raise FastsimError(f"--threshold must be a finite number >= 0 MeV, got {args.threshold}")
    if os.environ.get("LOCAL_RANK") is None or int(os.environ.get("LOCAL_RANK", "0")) == 0:
        from fastsim.outputs import remove_stale_partials

        check_output_path(args.output, args.overwrite)
        # a killed earlier run to this output left its hidden partial file: gone now (only files
        # of processes that no longer run are removed)
        for stale in remove_stale_partials(args.output):
            print(f"fastsim generate: removed {stale}, left by a run that was killed", file=sys.stderr)
    plan = _plan_without_model(args)
    if not os.path.exists(args.checkpoint):
        raise InputFileError(args.checkpoint, "checkpoint not found")

    import torch

    from fastsim.models.io import load_generator
    from fastsim.provenance import file_sha256

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_generator(args.checkpoint, map_location="cpu")
    if plan is None:
        plan = energies_like(args.like, n_voxels=model.geometry.n_voxels)
    warning = extrapolation_warning(plan, model.hparams.get("condition"))
    if warning:
        print(f"fastsim generate: warning: {warning}", file=sys.stderr)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    common = dict(
        seed=args.seed,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=progress,
        checkpoint=args.checkpoint,
        checkpoint_sha256=file_sha256(args.checkpoint),
        compression_opts=args.compression_level,
        threshold=args.threshold,
    )
    if args.devices == 1:
        from fastsim.generation.generate import generate_showers

        result = generate_showers(model, plan, args.output, device=args.device, **common)
    else:
        import logging

        from fastsim.generation.generate import generate_showers_distributed

        # Lightning's banner (GPU available, tips) is noise for a generation command
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

        result = generate_showers_distributed(
            model, plan, args.output, devices=args.devices, accelerator=args.accelerator or args.device,
            strategy=args.strategy, **common,
        )  # fmt: skip
    if result is not None:
        print(
            f"{result.path}: {result.n_showers} showers on {result.device} in {result.wall_s:.1f} s "
            f"({result.time_per_shower_s * 1e6:.1f} µs/shower)"
        )
    return 0


def _export_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fastsim export",
        description="Export a generator checkpoint to ONNX: inputs noise (n, noise_dim) and e_inc (n, 1) MeV, "
        "output showers (n, n_voxels) MeV, preprocessing inverse included; geometry and provenance in metadata.",
    )
    p.add_argument("--checkpoint", "-c", required=True, help="generator checkpoint (.ckpt)")
    p.add_argument("--output", "-o", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def export_main(argv: list[str]) -> int:
    """``fastsim export``: argv[0] is the command name."""
    args = _export_parser().parse_args(argv[1:])
    from fastsim.generation.export import export_onnx
    from fastsim.generation.generate import check_output_path
    from fastsim.outputs import remove_stale_partials

    check_output_path(args.output, args.overwrite)
    remove_stale_partials(args.output)
    if not os.path.exists(args.checkpoint):
        raise InputFileError(args.checkpoint, "checkpoint not found")
    info = export_onnx(args.checkpoint, args.output, opset=args.opset, overwrite=args.overwrite)
    if info.fallback_reason is not None:
        print(
            f"fastsim export: warning: the dynamo exporter failed ({info.fallback_reason[:200]}); "
            f"{info.path} was made by the TorchScript exporter",
            file=sys.stderr,
        )
    print(
        f"{info.path}: ONNX opset {info.opset} ({info.exporter} exporter), {info.n_voxels} voxels, noise width {info.noise_dim}"
    )
    return 0


def main(argv: list[str]) -> int:
    """Dispatch on argv[0] (``generate`` or ``export``), as :mod:`fastsim.cli` calls it."""
    if not argv:
        raise FastsimError("expected 'generate' or 'export'")
    if argv[0] == "generate":
        return generate_main(argv)
    if argv[0] == "export":
        return export_main(argv)
    raise FastsimError(f"unknown command {argv[0]!r} (expected 'generate' or 'export')")
