"""One streamed pass per input file: validation, readout threshold, and everything the metrics need.

Each chunk's voxels below the readout threshold are zeroed first
(:func:`fastsim.metrics.calochallenge.apply_threshold`), then the per-shower high-level
features (O(N × n_layers)), the voxel-energy spectrum and the mean image are accumulated; only
the classifier's low-level inputs are a random subsample (``max_showers`` rows, seeded). The
file's values are validated in the same pass (:func:`fastsim.data.hdf5.validate_detailed`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fastsim.errors import InputFileError
from fastsim.geometry import Geometry
from fastsim.metrics.calochallenge import apply_threshold, low_level_normed_inputs
from fastsim.metrics.shapes import shower_features, voxel_spectrum_edges

if TYPE_CHECKING:
    from fastsim.data.hdf5 import CaloFile

__all__ = [
    "CHUNK_BYTES",
    "LOW_LEVEL_BYTES",
    "SampleData",
    "collect_sample",
    "default_chunk_size",
    "voxel_counts",
]

#: rows per chunk are chosen so one float64 chunk of showers is about this many bytes
CHUNK_BYTES = 64 << 20
#: memory cap of one sample's low-level classifier input (float32, V + 1 columns): 20000 rows of
#: dataset 1 fit (30 MB), dataset 3 (40500 voxels) gets ~1650 rows instead of 3.2 GB
LOW_LEVEL_BYTES = 256 << 20


@dataclass
class SampleData:
    """Everything the metrics need from one file, gathered in one streamed pass.

    Attributes:
        path: the file.
        n_showers: N.
        features: :func:`fastsim.metrics.shapes.shower_features` of every shower: ``e_inc``,
            ``e_tot`` (N,) float64 MeV, per-layer features (N, n_layers) float32 (``e_layer`` and
            ``sparsity`` float64).
        low_level: classifier input (log10 E_inc, voxels/E_inc) of the rows ``low_index``,
            (n_low, V + 1) float32; None when not collected.
        sub_index: seeded random rows for the high-level classifier input, sorted, (n_sub,).
        low_index: the low-level rows, sorted, a subset of ``sub_index`` capped in memory by
            :data:`LOW_LEVEL_BYTES` (all of it for dataset 1; ~1650 rows for dataset 3).
        mean_image: mean of showers / E_inc over all showers, (V,) float64 (dimensionless).
        spectrum_edges: voxel-energy bin edges, MeV, (B + 1,).
        spectrum_counts: voxel energies per bin, (B,) int64; ``spectrum_below`` counts voxels
            below the first edge (zeros included), ``spectrum_above`` above the last.
        threshold: the readout threshold applied (MeV; voxels below it were zeroed first).
        low_level_normed: the official "normed" low-level input of the rows ``low_index``,
            (n_low, 1 + V + L) float32; None when not collected.
        max_voxel: the largest voxel energy (MeV, after the threshold).
        official_voxel_counts: voxel energies in the ``official_voxel_edges`` given, (B,) int64.
        e_tot_raw: E_tot before the threshold, (N,) float64 MeV (for the unit checks: a file in GeV
            would otherwise vanish under a 1 MeV threshold and pass for a dead generator).
    """

    path: str
    n_showers: int
    features: dict[str, np.ndarray]
    low_level: np.ndarray | None
    sub_index: np.ndarray
    low_index: np.ndarray
    mean_image: np.ndarray
    spectrum_edges: np.ndarray
    spectrum_counts: np.ndarray
    spectrum_below: int = 0
    spectrum_above: int = 0
    read_seconds: float = 0.0
    threshold: float = 0.0
    low_level_normed: np.ndarray | None = None
    max_voxel: float = 0.0
    official_voxel_counts: np.ndarray | None = None
    e_tot_raw: np.ndarray | None = None


def default_chunk_size(n_voxels: int) -> int:
    """Rows per chunk: ~64 MiB of float64 showers (10⁴ rows for dataset 1, ~200 for dataset 3)."""
    return int(max(1, min(20_000, CHUNK_BYTES // (8 * max(1, n_voxels)))))


def collect_sample(
    source: str | os.PathLike | CaloFile,
    geometry: Geometry,
    max_showers: int | None = 20_000,
    seed: int = 0,
    low_level: bool = True,
    chunk_size: int | None = None,
    spectrum_edges: np.ndarray | None = None,
    check_units: bool = True,
    threshold: float = 0.0,
    normed: bool = False,
    official_voxel_edges: np.ndarray | None = None,
) -> SampleData:
    """Validate and summarise one CaloChallenge file in a single streamed pass.

    Args:
        source: the file, or a :class:`~fastsim.data.hdf5.CaloFile` already open (the benchmark
            opens each input once: :func:`fastsim.report.inputs.check_inputs`, this pass and
            :func:`voxel_counts` share it).
        geometry: its geometry (voxel count already checked).
        max_showers: size of the random subsample kept for the classifier inputs (None: every
            shower); the low-level input is further capped by :data:`LOW_LEVEL_BYTES`.
        seed: seed of the subsample choice.
        low_level: collect the low-level classifier input at all.
        chunk_size: rows per read (default :func:`default_chunk_size`).
        spectrum_edges: voxel-spectrum edges (default :func:`voxel_spectrum_edges`).
        check_units: apply the file-wide GeV/MeV heuristics of :mod:`fastsim.data.hdf5`. The
            benchmark applies them to the reference only: a badly trained generator depositing
            2 × E_inc deserves a failing report, not a refusal; gross unit mix-ups of the
            generated file are caught against the reference by
            :func:`fastsim.report.inputs.check_energies` and
            :func:`fastsim.report.inputs.check_deposit_scale`.
        threshold: readout threshold in MeV: every voxel below it is zeroed before anything is
            computed (0: none).
        normed: also collect the official "normed" low-level input.
        official_voxel_edges: also histogram every voxel energy in these edges (MeV).

    Raises:
        InputFileError: any problem :func:`fastsim.data.hdf5.validate_calochallenge` finds
            (NaN/inf, negative or absurd energies, unit mix-ups), naming the file.
    """
    from fastsim.data.hdf5 import CaloFile, open_calochallenge

    if not isinstance(source, CaloFile):
        with open_calochallenge(source) as cf:
            return collect_sample(cf, geometry, max_showers, seed, low_level, chunk_size, spectrum_edges,
                                  check_units, threshold, normed, official_voxel_edges)  # fmt: skip
    from fastsim.data.hdf5 import validate_detailed
    from fastsim.metrics.shapes import voxel_spectrum_counts

    path = source.path
    v = geometry.n_voxels
    chunk = chunk_size or default_chunk_size(v)
    edges = voxel_spectrum_edges() if spectrum_edges is None else np.asarray(spectrum_edges)
    parts: dict[str, list[np.ndarray]] = {}
    state: dict[str, Any] = {
        "image": np.zeros(v), "counts": np.zeros(len(edges) - 1, np.int64), "below": 0, "above": 0,
        "low": [], "normed": [], "n": 0, "max": 0.0,
        "official": None if official_voxel_edges is None else np.zeros(len(official_voxel_edges) - 1, np.int64),
    }  # fmt: skip

    def on_chunk(start: int, e: np.ndarray, s: np.ndarray, *_info: Any) -> None:
        # (newer fastsim.data.hdf5 also passes per-row check results; the features need none of them)
        # bad rows are reported after the pass; keep the features finite meanwhile
        if not (np.all(np.isfinite(e)) and np.all(e > 0) and np.all(np.isfinite(s))):
            state["bad"] = True
            return
        parts.setdefault("_e_tot_raw", []).append(s.sum(axis=1, dtype=np.float64))
        if threshold > 0:
            s = apply_threshold(s, threshold)
        state["max"] = max(state["max"], float(s.max()) if s.size else 0.0)
        if official_voxel_edges is not None:
            state["official"] += np.histogram(s.ravel(), bins=official_voxel_edges)[0]
        f = shower_features(s, e, geometry)
        for key, val in f.items():
            # float64 where the official histograms have values on their bin edges (sparsity k/n)
            keep = key in ("e_inc", "e_tot", "e_layer", "sparsity")
            parts.setdefault(key, []).append(val if keep else val.astype(np.float32))
        state["image"] += (s / e[:, None]).sum(axis=0, dtype=np.float64)
        c, below, above = voxel_spectrum_counts(s, edges)
        state["counts"] += c
        state["below"] += below
        state["above"] += above
        state["n"] += len(e)
        if low_level:
            rows = (
                state["low_rows"][(state["low_rows"] >= start) & (state["low_rows"] < start + len(e))] - start
            )
            if len(rows):
                state["low"].append(np.concatenate([np.log10(e[rows])[:, None], s[rows] / e[rows, None]], axis=1)
                                    .astype(np.float32))  # fmt: skip
                if normed:
                    state["normed"].append(low_level_normed_inputs(s[rows], e[rows], geometry))

    n = source.n_showers
    rng = np.random.default_rng(seed)
    k = n if max_showers is None else min(n, int(max_showers))
    chosen = rng.permutation(n)[:k]
    k_low = min(k, max(1, LOW_LEVEL_BYTES // (4 * (v + 1))))
    state["sub"] = np.sort(chosen)
    state["low_rows"] = np.sort(chosen[:k_low])
    t0 = time.perf_counter()
    problems, _stats = validate_detailed(source, geometry, chunk_size=chunk, on_chunk=on_chunk)
    if not check_units:
        problems = [(kind, msg) for kind, msg in problems if kind != "units"]
    if problems:
        raise InputFileError(path, "; ".join(msg for _, msg in problems))
    if state.get("bad"):  # validation should have said why; never compute on partial data
        raise InputFileError(path, "non-finite or non-positive values")
    e_tot_raw = np.concatenate(parts.pop("_e_tot_raw")) if "_e_tot_raw" in parts else np.zeros(0)
    features = {key: np.concatenate(val) for key, val in parts.items()}
    low = np.concatenate(state["low"]) if (low_level and state["low"]) else None
    low_normed = np.concatenate(state["normed"]) if (low_level and normed and state["normed"]) else None
    return SampleData(
        path=path, n_showers=n, features=features, low_level=low, sub_index=state["sub"],
        low_index=state["low_rows"],
        mean_image=state["image"] / max(state["n"], 1), spectrum_edges=edges,
        spectrum_counts=state["counts"], spectrum_below=state["below"], spectrum_above=state["above"],
        read_seconds=time.perf_counter() - t0, threshold=float(threshold), low_level_normed=low_normed,
        max_voxel=state["max"], official_voxel_counts=state["official"], e_tot_raw=e_tot_raw,
    )  # fmt: skip


def voxel_counts(
    source: str | os.PathLike | CaloFile,
    edges: np.ndarray,
    threshold: float = 0.0,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Histogram of every voxel energy of a file (after the readout threshold) in ``edges`` (MeV).

    A second streamed pass over a file already checked by :func:`collect_sample` (open, or a
    path): the official voxel binning ends at the reference's largest voxel, known only after its
    first pass.

    Returns:
        counts, shape (len(edges) − 1,), int64.
    """
    from fastsim.data.hdf5 import CaloFile, open_calochallenge

    if not isinstance(source, CaloFile):
        with open_calochallenge(source) as cf:
            return voxel_counts(cf, edges, threshold, chunk_size)
    counts = np.zeros(len(edges) - 1, np.int64)
    for _e, s in source.iter_chunks(chunk_size or default_chunk_size(source.n_voxels)):
        counts += np.histogram(apply_threshold(s, threshold).ravel(), bins=edges)[0]
    return counts
