"""``fastsim family``: train one model per slice from one description, generate from the index.

    fastsim family list FAMILY.yaml                 # the slices, what is trained, the sbatch line
    fastsim family fit FAMILY.yaml [--slice NAME|TASK] [-- FIT OPTIONS]   # one after another
    fastsim family fit-args FAMILY.yaml --slice TASK    # (SLURM array task) prepare, print the fit command
    fastsim family record FAMILY.yaml --slice TASK      # (SLURM array task) best checkpoint -> index
    fastsim family generate --index INDEX.json -o OUT.h5 --like REF.h5   # = fastsim generate --index

``fit`` skips slices already in the index (a re-run resumes the family), prepares each slice's
training tensors once, runs ``fastsim fit`` for it in its own directory (a separate process: each
slice starts from a clean Lightning state) and records its best checkpoint in the index.
``scripts/slurm_family.sh`` does the same with one SLURM array task per slice.
See docs/family.md.
"""

from __future__ import annotations

import subprocess
import sys

from fastsim.cli import ArgumentParser
from fastsim.errors import FastsimError


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="fastsim family",
        description="Train one model per slice from one YAML description; generate from the index.",
        epilog="generate: fastsim family generate --index INDEX.json … (the options of fastsim generate)",
    )
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="the slices and what is trained")
    ls.add_argument("description", help="family description (YAML)")
    fit = sub.add_parser(
        "fit", help="train every slice (or one) one after another, recording each in the index"
    )
    fit.add_argument("description", help="family description (YAML)")
    fit.add_argument("--slice", help="only this slice (name or task number)")
    fit.add_argument("--force", action="store_true", help="train again slices already in the index")
    fit.epilog = "options after -- go to every slice's fastsim fit (after the description's own)"
    fa = sub.add_parser(
        "fit-args", help="prepare one slice; print its run directory, then its fit options, one a line"
    )
    fa.add_argument("description")
    fa.add_argument("--slice", required=True, help="name or task number (SLURM_ARRAY_TASK_ID)")
    fa.add_argument(
        "--force", action="store_true", help="print the command even if the slice is in the index"
    )
    rec = sub.add_parser("record", help="record one finished slice's best checkpoint in the index")
    rec.add_argument("description")
    rec.add_argument("--slice", required=True, help="name or task number (SLURM_ARRAY_TASK_ID)")
    return p


def _fit_one(family, s, extra: list[str], force: bool) -> None:  # noqa: ANN001
    from fastsim.training.family import (
        best_checkpoint,
        prepare_slice,
        record_slice,
        slice_fit_argv,
        trained_entry,
    )

    entry = trained_entry(family, s)
    if entry is not None and not force:
        print(f"fastsim family: slice {s.name} already trained ({entry['checkpoint']}): skipped")
        return
    print(
        f"fastsim family: slice {s.task} {s.name} ({s.describe()}): preparing",
        flush=True,
    )
    prepare_slice(family, s)
    argv = slice_fit_argv(family, s) + extra
    print(f"fastsim family: slice {s.name}: fastsim fit {' '.join(argv)}", flush=True)
    rc = subprocess.call([sys.executable, "-m", "fastsim.cli", "fit", *argv], cwd=family.run_dir(s))
    if rc != 0:
        raise FastsimError(
            f"slice {s.name!r}: fastsim fit exited with status {rc} (run directory {family.run_dir(s)})"
        )
    ckpt, how = best_checkpoint(family.checkpoint_dir(s))
    record_slice(family, s, ckpt, how)
    print(f"fastsim family: slice {s.name}: {how} {ckpt} recorded in {family.index}", flush=True)


def main(argv: list[str]) -> int:
    """``fastsim family …``: argv[0] is the command name."""
    rest = list(argv[1:])
    if rest[:1] == ["generate"]:
        from fastsim.generation.cli import generate_main

        return generate_main(["generate", *rest[1:]])
    extra: list[str] = []
    if "--" in rest:
        cut = rest.index("--")
        rest, extra = rest[:cut], rest[cut + 1 :]
    args = _parser().parse_args(rest)
    from fastsim.training.family import (
        best_checkpoint,
        load_family,
        prepare_slice,
        record_slice,
        slice_fit_argv,
        trained_entry,
    )

    family = load_family(args.description)
    if args.action == "list":
        print(f"family {family.name}: {len(family.slices)} slices, index {family.index}")
        for s in family.slices:
            entry = trained_entry(family, s)
            state = f"trained: {entry['checkpoint']}" if entry else "not trained"
            print(f"  {s.task:>3}  {s.name:<20} {s.describe():<44}  {state}")
        print(f"SLURM: sbatch --array=0-{len(family.slices) - 1} scripts/slurm_family.sh {family.path}")
        return 0
    if args.action == "fit":
        chosen = [family.slice(args.slice)] if args.slice is not None else list(family.slices)
        for s in chosen:
            _fit_one(family, s, extra, args.force)
        return 0
    s = family.slice(args.slice)
    if args.action == "fit-args":
        if trained_entry(family, s) is not None and not args.force:
            print("done")
            return 0
        prepare_slice(family, s)
        print(family.run_dir(s))
        print("\n".join(slice_fit_argv(family, s)))
        return 0
    ckpt, how = best_checkpoint(family.checkpoint_dir(s))
    record_slice(family, s, ckpt, how)
    print(f"fastsim family: slice {s.name}: {how} {ckpt} recorded in {family.index}")
    return 0


if __name__ == "__main__":
    sys.exit(main(["family", *sys.argv[1:]]))
