"""The benchmark of generated showers against full simulation: :func:`run_benchmark` and the files it writes.

The stages live in their own modules and run in this order:

1. :mod:`fastsim.report.inputs` — both files, opened once, are checked against the geometry and
   each other (:func:`~fastsim.report.inputs.check_inputs`; incidence angles that both carry must
   overlap, and then the response is also compared per energy × angle);
2. :mod:`fastsim.report.collect` — each file is streamed once, chunk by chunk, through the
   readout threshold into everything the metrics need
   (:func:`~fastsim.report.collect.collect_sample`);
3. :mod:`fastsim.report.assemble` — physics from arrays only, into a typed
   :class:`~fastsim.report.result.BenchmarkResult`
   (:func:`~fastsim.report.assemble.compute_metrics`, two protocols);
4. here, :func:`write_outputs` — the PNGs (:mod:`fastsim.report.plots`, drawn from the result),
   ``report.md`` and ``report.html`` (:mod:`fastsim.report.render`), ``mean_images.npz`` and
   ``metrics.json`` (last: its presence means the run finished), each written atomically
   (:mod:`fastsim.outputs`).

Pass/fail thresholds: :mod:`fastsim.report.tolerances`. ``fastsim benchmark``
(:mod:`fastsim.report.cli`) calls :func:`run_benchmark`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry
from fastsim.outputs import atomic_output, write_json, write_text
from fastsim.report.assemble import (
    PROTOCOLS,
    classifier_input_set,
    compare_timing,
    compute_angle_rows,
    compute_metrics,
)
from fastsim.report.collect import SampleData, collect_sample, voxel_counts
from fastsim.report.inputs import check_deposit_scale, check_inputs
from fastsim.report.render import document, render_html, render_markdown
from fastsim.report.result import BenchmarkResult
from fastsim.report.tolerances import Tolerances

__all__ = ["run_benchmark", "write_outputs"]


def write_outputs(
    result: BenchmarkResult,
    out_dir: str | os.PathLike,
    mean_images: tuple[np.ndarray, np.ndarray] | None = None,
    geometry: Geometry | None = None,
    plots: bool = True,
) -> dict[str, str]:
    """Write ``metrics.json``, the PNGs, ``report.md`` and ``report.html`` into ``out_dir``.

    Args:
        result: from :func:`fastsim.report.assemble.compute_metrics` with the run's context (see
            :func:`run_benchmark`); its ``files`` are set here.
        out_dir: created if missing.
        mean_images: (generated, reference) mean showers / E_inc, each (V,), for the image plots;
            also saved as ``mean_images.npz``.
        geometry: needed for the image plots.
        plots: draw the PNGs.

    Returns:
        name -> path of every file written.
    """
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputFileError(out_dir, "output path exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    written: dict[str, str] = {}
    images: dict[str, str] = {}
    if plots:
        from fastsim.report.plots import make_plots

        images = make_plots(result, out_dir, mean_images=mean_images, geometry=geometry)
        written.update({f"png:{k}": os.path.join(out_dir, v) for k, v in images.items()})
    if mean_images is not None:
        npz = os.path.join(out_dir, "mean_images.npz")
        with atomic_output(npz) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, generated=mean_images[0], reference=mean_images[1])
        written["mean_images"] = npz
    result.files = {"plots": images, "mean_images": "mean_images.npz" if mean_images is not None else None}
    blocks = document(result, images)
    md, htm, js = (os.path.join(out_dir, n) for n in ("report.md", "report.html", "metrics.json"))
    write_text(md, render_markdown(blocks))
    write_text(htm, render_html(blocks))
    # metrics.json last: its presence means the run finished
    write_json(js, result.to_json())
    written.update({"report.md": md, "report.html": htm, "metrics.json": js})
    return written


def _sample_info(sample: SampleData, attrs: dict[str, Any]) -> dict[str, Any]:
    keep = ("producer", "fastsim_version", "created_utc", "checkpoint", "checkpoint_sha256", "model_class",
            "seed", "device", "geant4_version", "physics_list", "particle", "time_per_shower_s")  # fmt: skip
    return {
        "path": os.path.abspath(sample.path),
        "n_showers": sample.n_showers,
        "n_low_level_subsample": 0 if sample.low_level is None else int(len(sample.low_level)),
        "n_high_level_subsample": int(len(sample.sub_index)),
        "read_seconds": sample.read_seconds,
        "attrs": {k: attrs[k] for k in keep if k in attrs},
    }


def run_benchmark(
    generated: str | os.PathLike,
    reference: str | os.PathLike,
    out_dir: str | os.PathLike,
    geometry: str | Geometry | None = None,
    tolerances: Tolerances | None = None,
    classifier: bool = True,
    classifier_options: dict[str, Any] | None = None,
    max_showers: int | None = 20_000,
    seed: int = 0,
    chunk_size: int | None = None,
    plots: bool = True,
    protocol: str = "calochallenge",
    threshold: float | None = None,
    classifier_inputs: tuple[str, ...] | None = None,
) -> BenchmarkResult:
    """Check, summarise and compare a generated file with the reference; write the report.

    Each input file is opened once: the checks (:func:`~fastsim.report.inputs.check_inputs`),
    the streamed pass (:func:`~fastsim.report.collect.collect_sample`) and, under the official
    protocol, the reference's second pass for the voxel spectrum
    (:func:`~fastsim.report.collect.voxel_counts`) share the open file.

    Args:
        generated: generated CaloChallenge HDF5 file.
        reference: full-simulation CaloChallenge HDF5 file.
        out_dir: report directory (created).
        geometry: built-in name, XML path or Geometry; inferred when None
            (:func:`fastsim.report.inputs.infer_geometry`).
        tolerances: pass/fail thresholds (defaults of :class:`Tolerances`).
        classifier: run the classifier tests.
        classifier_options: :class:`fastsim.metrics.classifier.ClassifierConfig` fields.
        max_showers: showers per sample for the classifier (random, seeded); None = all.
        seed: seed of every random choice.
        chunk_size: rows per read.
        plots: draw the PNGs.
        protocol: ``"calochallenge"`` (official evaluation) or ``"quick"``; see
            :func:`fastsim.report.assemble.compute_metrics`.
        threshold: readout threshold in MeV applied to both samples before every metric; None:
            the geometry's CaloChallenge value (:func:`fastsim.metrics.calochallenge.default_threshold`),
            0: none.
        classifier_inputs: classifier inputs to test, some of ``("low", "normed", "high")``;
            default: all three under ``"calochallenge"``, low and high under ``"quick"``.

    Returns:
        The result (``metrics.json`` is its :meth:`~fastsim.report.result.BenchmarkResult.to_json`).

    Raises:
        InputFileError: a bad input, naming the file.
    """
    from fastsim import __version__
    from fastsim.data.hdf5 import open_calochallenge
    from fastsim.metrics.calochallenge import dataset_key, default_threshold, feature_edges

    t0 = time.perf_counter()
    tol = tolerances or Tolerances()
    if protocol not in PROTOCOLS:
        raise FastsimError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise FastsimError(f"readout threshold must be a finite number >= 0 MeV, got {threshold}")
    inputs = classifier_input_set(protocol, classifier_inputs)
    normed = classifier and "normed" in inputs
    out_path = os.fspath(out_dir)
    if os.path.exists(out_path) and not os.path.isdir(out_path):  # say so before minutes of work
        raise InputFileError(out_path, "output path exists and is not a directory")
    with open_calochallenge(reference) as rf, open_calochallenge(generated) as gf:
        info = check_inputs(gf, rf, geometry)
        geo = info.geometry
        official = protocol == "calochallenge"
        thr_source = "--threshold" if threshold is not None else f"default of geometry {geo.name!r}"
        thr = default_threshold(geo) if threshold is None else float(threshold)
        ref = collect_sample(rf, geo, max_showers, seed, classifier, chunk_size, threshold=thr, normed=normed)
        vox_edges = None
        if official:
            vox_edges = feature_edges("voxel", 0, dataset_key(geo), thr, [ref.max_voxel])
            ref.official_voxel_counts = voxel_counts(rf, vox_edges, thr, chunk_size)
        gen = collect_sample(
            gf, geo, max_showers, seed + 1, classifier, chunk_size, ref.spectrum_edges, check_units=False,
            threshold=thr, normed=normed, official_voxel_edges=vox_edges,
        )  # fmt: skip
    check_deposit_scale(gen, ref)
    result = compute_metrics(
        gen, ref, geo, info.groups, tol, classifier, classifier_options, seed, protocol=protocol,
        classifier_inputs=inputs,
    )  # fmt: skip
    if info.angles is not None:  # both files carry the incidence angle: also per energy × angle
        a = info.angles
        result.per_energy_angle = compute_angle_rows(gen, ref, info.groups, a.groups, a.generated, a.reference)
        result.angle_groups = {**a.groups.to_dict(), "generated_only_deg": a.generated_only,
                               "reference_only_deg": a.reference_only}  # fmt: skip
    result.fastsim_version = __version__
    result.created_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result.seed = seed
    result.threshold = {"mev": thr, "source": thr_source}
    result.inputs = {
        "generated": _sample_info(gen, info.attrs["generated"]),
        "reference": _sample_info(ref, info.attrs["reference"]),
        "energy_check": info.energy_check,
    }
    result.geometry = {**geo.to_dict(), "n_voxels": geo.n_voxels}
    result.tolerances = asdict(tol)
    result.timing = compare_timing(info.attrs["generated"], info.attrs["reference"], info.groups)
    result.run_seconds = time.perf_counter() - t0
    write_outputs(result, out_dir, mean_images=(gen.mean_image, ref.mean_image), geometry=geo, plots=plots)
    return result
