"""The CaloChallenge evaluation protocol: readout threshold, classifier inputs, histogram binnings.

Reimplemented from the definitions of the official evaluation (github.com/CaloChallenge/homepage,
``code/evaluate.py``, ``code/HighLevelFeatures.py``, ``code/XMLHandler.py``,
``code/evaluate_plotting_helper.py``; arXiv:2410.21611) so that fastsim's numbers equal the
official ones on the same files. What is matched, and where it comes from:

- **Readout threshold** (``evaluate.py``, ``args.min_energy``): every voxel *below* the threshold
  is set to 0 in both samples before any feature is computed (``np.where(shower < min_energy,
  0, shower)``: a voxel equal to the threshold is kept). 1 MeV for dataset 1 (photons and pions),
  0.5 keV / 0.033 (the sampling fraction) = 15.15 keV for datasets 2 and 3
  (:data:`READOUT_THRESHOLD_MEV`, :func:`default_threshold`).
- **High-level vector** (``prepare_high_data_for_classifier``, also the FPD/KPD input):
  log10(E_inc), log10(E_layer + 1e-8) per layer, then for the layers binned in α only: the centres
  of energy in η and φ /100, the widths in η and φ /100; log10(E_tot + 1e-8); per layer the
  sparsity (the fraction of voxels with *no* energy, ``1 − mean(E > 0)``); per layer the radial
  centre of energy and width /100 (:func:`high_level_vector`). Energies MeV, lengths mm. η and φ
  of a voxel are r cos α and r sin α with r the middle of its radial bin and α the middle of its
  α bin on [−π, π] (``XMLHandler.SetEtaAndPhiFromPolar``), which is what
  :func:`fastsim.metrics.shapes.shower_features` computes as ``center_x``/``center_y``.
- **Low-level inputs** (``prepare_low_data_for_classifier``): [log10 E_inc, voxels / E_inc]; the
  "normed" variant [log10 E_inc, voxels / (E_layer + 1e-16), log10(E_layer + 1e-8)]
  (:func:`low_level_normed_inputs`). The official code builds the normed voxels from the file
  *without* the threshold (its ``cls-low-normed`` call passes none) but its E_layer with it; fastsim
  applies the threshold to both, as for every other metric.
- **Separation-power binnings** (``evaluate_plotting_helper.py``; the value is
  ``_separation_power``: ½ Σ (p−q)²/(p+q) of the histograms normalised inside the range, so entries
  outside are dropped, and NaN when a sample has no entry inside): E_tot/E_inc in
  ``linspace(0.5, 1.5, 101)``; per incident energy (dataset 1: bins [2^k, 2^(k+1)) MeV,
  k = 8 … 22) in ``linspace(0.4, 1.4, 21)``, or ``linspace(0.9, 1.1, 21)`` from 2^12 MeV up for
  photons; E_layer in ``logspace(log10 threshold, log10 max_ref E_layer, 40)``; centres of energy
  in η, φ on 100 bins over (−100, 100) mm ((−500, 500) for layers 12, 13; (−30, 30) for datasets
  2, 3); widths over (0, 100) ((0, 400); (0, 30)); radial centre and width over (0, 500)
  ((0, 1500) for layers 12–14; (0, 42) and (0, 20) for datasets 2, 3); sparsity over
  ``linspace(0, 1, 21)``; voxel energies in ``logspace(log10 threshold, log10 max_ref voxel, 50)``
  (:func:`feature_edges`, :func:`etot_einc_edges`, :func:`per_energy_bins`). The official script
  writes the first seven of these (E_tot/E_inc, per energy, E_layer, η/φ centres and widths, voxel
  energies); its radial and sparsity histograms are defined but not called — fastsim reports them
  too, with the same definitions.
- Geometries other than the four built-ins follow dataset 1's rules (layer ids as given); their
  default threshold is 0 (no CaloChallenge value exists for them).

The classifier's network and training are :data:`fastsim.metrics.classifier.CALOCHALLENGE`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from fastsim.geometry import Geometry

__all__ = [
    "FEATURES",
    "READOUT_THRESHOLD_MEV",
    "apply_threshold",
    "dataset_key",
    "default_threshold",
    "etot_einc_edges",
    "feature_edges",
    "high_level_columns",
    "high_level_vector",
    "low_level_normed_inputs",
    "official_separation_power",
    "per_energy_bins",
    "per_energy_edges",
    "sparsity",
]

#: Readout threshold per built-in dataset in MeV (``evaluate.py``: ds1 1 MeV; ds2/3 0.5 keV / 0.033).
READOUT_THRESHOLD_MEV = {"1-photons": 1.0, "1-pions": 1.0, "2": 0.5e-3 / 0.033, "3": 0.5e-3 / 0.033}

#: The per-layer features of the official histograms, in the order fastsim reports them.
FEATURES = ("e_layer", "center_eta", "center_phi", "width_eta", "width_phi", "center_r", "width_r", "sparsity")


def dataset_key(geometry: Geometry) -> str | None:
    """The CaloChallenge dataset a geometry is (``"1-photons"``, ``"1-pions"``, ``"2"``, ``"3"``),
    by the built-in name or, failing that, by an identical binning; None for any other geometry."""
    if geometry.name in READOUT_THRESHOLD_MEV:
        return geometry.name
    layout = [(ly.id, ly.r_edges, ly.n_alpha) for ly in geometry.layers]
    for name in READOUT_THRESHOLD_MEV:
        if Geometry.builtin(name).n_voxels == geometry.n_voxels:
            ref = Geometry.builtin(name)
            if [(ly.id, ly.r_edges, ly.n_alpha) for ly in ref.layers] == layout:
                return name
    return None


def default_threshold(geometry: Geometry) -> float:
    """The CaloChallenge readout threshold of a geometry in MeV; 0 for non-CaloChallenge geometries."""
    key = dataset_key(geometry)
    return READOUT_THRESHOLD_MEV[key] if key is not None else 0.0


def apply_threshold(showers: ArrayLike, threshold: float) -> np.ndarray:
    """Zero every voxel below ``threshold`` (strictly: a voxel equal to it is kept), as the
    official evaluation does.

    Args:
        showers: voxel energies, shape (N, V), MeV.
        threshold: MeV, >= 0 (0 leaves the showers unchanged).

    Returns:
        A new array of the same shape and dtype (the input is left alone).
    """
    s = np.asarray(showers)
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be finite and >= 0 MeV, got {threshold}")
    if threshold == 0:
        return s.copy()
    return np.where(s < threshold, np.zeros((), dtype=s.dtype), s)


def sparsity(showers: ArrayLike, geometry: Geometry) -> np.ndarray:
    """Official sparsity per layer: the fraction of the layer's voxels with no energy (E <= 0).

    Args:
        showers: shape (N, V), MeV (thresholded already).
        geometry: supplies the layer offsets.

    Returns:
        float64 array of shape (N, n_layers), in [0, 1].
    """
    s = np.asarray(showers)
    off = geometry.layer_offsets
    hit = np.add.reduceat((s > 0).astype(np.float64), off[:-1], axis=1)
    return 1.0 - hit / np.diff(off)


def _alpha_layers(geometry: Geometry) -> list[int]:
    """Indices (not ids) of the layers binned in α (n_alpha > 1), ``layersBinnedInAlpha``."""
    return [i for i, ly in enumerate(geometry.layers) if ly.n_alpha > 1]


def high_level_columns(geometry: Geometry) -> list[str]:
    """Names of the columns of :func:`high_level_vector`, e.g. ``"log10 E_layer 0"``."""
    ids = geometry.layer_ids
    alpha = [ids[i] for i in _alpha_layers(geometry)]
    cols = ["log10 E_inc"] + [f"log10 E_layer {i}" for i in ids]
    for name in ("center_eta", "center_phi", "width_eta", "width_phi"):
        cols += [f"{name}/100 {i}" for i in alpha]
    cols.append("log10 E_tot")
    cols += [f"sparsity {i}" for i in ids]
    cols += [f"center_r/100 {i}" for i in ids] + [f"width_r/100 {i}" for i in ids]
    return cols


def high_level_vector(features: dict[str, np.ndarray], geometry: Geometry) -> np.ndarray:
    """The official high-level classifier (and FPD/KPD) input.

    Args:
        features: :func:`fastsim.metrics.shapes.shower_features` of *thresholded* showers
            (``e_inc`` (N,), ``e_tot`` (N,), ``e_layer``, ``center_x``, ``center_y``, ``width_x``,
            ``width_y``, ``center_r``, ``width_r`` (N, L) in MeV and mm) plus ``sparsity_official``
            (N, L) from :func:`sparsity`.
        geometry: the geometry the features were computed with.

    Returns:
        float64 array (N, 2 + 2 L + 4 A + L) with A the layers binned in α; columns as named by
        :func:`high_level_columns` (module docstring).
    """
    a = _alpha_layers(geometry)
    e = np.asarray(features["e_inc"], dtype=np.float64).ravel()
    f = {k: np.asarray(v, dtype=np.float64) for k, v in features.items()}
    cols = [np.log10(e)[:, None], np.log10(f["e_layer"] + 1e-8)]
    for key in ("center_x", "center_y", "width_x", "width_y"):
        cols.append(f[key][:, a] / 1e2)
    cols.append(np.log10(f["e_tot"] + 1e-8)[:, None])
    cols.append(f["sparsity_official"])
    cols += [f["center_r"] / 1e2, f["width_r"] / 1e2]
    return np.concatenate(cols, axis=1)


def low_level_normed_inputs(showers: ArrayLike, e_inc: ArrayLike, geometry: Geometry) -> np.ndarray:
    """The official "normed" low-level input: [log10 E_inc, voxels / (E_layer + 1e-16), log10(E_layer + 1e-8)].

    Args:
        showers: shape (N, V), MeV (thresholded).
        e_inc: shape (N,), MeV.
        geometry: supplies the layer offsets.

    Returns:
        float32 array (N, 1 + V + L).
    """
    s = np.asarray(showers, dtype=np.float64)
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    off = geometry.layer_offsets
    e_layer = np.add.reduceat(s, off[:-1], axis=1)
    rep = np.repeat(e_layer, np.diff(off), axis=1)
    return np.concatenate([np.log10(e)[:, None], s / (rep + 1e-16), np.log10(e_layer + 1e-8)], axis=1).astype(
        np.float32
    )


def etot_einc_edges() -> np.ndarray:
    """E_tot/E_inc binning of all showers together: ``linspace(0.5, 1.5, 101)``."""
    return np.linspace(0.5, 1.5, 101)


def per_energy_edges(energy: float, dataset: str | None) -> np.ndarray:
    """E_tot/E_inc binning at one incident energy (MeV): ``linspace(0.9, 1.1, 21)`` for
    dataset-1 photons from the fifth energy bin (2^12 MeV) up, ``linspace(0.4, 1.4, 21)`` otherwise."""
    if dataset == "1-photons" and energy >= 2.0**12:
        return np.linspace(0.9, 1.1, 21)
    return np.linspace(0.4, 1.4, 21)


def per_energy_bins(dataset: str | None) -> list[tuple[float, float, np.ndarray]]:
    """The official per-energy E_tot/E_inc histograms: ``(lo, hi, edges)`` with E_inc in
    [lo, hi) MeV, lo = 2^8 … 2^22 (``plot_Etot_Einc_discrete``, dataset 1 only; fastsim applies
    the same rule to any discrete geometry)."""
    targets = 2.0 ** np.linspace(8, 23, 16)
    return [(float(lo), float(hi), per_energy_edges(float(lo), dataset)) for lo, hi in zip(targets[:-1], targets[1:], strict=True)]


def feature_edges(
    feature: str, layer_id: int, dataset: str | None, threshold: float, reference: ArrayLike
) -> np.ndarray:
    """The official histogram edges of one per-layer feature.

    Args:
        feature: one of :data:`FEATURES` or ``"voxel"`` (all voxel energies).
        layer_id: the layer's id (the XML id: 0 … 44); ignored for ``"voxel"``.
        dataset: :func:`dataset_key` of the geometry (None: dataset 1's rules).
        threshold: the readout threshold in MeV (the log binnings start there; with 0 they
            start at the reference's smallest positive value instead).
        reference: the reference sample of this feature (its maximum ends the log binnings), MeV.

    Returns:
        Increasing edges.
    """
    ds23 = dataset in ("2", "3")
    if feature in ("e_layer", "voxel"):
        ref = np.asarray(reference, dtype=np.float64).ravel()
        pos = ref[ref > 0]
        lo = threshold if threshold > 0 else (float(pos.min()) if pos.size else 1e-3)
        hi = float(ref.max()) if ref.size else lo * 10
        if not hi > lo:
            hi = lo * 10
        return np.logspace(np.log10(lo), np.log10(hi), 40 if feature == "e_layer" else 50)
    if feature in ("center_eta", "center_phi"):
        lim = (-30.0, 30.0) if ds23 else (-500.0, 500.0) if layer_id in (12, 13) else (-100.0, 100.0)
    elif feature in ("width_eta", "width_phi"):
        lim = (0.0, 30.0) if ds23 else (0.0, 400.0) if layer_id in (12, 13) else (0.0, 100.0)
    elif feature == "center_r":
        lim = (0.0, 42.0) if ds23 else (0.0, 1500.0) if layer_id in (12, 13, 14) else (0.0, 500.0)
    elif feature == "width_r":
        lim = (0.0, 20.0) if ds23 else (0.0, 1500.0) if layer_id in (12, 13, 14) else (0.0, 500.0)
    elif feature == "sparsity":
        return np.linspace(0.0, 1.0, 21)
    else:
        raise ValueError(f"unknown feature {feature!r}; known: {FEATURES + ('voxel',)}")
    return np.linspace(*lim, 101)


def official_separation_power(generated: ArrayLike, reference: ArrayLike, edges: ArrayLike) -> float:
    """``_separation_power`` of the official code: ½ Σ (p−q)²/(p+q+1e-16) of the two histograms
    normalised to unit sum *inside* ``edges`` (entries outside are dropped; numpy's last bin
    includes its upper edge). NaN when either sample has no entry inside, as there.

    Args:
        generated: shape (N,). reference: shape (M,). edges: (B + 1,), increasing.

    Returns:
        The separation power in [0, 1], or NaN.
    """
    edges = np.asarray(edges, dtype=np.float64)
    cg, _ = np.histogram(np.asarray(generated, dtype=np.float64).ravel(), bins=edges)
    cr, _ = np.histogram(np.asarray(reference, dtype=np.float64).ravel(), bins=edges)
    if cg.sum() == 0 or cr.sum() == 0:
        return math.nan
    p, q = cg / cg.sum(), cr / cr.sum()
    return float(0.5 * np.sum((p - q) ** 2 / (p + q + 1e-16)))
