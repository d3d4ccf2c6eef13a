"""Generate from a family of models: each event goes to the model of its slice, one output file.

The index (written by ``fastsim family fit``, :mod:`fastsim.training.family`) names each slice's
selection (an incident-energy range today) and best checkpoint. :func:`generate_family` routes
every requested event to the slice that holds its energy, generates each batch slice by slice
with :func:`fastsim.generation.generate.generate_batch`, and writes the showers back in the
requested order into one CaloChallenge file, with every checkpoint in its provenance.

Reproducibility: batch ``b`` of the run, slice ``k`` (position in the index) draws its noise from
``(seed, b * n_slices + k)``; the same index, energies, seed and batch size give the same file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError

__all__ = ["FamilyModels", "load_family_models", "route", "generate_family"]


@dataclass
class FamilyModels:
    """The loaded models of an index, in the index's slice order.

    Attributes:
        index_path: the index file.
        names: slice names.
        lo, hi: (K,) energy range of each slice, MeV (``lo <= E < hi``).
        models: the generators (eval mode, CPU until moved).
        checkpoints: absolute checkpoint paths; sha256: their digests as recorded.
    """

    index_path: str
    names: list[str]
    lo: np.ndarray
    hi: np.ndarray
    models: list[Any]
    checkpoints: list[str]
    sha256: list[str]

    @property
    def geometry(self) -> Any:
        return self.models[0].geometry


def load_family_models(index_path: str | os.PathLike) -> FamilyModels:
    """Read an index and load every slice's generator.

    Raises:
        InputFileError: missing or invalid index, a slice not trained yet, a missing checkpoint,
            or checkpoints of different geometries.
    """
    from fastsim.generation.generate import check_generator
    from fastsim.models.io import load_generator
    from fastsim.training.family import read_index

    index_path = os.fspath(index_path)
    index = read_index(index_path)
    missing = [s["name"] for s in index["slices"] if s.get("name") not in index["trained"]]
    if missing:
        raise InputFileError(
            index_path, f"slice(s) {', '.join(missing)} not trained yet (run fastsim family fit)"
        )
    names, lo, hi, models, paths, digests = [], [], [], [], [], []
    for s in index["slices"]:
        entry = index["trained"][s["name"]]
        ckpt = str(entry.get("checkpoint"))
        if not os.path.exists(ckpt):
            raise InputFileError(index_path, f"slice {s['name']!r}: checkpoint {ckpt} not found")
        model = load_generator(ckpt, map_location="cpu")
        check_generator(model)
        if getattr(model, "angle_range", None) is not None:
            raise InputFileError(
                index_path, f"slice {s['name']!r}: its model is conditioned on the incidence angle; "
                "families of angle-conditioned models are not supported yet",
            )
        if models and model.geometry.to_json() != models[0].geometry.to_json():
            raise InputFileError(
                index_path,
                f"slice {s['name']!r}: checkpoint {ckpt} has another geometry than slice {names[0]!r}",
            )
        e_lo, e_hi = s["select"]["energy"]
        names.append(s["name"])
        lo.append(float(e_lo))
        hi.append(float(e_hi))
        models.append(model)
        paths.append(os.path.abspath(ckpt))
        digests.append(str(entry.get("checkpoint_sha256", "")))
    return FamilyModels(index_path, names, np.asarray(lo), np.asarray(hi), models, paths, digests)


def route(e_inc: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """The slice of each event: ``k`` with ``lo[k] <= e_inc < hi[k]``.

    Args:
        e_inc: (N,) incident energies, MeV.
        lo, hi: (K,) slice ranges, MeV, not overlapping.
        names: slice names for the error message.

    Returns:
        int64 (N,) slice positions.

    Raises:
        FastsimError: some energy is in no slice (the message gives the first and the ranges).
    """
    e_inc = np.asarray(e_inc, dtype=np.float64)
    order = np.argsort(lo, kind="stable")
    pos = np.searchsorted(lo[order], e_inc, side="right") - 1
    k = order[np.clip(pos, 0, len(lo) - 1)]
    inside = (pos >= 0) & (e_inc >= lo[k]) & (e_inc < hi[k])
    if not inside.all():
        first = int(np.argmax(~inside))
        names = names or [str(i) for i in range(len(lo))]
        ranges = ", ".join(f"{n} [{a:g}, {b:g})" for n, a, b in zip(names, lo, hi, strict=True))
        raise FastsimError(
            f"{int((~inside).sum())} of {len(e_inc)} energies are in no slice of the family, the first "
            f"{e_inc[first]:g} MeV (event {first}); slices (MeV): {ranges}"
        )
    return k.astype(np.int64)


def generate_family(
    family: FamilyModels,
    plan: Any,
    output: str | os.PathLike,
    *,
    seed: int,
    batch_size: int,
    device: str = "auto",
    overwrite: bool = False,
    compression_opts: int | None = 4,
    threshold: float = 0.0,
) -> Any:
    """Generate ``len(plan)`` showers, each by its slice's model, into ``output`` in plan order.

    Args:
        family: :func:`load_family_models`.
        plan: an EnergyPlan (:mod:`fastsim.generation.energies`).
        output: the CaloChallenge file; it appears only when the run succeeds.
        seed, batch_size, device, overwrite, compression_opts, threshold: as
            :func:`fastsim.generation.generate.generate_showers`.

    Returns:
        a :class:`fastsim.generation.generate.GenerateResult`.

    Raises:
        FastsimError: an energy in no slice (before anything is written), a generator failure.
    """
    from fastsim.data.hdf5 import ShowerWriter
    from fastsim.generation.generate import (
        GenerateResult,
        aligned_chunk_rows,
        check_output_path,
        generate_batch,
        resolve_device,
        timing_attributes,
    )
    from fastsim.provenance import provenance

    output = check_output_path(output, overwrite)
    e_all = np.asarray(plan.slice(0, len(plan)), dtype=np.float64)
    slice_of = route(e_all, family.lo, family.hi, family.names)  # refuses before any work
    device = resolve_device(device)
    models = [m.to(device).eval() for m in family.models]
    n_slices = len(models)
    n_vox = family.geometry.n_voxels
    used = np.bincount(slice_of, minlength=n_slices)
    attrs = provenance(
        producer="fastsim-generate",
        family_index=os.path.abspath(family.index_path),
        family_checkpoints=json.dumps(
            [
                {
                    "slice": n,
                    "select": {"energy": [float(a), float(b)]},
                    "checkpoint": c,
                    "checkpoint_sha256": h,
                    "n_showers": int(u),
                }
                for n, a, b, c, h, u in zip(
                    family.names, family.lo, family.hi, family.checkpoints, family.sha256, used, strict=True
                )
            ]
        ),  # fmt: skip
        checkpoint=";".join(family.checkpoints),
        seed=int(seed),
        batch_size=int(batch_size),
        device=device,
        geometry=family.geometry.to_json(),
        energies=plan.describe(),
        n_showers=len(plan),
        readout_threshold_mev=float(threshold),
    )
    t0 = time.perf_counter()
    with ShowerWriter(output, n_vox, attrs=attrs, overwrite=overwrite, compression="gzip",
                      compression_opts=compression_opts, chunk_rows=aligned_chunk_rows(batch_size, n_vox)) as writer:  # fmt: skip
        for b, start in enumerate(range(0, len(e_all), batch_size)):
            e_inc = e_all[start : start + batch_size]
            ks = slice_of[start : start + batch_size]
            showers = np.empty((len(e_inc), n_vox), dtype=np.float32)
            for k in np.unique(ks):
                rows = ks == k
                showers[rows] = generate_batch(
                    models[k], e_inc[rows], seed, b * n_slices + int(k), device, threshold
                )
            writer.append(e_inc, showers)
        writer.flush()
        wall = time.perf_counter() - t0
        result = GenerateResult(output, len(e_all), wall, wall / max(len(e_all), 1), {}, device)
        writer.set_attrs(**timing_attributes(result))
    print("fastsim generate: showers per slice: "
          + ", ".join(f"{n} {int(u)}" for n, u in zip(family.names, used, strict=True)), file=sys.stderr)  # fmt: skip
    return result


def family_main(args: Any, plan: Any) -> int:
    """``fastsim generate --index``: the rest of :func:`fastsim.generation.cli.generate_main`
    (which has checked the options and the output and made the plan, None for ``--like``)."""
    from fastsim.generation.generate import energies_like

    if args.devices != 1:
        raise FastsimError("--index generates on one device: drop --devices")
    if not os.path.exists(args.index):
        raise InputFileError(args.index, "family index not found")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    family = load_family_models(args.index)
    if plan is None:
        # slices are chosen by energy alone: a reference's angles are not carried
        plan = energies_like(args.like, n_voxels=family.geometry.n_voxels).without_angles()
    result = generate_family(
        family, plan, args.output, seed=args.seed, batch_size=args.batch_size, device=args.device,
        overwrite=args.overwrite, compression_opts=args.compression_level, threshold=args.threshold,
    )  # fmt: skip
    print(
        f"{result.path}: {result.n_showers} showers from {len(family.models)} slice models on {result.device} "
        f"in {result.wall_s:.1f} s ({result.time_per_shower_s * 1e6:.1f} µs/shower)"
    )
    return 0
