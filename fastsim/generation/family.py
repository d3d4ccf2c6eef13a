"""Generate from a family of models: each event goes to the model of its slice, one output file.

The index (written by ``fastsim family fit``, :mod:`fastsim.training.family`) names each slice's
selection (an incident-energy range, an incidence-angle range, or both) and best checkpoint.
:func:`generate_family` routes every requested event to the slice that holds its energy and angle,
generates each batch slice by slice with :func:`fastsim.generation.generate.generate_batch` (passing
the events' angles to the slice models conditioned on the angle), and writes the showers back in
the requested order into one CaloChallenge file, with every checkpoint in its provenance and the
angles as ``incident_angles`` when the request has them.

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
        lo, hi: (K,) energy range of each slice, MeV (``lo <= E < hi``; 0, inf without an energy selection).
        models: the generators (eval mode, CPU until moved).
        checkpoints: absolute checkpoint paths; sha256: their digests as recorded.
        angle_lo, angle_hi: (K,) angle range of each slice, degrees (0, 90 without an angle selection).
        selects: each slice's selection as the index records it.
    """

    index_path: str
    names: list[str]
    lo: np.ndarray
    hi: np.ndarray
    models: list[Any]
    checkpoints: list[str]
    sha256: list[str]
    angle_lo: np.ndarray
    angle_hi: np.ndarray
    selects: list[dict[str, Any]]

    @property
    def geometry(self) -> Any:
        return self.models[0].geometry

    @property
    def uses_angles(self) -> bool:
        """Whether an event's angle matters: a slice selects by angle or a model is conditioned on it."""
        return any("angle" in s for s in self.selects) or any(
            getattr(m, "angle_range", None) is not None for m in self.models
        )


def load_family_models(index_path: str | os.PathLike) -> FamilyModels:
    """Read an index and load every slice's generator.

    Raises:
        InputFileError: missing or invalid index, a slice not trained yet, a missing checkpoint,
            or checkpoints of different geometries.
    """
    from fastsim.generation.generate import check_generator
    from fastsim.models.io import load_generator
    from fastsim.training.family import ALL_ANGLES, ALL_ENERGIES, read_index

    index_path = os.fspath(index_path)
    index = read_index(index_path)
    missing = [s["name"] for s in index["slices"] if s.get("name") not in index["trained"]]
    if missing:
        raise InputFileError(
            index_path, f"slice(s) {', '.join(missing)} not trained yet (run fastsim family fit)"
        )
    names, ranges, models, paths, digests = [], [], [], [], []
    for s in index["slices"]:
        entry = index["trained"][s["name"]]
        ckpt = str(entry.get("checkpoint"))
        if not os.path.exists(ckpt):
            raise InputFileError(index_path, f"slice {s['name']!r}: checkpoint {ckpt} not found")
        model = load_generator(ckpt, map_location="cpu")
        check_generator(model)
        if models and model.geometry.to_json() != models[0].geometry.to_json():
            raise InputFileError(
                index_path,
                f"slice {s['name']!r}: checkpoint {ckpt} has another geometry than slice {names[0]!r}",
            )
        names.append(s["name"])
        # an index written before angle slices has only "energy"; an absent key selects everything
        ranges.append([*s["select"].get("energy", ALL_ENERGIES), *s["select"].get("angle", ALL_ANGLES)])
        models.append(model)
        paths.append(os.path.abspath(ckpt))
        digests.append(str(entry.get("checkpoint_sha256", "")))
    lo, hi, a_lo, a_hi = np.asarray(ranges, dtype=np.float64).T
    selects = [dict(s["select"]) for s in index["slices"]]
    return FamilyModels(index_path, names, lo, hi, models, paths, digests, a_lo, a_hi, selects)


def route(
    e_inc: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    names: list[str] | None = None,
    angles: np.ndarray | None = None,
    angle_lo: np.ndarray | None = None,
    angle_hi: np.ndarray | None = None,
) -> np.ndarray:
    """The slice of each event: ``k`` with ``lo[k] <= e_inc < hi[k]`` (and, with ``angles``,
    ``angle_lo[k] <= angle < angle_hi[k]``); the first such slice where slices overlap.

    Args:
        e_inc: (N,) incident energies, MeV.
        lo, hi: (K,) slice energy ranges, MeV.
        names: slice names for the error message.
        angles: (N,) incidence angles, degrees, or None to route by energy alone.
        angle_lo, angle_hi: (K,) slice angle ranges, degrees (with ``angles``).

    Returns:
        int64 (N,) slice positions.

    Raises:
        FastsimError: some event is in no slice (the message gives the first and the ranges).
    """
    e_inc = np.asarray(e_inc, dtype=np.float64)
    k = np.full(e_inc.shape, -1, dtype=np.int64)
    for j in range(len(lo) - 1, -1, -1):  # backwards: the first slice that holds an event wins
        inside = (e_inc >= lo[j]) & (e_inc < hi[j])
        if angles is not None:
            inside &= (angles >= angle_lo[j]) & (angles < angle_hi[j])
        k[inside] = j
    if (k < 0).any():
        out = k < 0
        first = int(np.argmax(out))
        names = names or [str(i) for i in range(len(lo))]
        if angles is None:
            ranges = ", ".join(f"{n} [{a:g}, {b:g})" for n, a, b in zip(names, lo, hi, strict=True))
            raise FastsimError(
                f"{int(out.sum())} of {len(e_inc)} energies are in no slice of the family, the first "
                f"{e_inc[first]:g} MeV (event {first}); slices (MeV): {ranges}"
            )
        ranges = ", ".join(
            f"{n} [{a:g}, {b:g}) × [{c:g}, {d:g})"
            for n, a, b, c, d in zip(names, lo, hi, angle_lo, angle_hi, strict=True)
        )
        raise FastsimError(
            f"{int(out.sum())} of {len(e_inc)} events are in no slice of the family, the first "
            f"{e_inc[first]:g} MeV at {angles[first]:g} deg (event {first}); slices (MeV × deg): {ranges}"
        )
    return k


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
        FastsimError: an event in no slice (before anything is written), angles missing where the
            family uses them, a generator failure.
    """
    from fastsim.data.hdf5 import ShowerWriter
    from fastsim.generation.generate import (
        ANGLES_DATASET,
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
    a_all = plan.angles(0, len(plan)) if plan.has_angles else None
    if a_all is None and family.uses_angles:
        raise FastsimError(
            "the family's slices select by incidence angle or are conditioned on it: give --angles DEG[,DEG...] "
            "or --like a reference file with incident_angles"
        )
    slice_of = route(e_all, family.lo, family.hi, family.names, a_all, family.angle_lo, family.angle_hi)
    # as for one model: angles beyond a slice model's training angles are extrapolations (a warning)
    if a_all is not None:
        from fastsim.generation.cli import angle_warning
        from fastsim.generation.energies import ArrayEnergies

        for k, model in enumerate(family.models):
            mine = slice_of == k
            if mine.any() and getattr(model, "angle_range", None) is not None:
                warning = angle_warning(ArrayEnergies(e_all[mine], "slice", a_all[mine]), model.angle_range)
                if warning:
                    print(f"fastsim generate: warning: slice {family.names[k]!r}: {warning}", file=sys.stderr)
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
                {"slice": n, "select": sel, "checkpoint": c, "checkpoint_sha256": h, "n_showers": int(u)}
                for n, sel, c, h, u in zip(
                    family.names, family.selects, family.checkpoints, family.sha256, used, strict=True
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
                # the angle goes to the models conditioned on it; the others generate at their slice's angles
                conditioned = getattr(models[k], "angle_range", None) is not None
                angles = a_all[start : start + batch_size][rows] if conditioned else None
                showers[rows] = generate_batch(
                    models[k], e_inc[rows], seed, b * n_slices + int(k), device, threshold, angles
                )
            writer.append(e_inc, showers)
        if a_all is not None:  # as the one-model writer: (N, 1) degrees
            writer.add_dataset(ANGLES_DATASET, a_all[:, None], units="deg")
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
        plan = energies_like(args.like, n_voxels=family.geometry.n_voxels)
        if plan.has_angles and not family.uses_angles:
            print(f"fastsim generate: warning: {args.like} has incident_angles but the family neither selects by "
                  "angle nor has models conditioned on it; the angles are not used", file=sys.stderr)  # fmt: skip
            plan = plan.without_angles()
    if plan.has_angles and not family.uses_angles:
        raise FastsimError(
            "the family neither selects by incidence angle nor has models conditioned on it: drop --angles"
        )
    result = generate_family(
        family, plan, args.output, seed=args.seed, batch_size=args.batch_size, device=args.device,
        overwrite=args.overwrite, compression_opts=args.compression_level, threshold=args.threshold,
    )  # fmt: skip
    print(
        f"{result.path}: {result.n_showers} showers from {len(family.models)} slice models on {result.device} "
        f"in {result.wall_s:.1f} s ({result.time_per_shower_s * 1e6:.1f} µs/shower)"
    )
    return 0
