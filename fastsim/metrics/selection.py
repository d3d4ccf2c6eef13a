"""Model selection by the high-level features: how far generated showers are from a reference.

FastCaloGAN and BoloGAN pick the best training iteration by the χ² of E_tot alone
(:class:`fastsim.training.callbacks.Chi2ModelSelection`). A VAE's likelihood and a GAN's E_tot
agree poorly with what the CaloChallenge classifier sees (docs/results.md: the VAE's validation
likelihood peaks at a third of the run while its showers keep improving, then degrade). This
module scores a sample by the official high-level vector instead
(:func:`fastsim.metrics.calochallenge.high_level_vector`: layer energies, centres and widths,
sparsity, radial centres and widths, E_tot), after the readout threshold, as the mean separation
power over its columns plus E_tot/E_inc — cheap enough to run at every validation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fastsim.geometry import Geometry
from fastsim.metrics.calochallenge import apply_threshold, high_level_columns, high_level_vector, sparsity
from fastsim.metrics.compare import histogram_pair, separation_power_counts
from fastsim.metrics.shapes import shower_features

__all__ = ["high_level_table", "high_level_separation"]


def high_level_table(
    showers: ArrayLike, e_inc: ArrayLike, geometry: Geometry, threshold: float
) -> tuple[np.ndarray, list[str]]:
    """The columns compared by :func:`high_level_separation`, and their names.

    Args:
        showers: voxel energies (N, V), MeV (not thresholded: the threshold is applied here).
        e_inc: incident energies (N,), MeV.
        geometry: the showers' geometry.
        threshold: readout threshold, MeV (voxels below it count as empty).

    Returns:
        float64 array (N, K): the official high-level vector without log10 E_inc (identical in
        both samples by construction) followed by E_tot/E_inc; and the K column names.
    """
    s = apply_threshold(np.asarray(showers, dtype=np.float64), threshold)
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    feats = shower_features(s, e, geometry)
    feats["sparsity_official"] = sparsity(s, geometry)
    hv = high_level_vector(feats, geometry)[:, 1:]
    names = high_level_columns(geometry)[1:] + ["E_tot/E_inc"]
    return np.concatenate([hv, (feats["e_tot"] / e)[:, None]], axis=1), names


def high_level_separation(
    generated: ArrayLike,
    e_generated: ArrayLike,
    reference: ArrayLike,
    e_reference: ArrayLike,
    geometry: Geometry,
    threshold: float = 0.0,
    n_bins: int = 20,
) -> tuple[float, dict[str, float]]:
    """Mean separation power of the high-level features, generated vs reference.

    Each column of :func:`high_level_table` is histogrammed in ``n_bins`` bins at the reference's
    quantiles (equal reference population per bin, so every feature weighs alike whatever its
    scale); values outside the reference's range count in the edge bins, so a generator with
    outliers is charged for them. Columns whose reference takes a single value are compared on
    that value's frequency alone (two bins). Separation power ½ Σ (p−q)²/(p+q) per column
    (0: identical histograms, 1: disjoint), averaged over the columns. With N showers per sample
    the average of two independent samples of one distribution is about ``n_bins / (4 N)``
    (the finite-sample floor), so only differences between runs scored on the same reference
    mean anything.

    Args:
        generated, reference: voxel energies (N_g, V), (N_r, V), MeV.
        e_generated, e_reference: incident energies (N_g,), (N_r,), MeV.
        geometry: the showers' geometry.
        threshold: readout threshold, MeV, applied to both samples.
        n_bins: bins per feature.

    Returns:
        (mean separation power, {column name: separation power}).
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    g, names = high_level_table(generated, e_generated, geometry, threshold)
    r, _ = high_level_table(reference, e_reference, geometry, threshold)
    if len(g) == 0 or len(r) == 0:
        raise ValueError("both samples need at least one shower")
    per: dict[str, float] = {}
    for k, name in enumerate(names):
        edges = np.unique(np.quantile(r[:, k], np.linspace(0.0, 1.0, n_bins + 1)))
        if len(edges) < 2:  # constant in the reference: the share of showers at that value
            counts_g = [np.sum(g[:, k] == edges[0]), np.sum(g[:, k] != edges[0])]
            counts_r = [len(r), 0]
        else:  # outliers of either sample counted in the edge bins, not dropped
            counts_g, counts_r, _ = histogram_pair(g[:, k], r[:, k], edges, clip=True)
        per[name] = separation_power_counts(counts_g, counts_r)
    return float(np.mean(list(per.values()))), per
