"""The benchmark of generated showers against full simulation: inputs, metrics, report files.

Three stages, kept apart:

1. :func:`check_inputs` and :func:`collect_sample` — I/O. Both files are checked against the
   geometry and each other, then each is streamed once, chunk by chunk; every chunk's voxels below
   the readout threshold are zeroed first (:func:`fastsim.metrics.calochallenge.apply_threshold`,
   default by geometry: :func:`fastsim.metrics.calochallenge.default_threshold`), then the
   per-shower high-level features (O(N × n_layers)), the voxel-energy spectrum and the mean image
   are accumulated; only the classifier's low-level inputs are a random subsample
   (``max_showers`` rows, seeded).
2. :func:`compute_metrics` — physics, from arrays only (the functions of :mod:`fastsim.metrics`);
   returns one JSON-ready dict. Two protocols (:data:`PROTOCOLS`): ``"calochallenge"`` (the
   default) uses the official evaluation's binnings, high-level vector, classifier and FPD/KPD
   (:mod:`fastsim.metrics.calochallenge`, :data:`fastsim.metrics.classifier.CALOCHALLENGE`,
   :mod:`fastsim.metrics.fpd`); ``"quick"`` fastsim's lighter classifier and reference-range
   binnings (tests, training callbacks).
3. :func:`write_outputs` — ``metrics.json`` (atomic), the PNGs (:mod:`fastsim.report.plots`, drawn
   from the metric results), ``report.md`` and ``report.html``.

:func:`run_benchmark` runs all three; ``fastsim benchmark`` (:mod:`fastsim.report.cli`) calls it.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import BUILTIN, Geometry
from fastsim.metrics.calochallenge import apply_threshold, low_level_normed_inputs
from fastsim.metrics.compare import compare_distributions, reference_binning, separation_power_counts
from fastsim.metrics.response import EnergyGroups, compare_response, energy_groups, layer_response, summarize
from fastsim.metrics.shapes import FEATURE_UNITS, PER_LAYER_FEATURES, shower_features, voxel_spectrum_edges
from fastsim.outputs import atomic_output, write_json, write_text

__all__ = [
    "PROTOCOLS",
    "SampleData",
    "Tolerances",
    "check_deposit_scale",
    "check_energy_scales",
    "check_inputs",
    "collect_sample",
    "compute_metrics",
    "infer_geometry",
    "load_tolerances",
    "run_benchmark",
    "write_json_atomic",
    "write_outputs",
]

#: p-value and KS distance below/above which continuous incident-energy spectra are called different.
#: Both must hold: with 10⁶ showers a harmless 0.5 % difference already has a tiny p-value.
KS_PVALUE = 1e-3
KS_DISTANCE = 0.02

#: the benchmark protocols: the official CaloChallenge evaluation, or fastsim's lighter one
PROTOCOLS = ("calochallenge", "quick")
#: FPD/KPD settings of the official evaluation (``evaluate.py``: fpd(min_samples=10000), kpd(batch_size=10000))
FPD_SETTINGS = {"min_samples": 10_000, "max_samples": 50_000, "num_batches": 20, "num_points": 10}
KPD_SETTINGS = {"num_batches": 10, "batch_size": 10_000}
#: classifier inputs: "low" (voxels / E_inc), "normed" (voxels / E_layer), "high" (the high-level
#: vector); the default set per protocol. One official classifier on 2700 vs 2700 showers costs
#: ~4.5 CPU-minutes (docs/benchmark.md).
CLASSIFIER_INPUTS = ("low", "normed", "high")
DEFAULT_CLASSIFIER_INPUTS = {"calochallenge": ("low", "normed", "high"), "quick": ("low", "high")}

#: rows per chunk are chosen so one float64 chunk of showers is about this many bytes
CHUNK_BYTES = 64 << 20
#: memory cap of one sample's low-level classifier input (float32, V + 1 columns): 20000 rows of
#: dataset 1 fit (30 MB), dataset 3 (40500 voxels) gets ~1650 rows instead of 3.2 GB
LOW_LEVEL_BYTES = 256 << 20


# --------------------------------------------------------------------------------------- tolerances
@dataclass
class Tolerances:
    """Pass/fail thresholds of the report.

    Attributes:
        response: max |⟨E_tot/E_inc⟩_gen / ⟨E_tot/E_inc⟩_ref − 1| per incident energy (1 %).
        resolution: max |(σ/μ)_gen / (σ/μ)_ref − 1| per incident energy (5 % relative).
        separation: max of the mean over incident energies of the separation power of
            E_tot/E_inc (0.003). Note its finite-sample floor (``separation_power_floor`` in
            metrics.json): ~0.0015 for 10⁴ showers per sample and 30 bins.
        auc: max classifier ROC AUC, low- and high-level (0.8).
    """

    response: float = 0.01
    resolution: float = 0.05
    separation: float = 0.003
    auc: float = 0.8


def load_tolerances(path: str | os.PathLike | None = None, **overrides: float | None) -> Tolerances:
    """Tolerances from a YAML mapping (keys of :class:`Tolerances`) and explicit overrides.

    Raises:
        InputFileError: missing/unreadable file, unknown keys, non-positive values.
    """
    import yaml

    values: dict[str, float] = {}
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputFileError(path, "tolerance file not found")
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise InputFileError(path, f"not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputFileError(path, "must hold a mapping like 'response: 0.01'")
        known = set(Tolerances.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputFileError(path, f"unknown tolerance keys {unknown}; known: {sorted(known)}")
        for key, val in data.items():
            try:
                values[key] = float(val)
            except (TypeError, ValueError):
                raise InputFileError(path, f"tolerance {key!r} is not a number: {val!r}") from None
            if not values[key] > 0:
                raise InputFileError(path, f"tolerance {key!r} must be > 0, got {val!r}")
    for key, val in overrides.items():
        if val is not None:
            if not val > 0:
                raise FastsimError(f"tolerance {key!r} must be > 0, got {val}")
            values[key] = float(val)
    return Tolerances(**values)


# --------------------------------------------------------------------------------------- inputs
def _attr_geometry(attrs: dict[str, Any], path: str) -> Geometry | None:
    spec = attrs.get("geometry")
    if spec is None or spec == "":
        return None
    try:
        return Geometry.resolve(spec if isinstance(spec, str) else str(spec))
    except (FastsimError, ValueError, KeyError, TypeError) as err:
        raise InputFileError(path, f"unreadable 'geometry' attribute ({err})") from None


def _same_layout(a: Geometry, b: Geometry) -> bool:
    return [(ly.r_edges, ly.n_alpha) for ly in a.layers] == [(ly.r_edges, ly.n_alpha) for ly in b.layers]


def infer_geometry(
    generated_path: str, generated_attrs: dict[str, Any], n_voxels: int,
    reference_path: str, reference_attrs: dict[str, Any],
) -> Geometry:  # fmt: skip
    """The geometry of a file pair without ``--geometry``.

    Order: the files' ``geometry`` attribute (the reference's if both carry one, after checking
    they describe the same binning), else the built-in binning with this many voxels.

    Raises:
        InputFileError: the two files carry different geometries.
        FastsimError: nothing identifies the geometry.
    """
    g_gen = _attr_geometry(generated_attrs, generated_path)
    g_ref = _attr_geometry(reference_attrs, reference_path)
    if g_gen is not None and g_ref is not None and not _same_layout(g_gen, g_ref):
        raise InputFileError(
            generated_path,
            f"geometry attribute {g_gen.name!r} differs from the reference's {g_ref.name!r} ({reference_path})",
        )
    if g_ref is not None or g_gen is not None:
        return g_ref if g_ref is not None else g_gen  # type: ignore[return-value]
    matches = [name for name in BUILTIN if Geometry.builtin(name).n_voxels == n_voxels]
    if len(matches) == 1:
        return Geometry.builtin(matches[0])
    raise FastsimError(
        f"cannot tell the geometry of {n_voxels}-voxel showers (no 'geometry' attribute, "
        f"{'several' if matches else 'no'} built-in binning with that many voxels): pass --geometry NAME|XML"
    )


def _energy_hint(e_gen: np.ndarray, e_ref: np.ndarray) -> str:
    ratio = float(np.median(e_ref)) / float(np.median(e_gen))
    if 300 < ratio < 3000:
        return " (the generated energies are ~1000x smaller: GeV instead of MeV?)"
    if 1 / 3000 < ratio < 1 / 300:
        return " (the generated energies are ~1000x larger: keV, or reference in GeV?)"
    return ""


def check_energies(
    generated_path: str, e_gen: np.ndarray, reference_path: str, e_ref: np.ndarray, groups: EnergyGroups
) -> dict[str, Any]:
    """Check that both files sample the same incident energies; return what was compared.

    Discrete reference (see :func:`fastsim.metrics.response.energy_groups`): the generated file
    must hold exactly the same set of energies (each within the groups' relative tolerance).
    Continuous: a two-sample KS test; the spectra are called different when p < :data:`KS_PVALUE`
    *and* the KS distance > :data:`KS_DISTANCE`.

    Raises:
        InputFileError: naming the generated file and what differs.
    """
    from scipy.stats import ks_2samp

    if not (np.all(np.isfinite(e_gen)) and np.all(e_gen > 0)):
        raise InputFileError(generated_path, "incident energies must be finite and > 0 MeV")
    if groups.kind == "discrete":
        idx = groups.assign(e_gen)
        present = np.unique(idx[idx >= 0])
        problems = []
        if np.any(idx < 0):
            extra = np.unique(e_gen[idx < 0])
            shown = ", ".join(f"{e:g}" for e in extra[:5]) + (" ..." if len(extra) > 5 else "")
            problems.append(f"{len(extra)} incident energies not in the reference ({shown} MeV)")
        missing = sorted(set(range(groups.n_groups)) - set(present.tolist()))
        if missing:
            shown = ", ".join(f"{groups.energies[i]:g}" for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
            problems.append(f"reference energies missing from the generated file ({shown} MeV)")
        if problems:
            raise InputFileError(
                generated_path,
                "incident energies differ from the reference's: " + "; ".join(problems) + _energy_hint(e_gen, e_ref),
            )
        return {"kind": "discrete", "n_energies": groups.n_groups}
    res = ks_2samp(e_gen, e_ref)
    if res.pvalue < KS_PVALUE and res.statistic > KS_DISTANCE:
        raise InputFileError(
            generated_path,
            f"incident-energy spectrum differs from the reference's (KS distance {res.statistic:.3g}, "
            f"p = {res.pvalue:.2g}){_energy_hint(e_gen, e_ref)}",
        )
    return {"kind": "continuous", "ks_distance": float(res.statistic), "ks_pvalue": float(res.pvalue)}


@dataclass
class InputsInfo:
    """What :func:`check_inputs` established about a file pair."""

    geometry: Geometry
    groups: EnergyGroups
    energy_check: dict[str, Any]
    attrs: dict[str, dict[str, Any]]
    n_showers: dict[str, int]


def check_inputs(
    generated: str | os.PathLike, reference: str | os.PathLike, geometry: str | Geometry | None = None
) -> InputsInfo:
    """Structural and cross-file checks of a generated/reference pair (values come later).

    Checks, in order: each file opens as CaloChallenge HDF5; both have the same voxel count; the
    geometry (given, or from :func:`infer_geometry`) matches that count; the incident energies
    (:func:`check_energies`, with groups built from the reference).

    Raises:
        InputFileError: naming the offending file and the problem.
    """
    from fastsim.data.hdf5 import open_calochallenge

    gpath, rpath = os.fspath(generated), os.fspath(reference)
    with open_calochallenge(rpath) as rf, open_calochallenge(gpath) as gf:
        if gf.n_voxels != rf.n_voxels:
            raise InputFileError(
                gpath, f"showers have {gf.n_voxels} voxels but the reference {rpath} has {rf.n_voxels}"
            )
        if geometry is not None:
            geo = Geometry.resolve(geometry)
            for cf in (rf, gf):
                geo.check_n_voxels(cf.n_voxels, cf.path)
                attr_geo = _attr_geometry(cf.attrs, cf.path)
                if attr_geo is not None and not _same_layout(attr_geo, geo):
                    raise InputFileError(
                        cf.path, f"geometry attribute {attr_geo.name!r} differs from --geometry {geo.name!r}"
                    )
        else:
            geo = infer_geometry(gpath, gf.attrs, gf.n_voxels, rpath, rf.attrs)
            for cf in (rf, gf):
                geo.check_n_voxels(cf.n_voxels, cf.path)
        check_energy_scales(gpath, gf.attrs, rpath, rf.attrs)
        e_ref, e_gen = rf.incident_energies(), gf.incident_energies()
        if not (np.all(np.isfinite(e_ref)) and np.all(e_ref > 0)):
            raise InputFileError(rpath, "incident energies must be finite and > 0 MeV")
        groups = energy_groups(e_ref)
        check = check_energies(gpath, e_gen, rpath, e_ref, groups)
        return InputsInfo(
            geo, groups, check, {"generated": dict(gf.attrs), "reference": dict(rf.attrs)},
            {"generated": gf.n_showers, "reference": rf.n_showers},
        )  # fmt: skip


def check_energy_scales(
    generated_path: str, generated_attrs: dict[str, Any], reference_path: str, reference_attrs: dict[str, Any]
) -> None:
    """Refuse a pair whose ``energy_scale`` attributes differ (EM scale vs active-material deposits:
    a factor ~4 that no per-file check sees). Files that do not say are not judged here.

    Raises:
        InputFileError: naming the generated file, both scales and the fix.
    """
    g, r = generated_attrs.get("energy_scale") or "", reference_attrs.get("energy_scale") or ""
    if g and r and g != r:
        raise InputFileError(
            generated_path,
            f"showers are on the {g} energy scale but the reference {reference_path} is on the {r} scale "
            "(convert the Geant4 file with fastsim em-scale, or train on the reference's scale)",
        )


# --------------------------------------------------------------------------------------- streaming
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
    path: str | os.PathLike,
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
        path: the file.
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
            generated file are caught against the reference by :func:`check_energies` and
            :func:`check_deposit_scale`.
        threshold: readout threshold in MeV: every voxel below it is zeroed before anything is
            computed (0: none).
        normed: also collect the official "normed" low-level input.
        official_voxel_edges: also histogram every voxel energy in these edges (MeV).

    Raises:
        InputFileError: any problem :func:`fastsim.data.hdf5.validate_calochallenge` finds
            (NaN/inf, negative or absurd energies, unit mix-ups), naming the file.
    """
    from fastsim.data.hdf5 import validate_detailed
    from fastsim.metrics.shapes import voxel_spectrum_counts

    path = os.fspath(path)
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
            rows = state["low_rows"][(state["low_rows"] >= start) & (state["low_rows"] < start + len(e))] - start
            if len(rows):
                state["low"].append(np.concatenate([np.log10(e[rows])[:, None], s[rows] / e[rows, None]], axis=1)
                                    .astype(np.float32))  # fmt: skip
                if normed:
                    state["normed"].append(low_level_normed_inputs(s[rows], e[rows], geometry))

    from fastsim.data.hdf5 import open_calochallenge

    with open_calochallenge(path) as cf:
        n = cf.n_showers
    rng = np.random.default_rng(seed)
    k = n if max_showers is None else min(n, int(max_showers))
    chosen = rng.permutation(n)[:k]
    k_low = min(k, max(1, LOW_LEVEL_BYTES // (4 * (v + 1))))
    state["sub"] = np.sort(chosen)
    state["low_rows"] = np.sort(chosen[:k_low])
    t0 = time.perf_counter()
    problems, _stats = validate_detailed(path, geometry, chunk_size=chunk, on_chunk=on_chunk)
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
    path: str | os.PathLike, edges: np.ndarray, threshold: float = 0.0, chunk_size: int | None = None
) -> np.ndarray:
    """Histogram of every voxel energy of a file (after the readout threshold) in ``edges`` (MeV).

    A second streamed pass over a file already checked by :func:`collect_sample`: the official
    voxel binning ends at the reference's largest voxel, known only after its first pass.

    Returns:
        counts, shape (len(edges) − 1,), int64.
    """
    from fastsim.data.hdf5 import open_calochallenge

    counts = np.zeros(len(edges) - 1, np.int64)
    with open_calochallenge(os.fspath(path)) as cf:
        for _e, s in cf.iter_chunks(chunk_size or default_chunk_size(cf.n_voxels)):
            counts += np.histogram(apply_threshold(s, threshold).ravel(), bins=edges)[0]
    return counts


def check_deposit_scale(gen: SampleData, ref: SampleData, factor: float = 100.0) -> None:
    """Refuse a pair whose median E_tot/E_inc differ by more than ``factor``: a unit mix-up
    (voxels in GeV or keV) that the per-file checks cannot see when deposits are only *smaller*
    than expected. No generator worth benchmarking is off by 100x.

    Raises:
        InputFileError: naming the generated file.
    """
    def raw(sample: SampleData) -> np.ndarray:
        e = sample.e_tot_raw
        return e if e is not None and len(e) == len(sample.features["e_inc"]) else sample.features["e_tot"]

    mg = float(np.median(raw(gen) / gen.features["e_inc"]))
    mr = float(np.median(raw(ref) / ref.features["e_inc"]))
    # a generator depositing nothing (dead ReLUs) is a bad model, not a unit problem: report it
    if mr > 0 and mg > 0 and not (1 / factor <= mg / mr <= factor):
        hint = " (voxel energies in GeV instead of MeV?)" if 0 < mg < mr else ""
        raise InputFileError(
            gen.path, f"median E_tot/E_inc is {mg:.3g} but {mr:.3g} in the reference {ref.path}{hint}"
        )


# --------------------------------------------------------------------------------------- metrics
def _timing(attrs_gen: dict[str, Any], attrs_ref: dict[str, Any], groups: EnergyGroups) -> dict[str, Any] | None:
    """Timing comparison from the files' ``time_per_shower_s`` / ``time_per_shower_by_energy``."""

    def per_energy(attrs: dict[str, Any]) -> dict[float, float]:
        raw = attrs.get("time_per_shower_by_energy")
        if raw is None:
            return {}
        try:
            d = json.loads(raw) if isinstance(raw, str) else dict(raw)
            return {float(k): float(val) for k, val in d.items()}
        except (ValueError, TypeError):
            return {}

    def scalar(attrs: dict[str, Any]) -> float | None:
        try:
            val = float(attrs["time_per_shower_s"])
        except (KeyError, TypeError, ValueError):
            return None
        return val if math.isfinite(val) and val > 0 else None

    tg, tr = scalar(attrs_gen), scalar(attrs_ref)
    if tg is None and tr is None:
        return None
    out: dict[str, Any] = {
        "generated_s_per_shower": tg,
        "reference_s_per_shower": tr,
        "speedup": (tr / tg) if (tg and tr) else None,
        "generated_device": attrs_gen.get("device"),
        "reference_producer": attrs_ref.get("producer"),
        "by_energy": [],
    }
    pg, pr = per_energy(attrs_gen), per_energy(attrs_ref)
    if pg or pr:
        for key, e in zip(groups.keys(), groups.energies, strict=True):
            g = next((val for k, val in pg.items() if math.isclose(k, e, rel_tol=1e-5)), None)
            r = next((val for k, val in pr.items() if math.isclose(k, e, rel_tol=1e-5)), None)
            out["by_energy"].append(
                {"key": key, "energy": float(e), "generated_s": g, "reference_s": r,
                 "speedup": (r / g) if (g and r) else None}
            )  # fmt: skip
    return out


def _status(ratio: float, unc: float, tol: float) -> str:
    """"pass" (|ratio − 1| <= tol), "fail" (outside by more than 2 σ) or "not significant"
    (outside, but within 2 σ of the band: more showers are needed to tell)."""
    if not math.isfinite(ratio):
        return "fail"
    dev = abs(ratio - 1)
    if dev <= tol:
        return "pass"
    if math.isfinite(unc) and dev - 2 * unc <= tol:
        return "not significant"
    return "fail"


def compute_metrics(
    gen: SampleData,
    ref: SampleData,
    geometry: Geometry,
    groups: EnergyGroups,
    tolerances: Tolerances,
    classifier: bool = True,
    classifier_options: dict[str, Any] | None = None,
    seed: int = 0,
    n_bins: int = 50,
    protocol: str = "calochallenge",
    classifier_inputs: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """All metrics of a generated sample against the reference, as one JSON-ready dict.

    Args:
        gen, ref: from :func:`collect_sample`.
        geometry: the voxel geometry.
        groups: incident-energy groups built from the reference.
        tolerances: the pass/fail thresholds.
        classifier: run the classifier tests.
        classifier_options: fields of :class:`fastsim.metrics.classifier.ClassifierConfig`.
        seed: seeds the bootstraps and the classifier.
        n_bins: bins of the shape histograms (E_tot/E_inc per energy uses 30 under ``"quick"``).
        protocol: ``"calochallenge"``: E_tot/E_inc per energy in the official binning
            (:func:`fastsim.metrics.calochallenge.per_energy_edges`), the official classifier on
            the official inputs (low-level, low-level normed, high-level vector), and a
            ``calochallenge`` section (official separation powers of every feature, FPD, KPD);
            ``"quick"``: 30 bins over the reference's range per energy and the
            :class:`~fastsim.metrics.classifier.ClassifierConfig` defaults on fastsim's inputs.
        classifier_inputs: which classifier inputs to test (:data:`CLASSIFIER_INPUTS`; default
            :data:`DEFAULT_CLASSIFIER_INPUTS` of the protocol; "normed" needs the samples'
            ``low_level_normed``).

    Returns:
        A dict with ``protocol``, ``energy_groups``, ``response`` (per energy: summaries of
        E_tot/E_inc of both samples, their ratios, the distribution comparison and pass flags),
        ``layers``, ``shapes``, ``voxel_spectrum``, ``classifier``, ``calochallenge`` (None under
        ``"quick"``), ``summary`` (the checks and the verdict).
    """
    from fastsim.metrics import calochallenge as cc

    if protocol not in PROTOCOLS:
        raise FastsimError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    official = protocol == "calochallenge"
    dataset = cc.dataset_key(geometry)
    inputs = _classifier_inputs(protocol, classifier_inputs)
    fg, fr = gen.features, ref.features
    ig, ir = groups.assign(fg["e_inc"]), groups.assign(fr["e_inc"])
    ratio_g, ratio_r = fg["e_tot"] / fg["e_inc"], fr["e_tot"] / fr["e_inc"]
    keys, labels = groups.keys(), groups.labels()
    per_energy = []
    for gi in range(groups.n_groups):
        xg, xr = ratio_g[ig == gi], ratio_r[ir == gi]
        row: dict[str, Any] = {"key": keys[gi], "label": labels[gi], "energy": float(groups.energies[gi])}
        row["generated"] = summarize(xg)
        row["reference"] = summarize(xr)
        row.update(compare_response(row["generated"], row["reference"]))
        if len(xg) and len(xr) and official:
            row["e_ratio"] = compare_distributions(
                xg, xr, bins=cc.per_energy_edges(row["energy"], dataset), seed=seed + gi, clip=False
            )
            # the official value: NaN (not 1) when a sample has no entry inside the range
            row["e_ratio"]["separation_power"] = cc.official_separation_power(xg, xr, row["e_ratio"]["edges"])
        elif len(xg) and len(xr):
            row["e_ratio"] = compare_distributions(
                xg, xr, bins=reference_binning(xr, 30), seed=seed + gi, clip=True
            )
        else:
            row["e_ratio"] = None
        rr, sr = row["response_ratio"], row["resolution_ratio"]
        row["pass_response"] = bool(math.isfinite(rr) and abs(rr - 1) <= tolerances.response)
        row["pass_resolution"] = bool(math.isfinite(sr) and abs(sr - 1) <= tolerances.resolution)
        row["status_response"] = _status(rr, row["response_ratio_unc"], tolerances.response)
        row["status_resolution"] = _status(sr, row["resolution_ratio_unc"], tolerances.resolution)
        sep = row["e_ratio"]["separation_power"] if row["e_ratio"] else math.nan
        row["pass_separation"] = bool(math.isfinite(sep) and sep <= tolerances.separation)
        per_energy.append(row)

    # layer energies: mean fractions per energy, and distributions of E_layer/E_inc over all energies
    lg = layer_response(fg["e_inc"], fg["e_layer"], groups)
    lr = layer_response(fr["e_inc"], fr["e_layer"], groups)
    layers: dict[str, Any] = {"ids": geometry.layer_ids, "per_energy": {}, "distributions": []}
    for key in lg:
        if key != "n":
            layers["per_energy"][key] = {"generated": lg[key].tolist(), "reference": lr[key].tolist()}
    frac_g = fg["e_layer"] / fg["e_inc"][:, None]
    frac_r = fr["e_layer"] / fr["e_inc"][:, None]
    for li in range(geometry.n_layers):
        layers["distributions"].append(
            compare_distributions(frac_g[:, li], frac_r[:, li], bins=reference_binning(frac_r[:, li], n_bins),
                                  seed=seed + li, clip=True)
        )  # fmt: skip

    shapes: dict[str, Any] = {}
    for feat in PER_LAYER_FEATURES:
        if feat == "e_layer":
            continue  # in "layers", as fractions of E_inc
        shapes[feat] = {"unit": FEATURE_UNITS[feat], "layers": []}
        for li in range(geometry.n_layers):
            xg, xr = fg[feat][:, li], fr[feat][:, li]
            shapes[feat]["layers"].append(
                compare_distributions(xg, xr, bins=reference_binning(xr, n_bins), seed=seed + li, clip=True)
            )

    spectrum = {
        "edges_mev": gen.spectrum_edges.tolist(),
        "generated": gen.spectrum_counts.tolist(),
        "reference": ref.spectrum_counts.tolist(),
        "generated_below": gen.spectrum_below,
        "reference_below": ref.spectrum_below,
        "generated_above": gen.spectrum_above,
        "reference_above": ref.spectrum_above,
        "separation_power": separation_power_counts(gen.spectrum_counts, ref.spectrum_counts),
    }

    def hl_vector(sample: SampleData, rows: np.ndarray | None = None) -> np.ndarray:
        f = sample.features if rows is None else {k: v[rows] for k, v in sample.features.items()}
        return cc.high_level_vector({**f, "sparsity_official": 1.0 - f["sparsity"]}, geometry)

    clf: dict[str, Any] = {"run": bool(classifier)}
    if classifier:
        from fastsim.metrics.classifier import (
            CALOCHALLENGE,
            ClassifierConfig,
            classifier_test,
            high_level_inputs,
        )

        base = CALOCHALLENGE if official else ClassifierConfig()
        cfg = ClassifierConfig(**{**asdict(base), "seed": seed, **(classifier_options or {})})
        clf["protocol"] = protocol
        clf["settings"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        clf["inputs"] = list(inputs)
        if "low" in inputs and gen.low_level is not None and ref.low_level is not None:
            clf["low_level"] = classifier_test(gen.low_level, ref.low_level, cfg)
        if "normed" in inputs and gen.low_level_normed is not None and ref.low_level_normed is not None:
            clf["low_level_normed"] = classifier_test(gen.low_level_normed, ref.low_level_normed, cfg)
        # high-level input from the same subsample as the low-level one, so both tests see the same showers
        if official:
            hl_g, hl_r = hl_vector(gen, gen.sub_index), hl_vector(ref, ref.sub_index)
        else:
            hl_g = high_level_inputs({k: v[gen.sub_index] for k, v in fg.items()})
            hl_r = high_level_inputs({k: v[ref.sub_index] for k, v in fr.items()})
        if "high" in inputs:
            clf["high_level"] = classifier_test(hl_g, hl_r, cfg)
        clf["n_per_class"] = {k: clf[k]["n_per_class"] for k in ("low_level", "low_level_normed", "high_level") if k in clf}

    caloc = _calochallenge_section(gen, ref, geometry, dataset, hl_vector, seed) if official else None

    checks = []
    for row in per_energy:
        checks.append({"name": f"response {row['label']}", "value": row["response_ratio"],
                       "unc": row["response_ratio_unc"], "target": f"|ratio-1| <= {tolerances.response:g}",
                       "pass": row["pass_response"]})  # fmt: skip
        checks.append({"name": f"resolution {row['label']}", "value": row["resolution_ratio"],
                       "unc": row["resolution_ratio_unc"], "target": f"|ratio-1| <= {tolerances.resolution:g}",
                       "pass": row["pass_resolution"]})  # fmt: skip
    seps = [row["e_ratio"]["separation_power"] for row in per_energy if row["e_ratio"]]
    mean_sep = float(np.mean(seps)) if seps else math.nan
    floors = [row["e_ratio"]["separation_power_floor"] for row in per_energy if row["e_ratio"]]
    checks.append({"name": "mean separation power of E_tot/E_inc", "value": mean_sep, "unc": None,
                   "target": f"<= {tolerances.separation:g}",
                   "pass": bool(math.isfinite(mean_sep) and mean_sep <= tolerances.separation)})  # fmt: skip
    for kind in ("low_level", "low_level_normed", "high_level"):
        if kind in clf:
            auc = clf[kind]["auc"]
            checks.append({"name": f"classifier AUC ({kind.replace('_', '-')})", "value": auc,
                           "unc": clf[kind]["auc_unc"], "target": f"<= {tolerances.auc:g}",
                           "pass": bool(auc <= tolerances.auc)})  # fmt: skip
    n_failed = sum(not c["pass"] for c in checks)
    n_not_significant = sum(
        row[f"status_{q}"] == "not significant" for row in per_energy for q in ("response", "resolution")
    )
    return {
        "protocol": protocol,
        "energy_groups": groups.to_dict(),
        "response": {"per_energy": per_energy},
        "layers": layers,
        "shapes": shapes,
        "voxel_spectrum": spectrum,
        "classifier": clf,
        "calochallenge": caloc,
        "summary": {
            "pass": n_failed == 0,
            "n_checks": len(checks),
            "n_failed": n_failed,
            "n_failed_not_significant": n_not_significant,
            "mean_separation_power_e_ratio": mean_sep,
            "mean_separation_power_floor": float(np.mean(floors)) if floors else math.nan,
            "checks": checks,
        },
    }


def _classifier_inputs(protocol: str, inputs: tuple[str, ...] | None) -> tuple[str, ...]:
    if inputs is None:
        return DEFAULT_CLASSIFIER_INPUTS[protocol]
    bad = [i for i in inputs if i not in CLASSIFIER_INPUTS]
    if bad or not inputs:
        raise FastsimError(f"classifier inputs must be some of {', '.join(CLASSIFIER_INPUTS)}, got {','.join(inputs)!r}")
    return tuple(dict.fromkeys(inputs))


def _calochallenge_section(
    gen: SampleData, ref: SampleData, geometry: Geometry, dataset: str | None, hl_vector: Any, seed: int
) -> dict[str, Any]:
    """The official separation powers of every feature (official binnings), FPD and KPD."""
    from fastsim.metrics import calochallenge as cc
    from fastsim.metrics.fpd import fpd, fpd_floor, kpd

    fg, fr = gen.features, ref.features

    def hist(xg: np.ndarray, xr: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
        cg, cr = np.histogram(xg, bins=edges)[0], np.histogram(xr, bins=edges)[0]
        return {
            "separation_power": cc.official_separation_power(xg, xr, edges),
            "edges": edges.tolist(),
            "n_generated_inside": int(cg.sum()), "n_reference_inside": int(cr.sum()),
            "hist_generated": (cg / cg.sum() if cg.sum() else cg.astype(float)).tolist(),
            "hist_reference": (cr / cr.sum() if cr.sum() else cr.astype(float)).tolist(),
        }  # fmt: skip

    source = {"e_layer": "e_layer", "center_eta": "center_x", "center_phi": "center_y", "width_eta": "width_x",
              "width_phi": "width_y", "center_r": "center_r", "width_r": "width_r"}  # fmt: skip
    features: dict[str, list[dict[str, Any]]] = {}
    for feat in cc.FEATURES:
        rows = []
        for li, ly in enumerate(geometry.layers):
            if feat in ("center_eta", "center_phi", "width_eta", "width_phi") and ly.n_alpha == 1:
                continue  # the official code histograms η/φ only for the layers binned in α
            if feat == "sparsity":
                xg, xr = 1.0 - fg["sparsity"][:, li], 1.0 - fr["sparsity"][:, li]
            else:
                xg, xr = fg[source[feat]][:, li], fr[source[feat]][:, li]
            edges = cc.feature_edges(feat, ly.id, dataset, ref.threshold, xr)
            rows.append({"layer": ly.id, **hist(np.asarray(xg, np.float64), np.asarray(xr, np.float64), edges)})
        features[feat] = rows
    e_all = hist(fg["e_tot"] / fg["e_inc"], fr["e_tot"] / fr["e_inc"], cc.etot_einc_edges())
    voxel = None
    if gen.official_voxel_counts is not None and ref.official_voxel_counts is not None:
        cg, cr = gen.official_voxel_counts, ref.official_voxel_counts
        voxel = {
            "separation_power": math.nan if not (cg.sum() and cr.sum())
            else float(0.5 * np.sum((cg / cg.sum() - cr / cr.sum()) ** 2 / (cg / cg.sum() + cr / cr.sum() + 1e-16))),
            "edges": cc.feature_edges("voxel", 0, dataset, ref.threshold, [ref.max_voxel]).tolist(),
        }  # fmt: skip
    t0 = time.perf_counter()
    hr, hg = hl_vector(ref), hl_vector(gen)
    fpd_v, fpd_u = fpd(hr, hg, seed=seed, **FPD_SETTINGS)
    # two independent samples of one distribution give FPD > 0: the floor says how much
    floor_v, floor_u = fpd_floor(hr, len(hg), seed=seed, **FPD_SETTINGS)
    kpd_v, kpd_u = kpd(hr, hg, seed=seed, **KPD_SETTINGS)
    return {
        "dataset": dataset,
        "threshold_mev": ref.threshold,
        "high_level_columns": cc.high_level_columns(geometry),
        "e_ratio": e_all,
        "features": features,
        "voxel": voxel,
        "fpd": {"value": fpd_v, "unc": fpd_u, "floor": floor_v, "floor_unc": floor_u,
                "n_reference": len(hr), "n_generated": len(hg), **FPD_SETTINGS},
        "kpd": {"value": kpd_v, "unc": kpd_u, "n_reference": len(hr), "n_generated": len(hg), **KPD_SETTINGS},
        "fpd_kpd_seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------------------- outputs
def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write strict JSON (NaN/inf as null) to ``path`` via a temporary file and a rename."""
    write_json(path, data)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return "pass" if x else "**FAIL**"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def _status_cell(status: str) -> str:
    return {"pass": "pass", "fail": "**FAIL**"}.get(status, "fail (< 2σ)")


def _pm(v: Any, u: Any, digits: int = 4) -> str:
    if u is None or (isinstance(u, float) and not math.isfinite(u)):
        return _fmt(v, digits)
    return f"{_fmt(v, digits)} ± {_fmt(u, 2)}"


def _document(results: dict[str, Any], images: dict[str, str]) -> list[tuple[str, Any]]:
    """The report as blocks ("h1"/"h2"/"p"/"table"/"img", content), rendered to Markdown and HTML."""
    inp = results["inputs"]
    summ = results["summary"]
    tol = results["tolerances"]
    blocks: list[tuple[str, Any]] = [("h1", "fastsim benchmark: generated vs full simulation")]
    blocks.append(("p", f"Generated: `{inp['generated']['path']}` ({inp['generated']['n_showers']} showers). "
                        f"Reference: `{inp['reference']['path']}` ({inp['reference']['n_showers']} showers). "
                        f"Geometry: {results['geometry']['name']} ({results['geometry']['n_voxels']} voxels, "
                        f"{len(results['geometry']['layers'])} layers). Incident energies: "
                        f"{results['energy_groups']['kind']}, {len(results['energy_groups']['keys'])} groups."))  # fmt: skip
    thr = results.get("threshold") or {}
    clf = results["classifier"]
    protocol = results.get("protocol", "quick")
    proto_text = ("the CaloChallenge evaluation (official binnings, high-level vector, classifier, FPD/KPD)"
                  if protocol == "calochallenge" else "quick (fastsim's lighter classifier, reference-range binnings)")
    blocks.append(("p", f"Protocol: **{protocol}** — {proto_text}. Readout threshold: "
                        f"{_fmt(thr.get('mev'))} MeV ({thr.get('source', '?')}; voxels below it zeroed in both "
                        f"samples before every metric)."))  # fmt: skip
    verdict = "PASS" if summ["pass"] else "FAIL"
    blocks.append(("p", f"**Verdict: {verdict}** — {summ['n_checks'] - summ['n_failed']} of {summ['n_checks']} "
                        f"checks pass. Tolerances: response ±{tol['response']:g}, resolution ±{tol['resolution']:g} "
                        f"(relative), mean separation power of E_tot/E_inc ≤ {tol['separation']:g} "
                        f"(finite-sample floor here ≈ {_fmt(summ['mean_separation_power_floor'], 2)}), "
                        f"classifier AUC ≤ {tol['auc']:g}."))  # fmt: skip
    if summ.get("n_failed_not_significant"):
        blocks.append(("p", f"{summ['n_failed_not_significant']} of the failed response/resolution checks lie "
                            "within 2σ of the tolerance band (marked 'fail (< 2σ)'): these samples are too small "
                            "to tell."))  # fmt: skip
    blocks.append(("h2", "Agreement per incident energy"))
    header = ["E_inc", "N gen", "N ref", "response gen", "response ref", "ratio", "", "resolution gen",
              "resolution ref", "ratio", "", "sep. power", "χ²/ndf"]  # fmt: skip
    rows = []
    for row in results["response"]["per_energy"]:
        er = row["e_ratio"] or {}
        rows.append([
            row["label"], _fmt(row["generated"]["n"]), _fmt(row["reference"]["n"]),
            _pm(row["generated"]["mean"], row["generated"]["mean_unc"]),
            _pm(row["reference"]["mean"], row["reference"]["mean_unc"]),
            _pm(row["response_ratio"], row["response_ratio_unc"]), _status_cell(row["status_response"]),
            _pm(row["generated"]["resolution"], row["generated"]["resolution_unc"], 3),
            _pm(row["reference"]["resolution"], row["reference"]["resolution_unc"], 3),
            _pm(row["resolution_ratio"], row["resolution_ratio_unc"]), _status_cell(row["status_resolution"]),
            _pm(er.get("separation_power"), er.get("separation_power_unc"), 3),
            _fmt(er.get("chi2_ndf"), 3),
        ])  # fmt: skip
    blocks.append(("table", (header, rows)))
    for key in ("response", "resolution", "e_ratio"):
        if key in images:
            blocks.append(("img", images[key]))
    blocks.append(("h2", "Classifier test"))
    if clf.get("run"):
        rows = []
        for kind in ("low_level", "low_level_normed", "high_level"):
            if kind in clf:
                c = clf[kind]
                rows.append([kind.replace("_", "-"), _pm(c["auc"], c["auc_unc"], 3), _fmt(c["jsd"], 3),
                             _fmt(c["n_per_class"]), _fmt(c["n_test"]), _fmt(c["epochs"]),
                             _fmt(c["auc"] <= tol["auc"])])  # fmt: skip
        blocks.append(("table", (["input", "ROC AUC", "JSD", "showers/class", "test rows", "epochs", ""], rows)))
        blocks.append(("p", "AUC 0.5: indistinguishable; 1.0: fully separable (CaloChallenge, arXiv:2410.21611)."))
        st = clf.get("settings") or {}
        if st:
            blocks.append(("p", f"Classifier: hidden {'×'.join(str(h) for h in st['hidden'])}, LeakyReLU "
                                f"({st['leaky_slope']:g}), dropout {st['dropout']:g}, Adam lr {st['lr']:g}, batch "
                                f"{st['batch_size']}, at most {st['max_epochs']} epochs, epoch kept by validation "
                                f"{st['select_on']}, {st['dtype']}, isotonic calibration; split "
                                f"{1 - st['val_fraction'] - st['test_fraction']:g}/{st['val_fraction']:g}/"
                                f"{st['test_fraction']:g} per class (train/selection+calibration/score); AUC of the "
                                f"{'calibrated' if st['score_calibrated'] else 'raw'} output."))  # fmt: skip
    else:
        blocks.append(("p", "Not run (--no-classifier)."))
    blocks.append(("h2", "Layer energies and shower shapes"))
    sep_rows = []
    shapes = results["shapes"]
    for li, lid in enumerate(results["layers"]["ids"]):
        cells = [str(lid), _fmt(results["layers"]["distributions"][li]["separation_power"], 3)]
        cells += [_fmt(shapes[f]["layers"][li]["separation_power"], 3) for f in shapes]
        sep_rows.append(cells)
    blocks.append(("p", "Separation power per layer (all energies together):"))
    blocks.append(("table", (["layer", "E_layer/E_inc", *shapes.keys()], sep_rows)))
    for key in ("layers", "layer_fractions", *[f"shape_{f}" for f in shapes], "voxel_spectrum", "images"):
        if key in images:
            blocks.append(("img", images[key]))
    blocks.append(("p", f"Voxel-energy spectrum separation power: "
                        f"{_fmt(results['voxel_spectrum']['separation_power'], 3)}."))  # fmt: skip
    cc = results.get("calochallenge")
    if cc:
        blocks.append(("h2", "CaloChallenge evaluation"))
        fpd, kpd = cc["fpd"], cc["kpd"]
        def milli(x: Any) -> Any:
            return None if x is None else 1e3 * x

        blocks.append(("p", f"Dataset rules: {cc['dataset'] or 'dataset 1 (not a CaloChallenge geometry)'}. "
                            f"FPD ×10³: {_pm(milli(fpd['value']), milli(fpd['unc']), 3)} (finite-sample floor: "
                            f"{_pm(milli(fpd.get('floor')), milli(fpd.get('floor_unc')), 3)}, what two independent "
                            f"samples of the reference's distribution of these sizes give); "
                            f"KPD ×10³: {_pm(milli(kpd['value']), milli(kpd['unc']), 3)} "
                            f"({fpd['n_reference']} reference, {fpd['n_generated']} generated showers; JetNet "
                            f"definitions on the {len(cc['high_level_columns'])}-column high-level vector). "
                            f"Separation power of E_tot/E_inc in [0.5, 1.5]: {_fmt(cc['e_ratio']['separation_power'], 3)}; "
                            f"of the voxel energies: {_fmt((cc.get('voxel') or {}).get('separation_power'), 3)}."))  # fmt: skip
        feats = list(cc["features"])
        by_layer: dict[int, dict[str, Any]] = {}
        for feat in feats:
            for row in cc["features"][feat]:
                by_layer.setdefault(row["layer"], {})[feat] = row["separation_power"]
        blocks.append(("p", "Separation power per layer in the official binnings (– : not defined, or no entry inside the range):"))
        blocks.append(("table", (["layer", *feats],
                                 [[str(lid), *[_fmt(v.get(f), 3) for f in feats]] for lid, v in by_layer.items()])))  # fmt: skip
    timing = results.get("timing")
    blocks.append(("h2", "Timing"))
    if timing:
        blocks.append(("p", f"Generator: {_fmt(timing['generated_s_per_shower'])} s/shower "
                            f"(device {timing.get('generated_device') or '?'}); full simulation: "
                            f"{_fmt(timing['reference_s_per_shower'])} s/shower "
                            f"({timing.get('reference_producer') or '?'}); speed-up {_fmt(timing['speedup'], 4)}."))  # fmt: skip
        if timing["by_energy"]:
            blocks.append(("table", (["E_inc key (MeV)", "generator s", "full sim s", "speed-up"],
                                     [[t["key"], _fmt(t["generated_s"]), _fmt(t["reference_s"]),
                                       _fmt(t["speedup"], 4)] for t in timing["by_energy"]])))  # fmt: skip
    else:
        blocks.append(("p", "The inputs carry no time_per_shower_s attributes."))
    blocks.append(("p", f"All numbers: `metrics.json`. Made by fastsim {results['fastsim_version']} "
                        f"at {results['created_utc']} (seed {results['seed']})."))  # fmt: skip
    return blocks


def render_markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {content}\n")
        elif kind == "h2":
            out.append(f"## {content}\n")
        elif kind == "p":
            out.append(f"{content}\n")
        elif kind == "img":
            out.append(f"![{os.path.splitext(content)[0]}]({content})\n")
        elif kind == "table":
            header, rows = content
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def render_html(blocks: list[tuple[str, Any]]) -> str:
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>fastsim benchmark</title>",
           "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>"]  # fmt: skip
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{inline(content)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{inline(content)}</p>")
        elif kind == "img":
            out.append(f"<p><img src='{html.escape(content)}' alt='{html.escape(content)}'></p>")
        elif kind == "table":
            header, rows = content
            out.append("<table><tr>" + "".join(f"<th>{inline(h)}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def write_outputs(
    results: dict[str, Any],
    out_dir: str | os.PathLike,
    mean_images: tuple[np.ndarray, np.ndarray] | None = None,
    geometry: Geometry | None = None,
    plots: bool = True,
) -> dict[str, str]:
    """Write ``metrics.json``, the PNGs, ``report.md`` and ``report.html`` into ``out_dir``.

    Args:
        results: from :func:`compute_metrics` plus the run's ``inputs`` etc. (see :func:`run_benchmark`).
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

        images = make_plots(results, out_dir, mean_images=mean_images, geometry=geometry)
        written.update({f"png:{k}": os.path.join(out_dir, v) for k, v in images.items()})
    if mean_images is not None:
        npz = os.path.join(out_dir, "mean_images.npz")

        with atomic_output(npz) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, generated=mean_images[0], reference=mean_images[1])
        written["mean_images"] = npz
    results = {**results, "files": {"plots": images, "mean_images": "mean_images.npz" if mean_images is not None else None}}
    blocks = _document(results, images)
    md, htm, js = (os.path.join(out_dir, n) for n in ("report.md", "report.html", "metrics.json"))
    write_text(md, render_markdown(blocks))
    write_text(htm, render_html(blocks))
    # metrics.json last: its presence means the run finished
    write_json_atomic(js, results)
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
) -> dict[str, Any]:
    """Check, summarise and compare a generated file with the reference; write the report.

    Args:
        generated: generated CaloChallenge HDF5 file.
        reference: full-simulation CaloChallenge HDF5 file.
        out_dir: report directory (created).
        geometry: built-in name, XML path or Geometry; inferred when None (:func:`infer_geometry`).
        tolerances: pass/fail thresholds (defaults of :class:`Tolerances`).
        classifier: run the classifier tests.
        classifier_options: :class:`fastsim.metrics.classifier.ClassifierConfig` fields.
        max_showers: showers per sample for the classifier (random, seeded); None = all.
        seed: seed of every random choice.
        chunk_size: rows per read.
        plots: draw the PNGs.
        protocol: ``"calochallenge"`` (official evaluation) or ``"quick"``; see :func:`compute_metrics`.
        threshold: readout threshold in MeV applied to both samples before every metric; None:
            the geometry's CaloChallenge value (:func:`fastsim.metrics.calochallenge.default_threshold`),
            0: none.
        classifier_inputs: classifier inputs to test, some of ``("low", "normed", "high")``;
            default: all three under ``"calochallenge"``, low and high under ``"quick"``.

    Returns:
        The results (what ``metrics.json`` holds, before NaN -> null).

    Raises:
        InputFileError: a bad input, naming the file.
    """
    from fastsim import __version__
    from fastsim.metrics.calochallenge import default_threshold, feature_edges

    t0 = time.perf_counter()
    tol = tolerances or Tolerances()
    if protocol not in PROTOCOLS:
        raise FastsimError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise FastsimError(f"readout threshold must be a finite number >= 0 MeV, got {threshold}")
    inputs = _classifier_inputs(protocol, classifier_inputs)
    normed = classifier and "normed" in inputs
    out_path = os.fspath(out_dir)
    if os.path.exists(out_path) and not os.path.isdir(out_path):  # say so before minutes of work
        raise InputFileError(out_path, "output path exists and is not a directory")
    info = check_inputs(generated, reference, geometry)
    geo = info.geometry
    official = protocol == "calochallenge"
    thr_source = "--threshold" if threshold is not None else f"default of geometry {geo.name!r}"
    thr = default_threshold(geo) if threshold is None else float(threshold)
    ref = collect_sample(reference, geo, max_showers, seed, classifier, chunk_size, threshold=thr, normed=normed)
    vox_edges = None
    if official:
        from fastsim.metrics.calochallenge import dataset_key

        vox_edges = feature_edges("voxel", 0, dataset_key(geo), thr, [ref.max_voxel])
        ref.official_voxel_counts = voxel_counts(reference, vox_edges, thr, chunk_size)
    gen = collect_sample(
        generated, geo, max_showers, seed + 1, classifier, chunk_size, ref.spectrum_edges, check_units=False,
        threshold=thr, normed=normed, official_voxel_edges=vox_edges,
    )  # fmt: skip
    check_deposit_scale(gen, ref)
    results: dict[str, Any] = {
        "format": "fastsim-benchmark",
        "format_version": 2,
        "fastsim_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "protocol": protocol,
        "threshold": {"mev": thr, "source": thr_source},
        "inputs": {
            "generated": _sample_info(gen, info.attrs["generated"]),
            "reference": _sample_info(ref, info.attrs["reference"]),
            "energy_check": info.energy_check,
        },
        "geometry": {**geo.to_dict(), "n_voxels": geo.n_voxels},
        "tolerances": asdict(tol),
    }
    results.update(
        compute_metrics(
            gen, ref, geo, info.groups, tol, classifier, classifier_options, seed, protocol=protocol,
            classifier_inputs=inputs,
        )  # fmt: skip
    )
    results["timing"] = _timing(info.attrs["generated"], info.attrs["reference"], info.groups)
    results["run_seconds"] = time.perf_counter() - t0
    write_outputs(results, out_dir, mean_images=(gen.mean_image, ref.mean_image), geometry=geo, plots=plots)
    return results
