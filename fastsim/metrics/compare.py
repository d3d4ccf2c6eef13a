"""Comparisons of a generated 1-D distribution with a reference one.

Every function takes plain arrays of per-shower values (e.g. E_tot/E_inc, a layer's centre of
energy in mm) and returns numbers. The binning is always derived from the *reference* sample, so
a generator cannot improve its score by moving the histogram range.

References:
    [FCG] ATLAS, "AtlFast3: FastCaloGAN", Comput. Softw. Big Sci. 6 (2022) 7: χ²/ndf of the total
        energy in 30 bins within ±3 RMS of the reference peak, used for model selection.
    [CC] Krause et al., "CaloChallenge 2022: A Community Challenge for Fast Calorimeter
        Simulation", arXiv:2410.21611: separation power ½ Σ (p−q)²/(p+q) of normalised
        histograms binned from the reference (``code/evaluate.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "chi2_ndf",
    "compare_distributions",
    "fastcalogan_binning",
    "histogram_pair",
    "mean_ratio",
    "reference_binning",
    "separation_power",
    "separation_power_floor",
    "separation_power_counts",
    "wasserstein",
    "width_ratio",
]


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """A finite float64 1-D copy of ``values``; ValueError on NaN/inf or an empty sample."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: empty sample")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


def fastcalogan_binning(reference: ArrayLike, n_bins: int = 30, n_rms: float = 3.0) -> np.ndarray:
    """Bin edges spanning ±``n_rms`` RMS around the reference peak, as in FastCaloGAN [FCG].

    The peak is taken as the reference mean and the RMS as its standard deviation (both of
    the whole sample). Using the mean rather than the mode keeps the rule deterministic and
    free of a histogram of its own; for the near-Gaussian E_tot/E_inc peak the two agree. A
    degenerate reference (all values equal) gets a window of ±1e-6 relative (or ±1e-12
    absolute at 0) so that the edges still increase.

    Args:
        reference: reference sample, shape (N,), any unit.
        n_bins: number of bins.
        n_rms: half-width of the window in units of the reference RMS.

    Returns:
        Edges, shape (n_bins + 1,), same unit as ``reference``, increasing.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not n_rms > 0:
        raise ValueError(f"n_rms must be > 0, got {n_rms}")
    ref = _as_1d(reference, "reference")
    centre = float(np.mean(ref))
    half = n_rms * float(np.std(ref))
    if half <= 0:
        half = max(abs(centre) * 1e-6, 1e-12)
    return np.linspace(centre - half, centre + half, n_bins + 1)


def reference_binning(reference: ArrayLike, n_bins: int = 50) -> np.ndarray:
    """``n_bins`` equal bins spanning the reference's full range [min, max] (CaloChallenge [CC]).

    Args:
        reference: reference sample, shape (N,).
        n_bins: number of bins.

    Returns:
        Edges, shape (n_bins + 1,), increasing (a degenerate reference is widened as in
        :func:`fastcalogan_binning`).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ref = _as_1d(reference, "reference")
    lo, hi = float(ref.min()), float(ref.max())
    if hi <= lo:
        half = max(abs(lo) * 1e-6, 1e-12)
        lo, hi = lo - half, hi + half
    return np.linspace(lo, hi, n_bins + 1)


def _edges(bins: ArrayLike | int, reference: np.ndarray) -> np.ndarray:
    if np.ndim(bins) == 0:
        return reference_binning(reference, int(bins))  # type: ignore[arg-type]
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("bins must be an int or increasing edges of shape (n_bins + 1,)")
    return edges


def histogram_pair(
    generated: ArrayLike, reference: ArrayLike, bins: ArrayLike | int, clip: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of both samples in a common binning.

    By default values outside the edges are not counted (no under/overflow bins): the
    comparisons are of the shapes *inside* the window, as in [CC] and [FCG]. Values exactly on the
    last edge are counted in the last bin (numpy convention).

    Args:
        generated: shape (N_gen,).
        reference: shape (N_ref,).
        bins: edges (n_bins + 1,) or a bin count for :func:`reference_binning`.
        clip: count values outside the edges in the first/last bin instead of dropping them, so
            that generated outliers beyond the reference range count against the generator
            (the benchmark report does this).

    Returns:
        (counts_gen (n_bins,), counts_ref (n_bins,), edges (n_bins + 1,)); counts are float64.
    """
    gen = _as_1d(generated, "generated")
    ref = _as_1d(reference, "reference")
    edges = _edges(bins, ref)
    if clip:
        gen = np.clip(gen, edges[0], edges[-1])
        ref = np.clip(ref, edges[0], edges[-1])
    cg, _ = np.histogram(gen, bins=edges)
    cr, _ = np.histogram(ref, bins=edges)
    return cg.astype(np.float64), cr.astype(np.float64), edges


def chi2_ndf(
    generated: ArrayLike, reference: ArrayLike, bins: ArrayLike | int, clip: bool = False
) -> tuple[float, int]:
    """χ² of two unweighted histograms of different size, and its number of degrees of freedom.

    The test statistic compares the *normalised* shapes (Gagunashvili's homogeneity test, the
    "UU" option of ROOT's ``TH1::Chi2Test``), with n = generated and m = reference counts,
    N = Σn, M = Σm::

        χ² = 1/(N M) Σ_i (M n_i − N m_i)² / (n_i + m_i),    ndf = (#bins with n_i + m_i > 0) − 1

    Bins empty in both samples are skipped. For two independent samples of one distribution
    χ² follows a χ² distribution with ``ndf`` degrees of freedom, so χ²/ndf ≈ 1; FastCaloGAN
    [FCG] uses χ²/ndf of E_tot in :func:`fastcalogan_binning` to select the best epoch.

    Args:
        generated: generated sample, shape (N_gen,).
        reference: reference sample, shape (N_ref,).
        bins: edges (n_bins + 1,) (e.g. :func:`fastcalogan_binning` of the reference) or a count.
        clip: count values outside the edges in the edge bins (see :func:`histogram_pair`); without
            it a generator whose distribution is far wider than the reference is judged only on
            the few events that fall inside the window.

    Returns:
        (χ², ndf). If either histogram has no entries inside the edges the shapes cannot be
        compared: (inf, 0) is returned so that model selection never prefers such a model.
    """
    n, m, _ = histogram_pair(generated, reference, bins, clip=clip)
    big_n, big_m = n.sum(), m.sum()
    if big_n == 0 or big_m == 0:
        return math.inf, 0
    used = (n + m) > 0
    n, m = n[used], m[used]
    chi2 = float(np.sum((big_m * n - big_n * m) ** 2 / (n + m)) / (big_n * big_m))
    return chi2, int(used.sum()) - 1


def _separation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """½ Σ (p−q)²/(p+q) along the last axis, skipping p+q = 0; p, q normalised."""
    s = p + q
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(s > 0, (p - q) ** 2 / np.where(s > 0, s, 1.0), 0.0)
    return 0.5 * terms.sum(axis=-1)


def separation_power(
    generated: ArrayLike,
    reference: ArrayLike,
    bins: ArrayLike | int,
    n_bootstrap: int = 200,
    seed: int = 0,
    clip: bool = False,
) -> tuple[float, float]:
    """Separation power ½ Σ (p−q)²/(p+q) of the normalised histograms [CC], with its uncertainty.

    p and q are the generated and reference histograms each normalised to unit sum inside the
    edges; bins with p + q = 0 are skipped. The value is 0 for identical shapes and 1 for
    disjoint ones. Note the finite-sample floor: two independent samples of one distribution
    give on average :func:`separation_power_floor` > 0, not 0.

    The uncertainty is the standard deviation of the statistic over ``n_bootstrap`` parametric
    bootstrap replicas of the two histograms (multinomial redraws of the observed counts with
    ``numpy.random.default_rng(seed)``). It is computed on the histograms only, so it costs
    O(n_bootstrap × n_bins) whatever the sample size. The delta method is not used because its
    derivative vanishes at p = q, exactly where the answer matters.

    Args:
        generated: generated sample, shape (N_gen,).
        reference: reference sample, shape (N_ref,).
        bins: edges (n_bins + 1,) or a count of equal bins over the reference's range.
        n_bootstrap: bootstrap replicas; 0 returns uncertainty NaN.
        seed: seed of the bootstrap generator.
        clip: count out-of-range values in the edge bins (see :func:`histogram_pair`).

    Returns:
        (separation power in [0, 1], its standard uncertainty). (1.0, 0.0) if either sample has
        no entries inside the edges.
    """
    cg, cr, _ = histogram_pair(generated, reference, bins, clip=clip)
    ng, nr = cg.sum(), cr.sum()
    if ng == 0 or nr == 0:
        return 1.0, 0.0
    p, q = cg / ng, cr / nr
    value = float(_separation(p, q))
    if n_bootstrap <= 0:
        return value, math.nan
    rng = np.random.default_rng(seed)
    pb = rng.multinomial(int(ng), p, size=n_bootstrap) / ng
    qb = rng.multinomial(int(nr), q, size=n_bootstrap) / nr
    return value, float(np.std(_separation(pb, qb), ddof=1)) if n_bootstrap > 1 else 0.0


def separation_power_counts(counts_generated: ArrayLike, counts_reference: ArrayLike) -> float:
    """Separation power [CC] of two histograms given as counts in the same bins (e.g. summed chunk
    by chunk); each is normalised to unit sum first. 1.0 if either is empty."""
    cg = np.asarray(counts_generated, dtype=np.float64)
    cr = np.asarray(counts_reference, dtype=np.float64)
    if cg.shape != cr.shape:
        raise ValueError(f"histograms differ in shape: {cg.shape} vs {cr.shape}")
    if cg.sum() <= 0 or cr.sum() <= 0:
        return 1.0
    return float(_separation(cg / cg.sum(), cr / cr.sum()))


def separation_power_floor(n_generated: int, n_reference: int, n_bins: int) -> float:
    """Expected separation power of two independent samples of the *same* distribution.

    To second order in the fluctuations, with k populated bins,
    E[½ Σ (p̂−q̂)²/(p̂+q̂)] ≈ ¼ (1/N_gen + 1/N_ref)(k − 1). A measured value near this floor
    means the samples are indistinguishable at this sample size; a tolerance below it cannot
    be met.

    Args:
        n_generated: showers in the generated sample.
        n_reference: showers in the reference sample.
        n_bins: populated bins k.

    Returns:
        The expected value (dimensionless).
    """
    if n_generated < 1 or n_reference < 1:
        return math.inf
    return 0.25 * (1.0 / n_generated + 1.0 / n_reference) * max(n_bins - 1, 0)


def wasserstein(generated: ArrayLike, reference: ArrayLike) -> float:
    """1-D Wasserstein (earth mover's) distance of the unbinned samples, in their unit.

    Uses ``scipy.stats.wasserstein_distance``; JetNet and the CaloChallenge follow-up papers use
    it for per-feature comparisons.
    """
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(_as_1d(generated, "generated"), _as_1d(reference, "reference")))


def mean_ratio(generated: ArrayLike, reference: ArrayLike) -> tuple[float, float]:
    """Ratio of the sample means and its uncertainty (σ/√N of each mean, propagated).

    Returns:
        (mean_gen / mean_ref, uncertainty); NaN if the reference mean is 0.
    """
    g, r = _as_1d(generated, "generated"), _as_1d(reference, "reference")
    mg, mr = float(g.mean()), float(r.mean())
    if mr == 0:
        return math.nan, math.nan
    sg = float(g.std(ddof=1)) / math.sqrt(g.size) if g.size > 1 else 0.0
    sr = float(r.std(ddof=1)) / math.sqrt(r.size) if r.size > 1 else 0.0
    ratio = mg / mr
    err = abs(ratio) * math.sqrt((sg / mg) ** 2 + (sr / mr) ** 2) if mg != 0 else sg / abs(mr)
    return ratio, err


def width_ratio(generated: ArrayLike, reference: ArrayLike) -> tuple[float, float]:
    """Ratio of the sample standard deviations and its uncertainty.

    Uses σ(σ̂) ≈ σ̂ / √(2(N−1)) for each sample (exact for Gaussian data), propagated.

    Returns:
        (σ_gen / σ_ref, uncertainty); NaN if the reference width is 0.
    """
    g, r = _as_1d(generated, "generated"), _as_1d(reference, "reference")
    if g.size < 2 or r.size < 2:
        return math.nan, math.nan
    sg, sr = float(g.std(ddof=1)), float(r.std(ddof=1))
    if sr == 0:
        return math.nan, math.nan
    ratio = sg / sr
    err = ratio * math.sqrt(1.0 / (2 * (g.size - 1)) + 1.0 / (2 * (r.size - 1)))
    return ratio, err


def compare_distributions(
    generated: ArrayLike,
    reference: ArrayLike,
    bins: ArrayLike | int = 50,
    chi2_bins: ArrayLike | int | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    clip: bool = False,
) -> dict[str, Any]:
    """Every comparison of one observable, as a JSON-ready dict.

    Args:
        generated: shape (N_gen,).
        reference: shape (N_ref,).
        bins: binning of the separation power (edges or a count over the reference range [CC]).
        chi2_bins: binning of χ²/ndf; the FastCaloGAN ±3 RMS, 30-bin rule [FCG] when None.
        n_bootstrap: replicas for the separation-power uncertainty.
        seed: bootstrap seed.
        clip: count out-of-range values in the edge bins of the separation-power histograms
            (χ² keeps the FastCaloGAN window without clipping).

    Returns:
        dict with ``separation_power``, ``separation_power_unc``, ``separation_power_floor``,
        ``chi2``, ``ndf``, ``chi2_ndf``, ``wasserstein``, ``mean_ratio``, ``mean_ratio_unc``,
        ``width_ratio``, ``width_ratio_unc``, ``n_generated``, ``n_reference``, the ``edges``
        used for the separation power and the normalised histograms ``hist_generated`` and
        ``hist_reference`` (lists, each summing to 1 or all 0) for plotting. Non-finite numbers are kept as float NaN/inf;
        the JSON writer of the report turns them into null.
    """
    g, r = _as_1d(generated, "generated"), _as_1d(reference, "reference")
    edges = _edges(bins, r)
    sep, sep_unc = separation_power(g, r, edges, n_bootstrap=n_bootstrap, seed=seed, clip=clip)
    cg, cr, _ = histogram_pair(g, r, edges, clip=clip)
    k = int(np.sum((cg + cr) > 0))
    cbins = fastcalogan_binning(r) if chi2_bins is None else chi2_bins
    chi2, ndf = chi2_ndf(g, r, cbins)
    mr, mr_unc = mean_ratio(g, r)
    wr, wr_unc = width_ratio(g, r)
    return {
        "separation_power": sep,
        "separation_power_unc": sep_unc,
        "separation_power_floor": separation_power_floor(int(cg.sum()), int(cr.sum()), k),
        "chi2": chi2,
        "ndf": ndf,
        "chi2_ndf": chi2 / ndf if ndf > 0 else math.inf,
        "wasserstein": wasserstein(g, r),
        "mean_ratio": mr,
        "mean_ratio_unc": mr_unc,
        "width_ratio": wr,
        "width_ratio_unc": wr_unc,
        "n_generated": int(g.size),
        "n_reference": int(r.size),
        "edges": edges.tolist(),
        "hist_generated": (cg / cg.sum() if cg.sum() > 0 else cg).tolist(),
        "hist_reference": (cr / cr.sum() if cr.sum() > 0 else cr).tolist(),
    }
