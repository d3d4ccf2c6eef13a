"""High-level shower features per shower and layer: energies, centres of energy, widths, sparsity.

These are the CaloChallenge high-level features (arXiv:2410.21611, ``code/HighLevelFeatures.py``):
per layer, the energy E_l, the energy-weighted centre of the voxel centres in the η-like (x)
and φ-like (y) directions and their energy-weighted standard deviations ("widths"), and the
fraction of voxels above a threshold ("sparsity"). fastsim adds the same pair in the radial
distance r from the shower axis, which is what a cylindrical binning measures most directly.

Coordinates come from :class:`fastsim.geometry.Geometry`: voxel centres x = r cos α, y = r sin α
(mm), r the midpoint of the radial bin (mm), α the middle of the α bin (0 for layers without α
binning, so there x = r and y = 0).

Empty layers: the CaloChallenge code divides by ``E_l + 1e-16``, so a layer without energy gets
centre 0 and width 0. fastsim keeps that convention (finite, NaN-free, and both samples are
treated alike so an empty layer in one and not the other still shows up in the comparison), and
computes it without the epsilon: features of layers with E_l <= 0 are set to exactly 0.
Rounding can make the variance E[x²] − E[x]² slightly negative; it is clipped at 0.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fastsim.geometry import Geometry

__all__ = [
    "FEATURE_UNITS",
    "PER_LAYER_FEATURES",
    "shower_features",
    "voxel_spectrum_counts",
    "voxel_spectrum_edges",
]

#: The per-layer features returned by :func:`shower_features`, each of shape (N, n_layers).
PER_LAYER_FEATURES = (
    "e_layer",
    "center_x",
    "center_y",
    "center_r",
    "width_x",
    "width_y",
    "width_r",
    "sparsity",
)

#: Unit of every feature (for axis labels and the report).
FEATURE_UNITS = {
    "e_inc": "MeV",
    "e_tot": "MeV",
    "e_layer": "MeV",
    "center_x": "mm",
    "center_y": "mm",
    "center_r": "mm",
    "width_x": "mm",
    "width_y": "mm",
    "width_r": "mm",
    "sparsity": "",
}


def _layer_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum (N, V) along voxels per layer -> (N, n_layers)."""
    return np.add.reduceat(values, offsets[:-1], axis=1)


def shower_features(
    showers: ArrayLike, e_inc: ArrayLike, geometry: Geometry, threshold: float = 0.0
) -> dict[str, np.ndarray]:
    """High-level features of every shower.

    Args:
        showers: voxel energies, shape (N, n_voxels), MeV, in the geometry's voxel order.
        e_inc: incident energies, shape (N,), MeV.
        geometry: the voxel geometry (supplies layer offsets and voxel centres).
        threshold: voxel energy (MeV) above which a voxel counts as hit for the sparsity
            (strictly greater; default 0 counts every non-zero voxel, as CaloChallenge does).

    Returns:
        dict of float64 arrays: ``e_inc`` (N,) MeV, ``e_tot`` (N,) MeV (sum of all voxels) and,
        each of shape (N, n_layers): ``e_layer`` (MeV), ``center_x``, ``center_y``, ``center_r``
        (mm), ``width_x``, ``width_y``, ``width_r`` (mm, energy-weighted std) and ``sparsity``
        (fraction of the layer's voxels with E > threshold, in [0, 1]). Empty layers: see the
        module docstring.
    """
    s = np.asarray(showers, dtype=np.float64)
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    if s.ndim != 2 or s.shape[1] != geometry.n_voxels:
        raise ValueError(f"showers must have shape (N, {geometry.n_voxels}), got {s.shape}")
    if e.shape[0] != s.shape[0]:
        raise ValueError(f"{e.shape[0]} incident energies for {s.shape[0]} showers")
    off = geometry.layer_offsets
    x, y = geometry.voxel_xy_center
    r = geometry.voxel_r_center
    e_layer = _layer_sums(s, off)
    filled = e_layer > 0
    safe = np.where(filled, e_layer, 1.0)
    out: dict[str, np.ndarray] = {"e_inc": e, "e_tot": s.sum(axis=1), "e_layer": e_layer}
    for name, coord in (("x", x), ("y", y), ("r", r)):
        first = _layer_sums(s * coord, off) / safe
        second = _layer_sums(s * coord**2, off) / safe
        out[f"center_{name}"] = np.where(filled, first, 0.0)
        out[f"width_{name}"] = np.where(filled, np.sqrt(np.clip(second - first**2, 0.0, None)), 0.0)
    n_vox_layer = np.diff(off).astype(np.float64)
    out["sparsity"] = _layer_sums((s > threshold).astype(np.float64), off) / n_vox_layer
    return out


def voxel_spectrum_edges(e_min: float = 1e-3, e_max: float = 1e6, n_bins: int = 90) -> np.ndarray:
    """Log-spaced edges (MeV) for the voxel-energy spectrum; fixed so chunks can be summed.

    The defaults span 1 keV to 1 TeV, 10 bins per decade: every voxel deposit of the CaloChallenge
    datasets above zero (the Geant4 files keep deposits down to ~keV) lands inside.
    """
    if not 0 < e_min < e_max:
        raise ValueError(f"need 0 < e_min < e_max, got {e_min}, {e_max}")
    return np.logspace(np.log10(e_min), np.log10(e_max), n_bins + 1)


def voxel_spectrum_counts(showers: ArrayLike, edges: ArrayLike) -> tuple[np.ndarray, int, int]:
    """Histogram of all voxel energies of a block of showers (accumulate over chunks by summing).

    Args:
        showers: shape (N, n_voxels), MeV.
        edges: bin edges in MeV, shape (n_bins + 1,), e.g. :func:`voxel_spectrum_edges`.

    Returns:
        (counts (n_bins,) int64, number of voxels below the first edge (zeros included), number
        above the last edge).
    """
    v = np.asarray(showers).ravel()
    edges = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(v, bins=edges)
    return counts.astype(np.int64), int(np.sum(v < edges[0])), int(np.sum(v > edges[-1]))
