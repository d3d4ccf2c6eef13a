"""Energy response and resolution per incident energy.

For each incident energy (a discrete value of the sample, or a bin of a continuous spectrum)
the distribution of a ratio such as E_tot/E_inc is summarised by

- the *response* μ = mean of the ratio, with uncertainty σ/√N;
- the *resolution* σ/μ (σ the sample standard deviation, ddof=1), with its uncertainty from the
  delta method using the sample's third and fourth central moments (valid for any shape, not
  only Gaussian), or, when ``n_bootstrap > 0``, the standard deviation over bootstrap resamples
  drawn with ``numpy.random.default_rng(seed)``.

The delta method: with m = mean, s = std, m2, m3, m4 the central moments,
Var(m) = m2/N, Var(s) ≈ (m4 − m2²)/(4 m2 N), Cov(m, s) ≈ m3/(2 s N), and for r = s/m
Var(r) ≈ r² [Var(s)/s² + Var(m)/m² − 2 Cov(m, s)/(s m)]. For a Gaussian this reduces to the
familiar σ(r) ≈ r √(1/(2N) + r²/N).

Grouping (:func:`energy_groups`), the one rule of the package (the benchmark and the χ² model
selection of :mod:`fastsim.training.callbacks` both use it): at most ``max_discrete``
(:data:`MAX_DISCRETE`, 30) distinct incident energies, after merging values equal to a relative
``rtol`` (float32 storage), are treated as discrete points (CaloChallenge dataset 1: 15 energies,
256 MeV … 4.2 TeV); a continuous spectrum (datasets 2/3: log-uniform 1 GeV … 1 TeV) is cut into
:data:`N_BINS` (10) bins of equal population, whose edges are the spectrum's quantiles (for a
log-uniform spectrum, nearly log-spaced). The groups are always built from the *reference*
sample (the validation data, in training) and applied to both samples.

FastCaloGAN (Comput. Softw. Big Sci. 6 (2022) 7) and the CaloChallenge (arXiv:2410.21611) both
compare these quantities per incident energy.

Samples that carry the incidence angle are also compared per energy × angle
(:func:`angle_groups`, :func:`energy_angle_response`): the angles are discrete values (at most
:data:`MAX_DISCRETE` distinct ones, equal within :data:`ANGLE_ATOL_DEG`), as ``fastsim simulate
--angle`` and ``fastsim generate --angles`` make them; a continuous angle spectrum is cut into
:data:`N_ANGLE_BINS` equal-population bins of the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ANGLE_ATOL_DEG",
    "MAX_DISCRETE",
    "N_ANGLE_BINS",
    "N_BINS",
    "AngleGroups",
    "EnergyGroups",
    "angle_groups",
    "compare_response",
    "energy_angle_response",
    "energy_groups",
    "energy_response",
    "layer_response",
    "summarize",
]


#: at most this many distinct incident energies make a discrete spectrum
MAX_DISCRETE = 30
#: equal-population bins of a continuous spectrum
N_BINS = 10
#: incidence angles closer than this (degrees) are one value
ANGLE_ATOL_DEG = 1e-6
#: equal-population bins of a continuous angle spectrum
N_ANGLE_BINS = 5


@dataclass(frozen=True)
class AngleGroups:
    """A partition of incidence angles (degrees): discrete ``values`` (K,), or bins with ``edges`` (K + 1,)."""

    kind: str
    values: np.ndarray
    edges: np.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return int(len(self.values))

    def keys(self) -> list[str]:
        """``"20"`` (discrete) or ``"10-20"`` (degrees)."""
        if self.edges is None:
            return [f"{float(a):g}" for a in self.values]
        return [f"{float(lo):g}-{float(hi):g}" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)]

    def labels(self) -> list[str]:
        return [f"{k}°" for k in self.keys()]

    def assign(self, angles: ArrayLike) -> np.ndarray:
        """Group index (N,) int64 of each angle (degrees); -1 outside every group."""
        a = np.asarray(angles, dtype=np.float64).ravel()
        if self.edges is None:
            d = np.abs(a[:, None] - self.values[None, :]) if len(a) else np.zeros((0, self.n_groups))
            pick = d.argmin(axis=1) if self.n_groups else np.zeros(len(a), dtype=np.int64)
            ok = d[np.arange(len(a)), pick] <= ANGLE_ATOL_DEG if self.n_groups else np.zeros(len(a), bool)
            return np.where(ok, pick, -1).astype(np.int64)
        idx = np.searchsorted(self.edges, a, side="right") - 1
        idx = np.where(a == self.edges[-1], self.n_groups - 1, idx)  # the last bin includes its top edge
        return np.where((idx >= 0) & (idx < self.n_groups), idx, -1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "values_deg": [float(a) for a in self.values],
            "edges_deg": None if self.edges is None else [float(x) for x in self.edges],
        }


def angle_groups(angles: ArrayLike, max_discrete: int = MAX_DISCRETE, n_bins: int = N_ANGLE_BINS) -> AngleGroups:
    """Groups of the reference's incidence angles (degrees, (N,)): its distinct values when there
    are at most ``max_discrete``, else ``n_bins`` bins of equal population (edges: quantiles)."""
    a = np.asarray(angles, dtype=np.float64).ravel()
    distinct = np.unique(a)
    if len(distinct):
        # merge values within ANGLE_ATOL_DEG (float32 round trips)
        keep = np.concatenate([[True], np.diff(distinct) > ANGLE_ATOL_DEG])
        distinct = distinct[keep]
    if len(distinct) <= max_discrete:
        return AngleGroups("discrete", distinct)
    edges = np.unique(np.quantile(a, np.linspace(0.0, 1.0, n_bins + 1)))
    return AngleGroups("binned", 0.5 * (edges[:-1] + edges[1:]), edges)


def energy_angle_response(
    e_inc: ArrayLike,
    e_tot: ArrayLike,
    angles: ArrayLike,
    groups: EnergyGroups,
    angles_groups: AngleGroups,
) -> list[dict[str, Any]]:
    """Response E_tot/E_inc and resolution per incident energy × incidence angle.

    Args:
        e_inc, e_tot: incident and total deposited energies, (N,) MeV.
        angles: incidence angles, (N,) degrees.
        groups: energy groups (:func:`energy_groups` on the reference).
        angles_groups: angle groups (:func:`angle_groups` on the reference).

    Returns:
        One :func:`summarize` dict per (energy group, angle group), energy-major, with ``energy``
        (MeV), ``angle`` (degrees), ``energy_index`` and ``angle_index`` added; cells without a
        shower have ``n = 0`` and NaN statistics.
    """
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    t = np.asarray(e_tot, dtype=np.float64).ravel()
    a = np.asarray(angles, dtype=np.float64).ravel()
    if not (e.shape == t.shape == a.shape):
        raise ValueError(f"e_inc {e.shape}, e_tot {t.shape} and angles {a.shape} differ in shape")
    ie, ia = groups.assign(e), angles_groups.assign(a)
    ratio = t / e
    out = []
    for g in range(groups.n_groups):
        for k in range(angles_groups.n_groups):
            row: dict[str, Any] = summarize(ratio[(ie == g) & (ia == k)])
            row.update(energy=float(groups.energies[g]), angle=float(angles_groups.values[k]),
                       energy_index=g, angle_index=k)  # fmt: skip
            out.append(row)
    return out


@dataclass(frozen=True)
class EnergyGroups:
    """A partition of incident energies into groups.

    Attributes:
        kind: ``"discrete"`` (one group per distinct energy) or ``"binned"`` (equal-population bins).
        energies: representative energy of each group in MeV, shape (G,): the discrete value, or
            the geometric centre of the bin.
        edges: bin edges in MeV, shape (G + 1,), for ``"binned"``; None for ``"discrete"``.
        rtol: relative tolerance for matching a discrete energy (float32 storage rounds ~1e-7).
    """

    kind: str
    energies: np.ndarray
    edges: np.ndarray | None = None
    rtol: float = 1e-5

    @property
    def n_groups(self) -> int:
        return int(len(self.energies))

    def labels(self) -> list[str]:
        """Short human-readable labels, e.g. ``"1.02 GeV"`` or ``"1–3.16 GeV"``."""

        def fmt(e: float) -> str:
            return f"{e / 1e3:.4g} GeV" if e >= 1e3 else f"{e:.4g} MeV"

        if self.kind == "discrete":
            return [fmt(float(e)) for e in self.energies]
        assert self.edges is not None
        return [f"{fmt(float(lo))}–{fmt(float(hi))}" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)]

    def keys(self) -> list[str]:
        """Stable JSON keys: the energy in MeV as ``"%g"`` (discrete) or ``"lo-hi"`` (binned)."""
        if self.kind == "discrete":
            return [f"{float(e):g}" for e in self.energies]
        assert self.edges is not None
        return [f"{float(lo):g}-{float(hi):g}" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)]

    def assign(self, e_inc: ArrayLike) -> np.ndarray:
        """Group index of each incident energy, shape (N,) int64; -1 if it belongs to no group.

        Discrete: the energy must equal a group energy within ``rtol``. Binned: bins are
        [lo, hi) except the last, which includes its upper edge.
        """
        e = np.asarray(e_inc, dtype=np.float64).ravel()
        if self.kind == "discrete":
            order = np.argsort(self.energies)
            sorted_e = self.energies[order]
            pos = np.clip(np.searchsorted(sorted_e, e), 0, len(sorted_e) - 1)
            # nearest of the two neighbours
            left = np.clip(pos - 1, 0, len(sorted_e) - 1)
            pick = np.where(np.abs(sorted_e[left] - e) < np.abs(sorted_e[pos] - e), left, pos)
            ok = np.abs(sorted_e[pick] - e) <= self.rtol * np.abs(sorted_e[pick])
            return np.where(ok, order[pick], -1).astype(np.int64)
        assert self.edges is not None
        idx = np.searchsorted(self.edges, e, side="right") - 1
        idx = np.where(e == self.edges[-1], len(self.edges) - 2, idx)
        return np.where((idx >= 0) & (idx < self.n_groups), idx, -1).astype(np.int64)

    def metric_names(self) -> list[str]:
        """Names for logged metrics: ``"1024MeV"`` (discrete) or ``"1000-3162MeV"`` (binned), rounded to MeV."""
        if self.kind == "discrete":
            return [f"{float(e):.0f}MeV" for e in self.energies]
        assert self.edges is not None
        return [f"{float(lo):.0f}-{float(hi):.0f}MeV" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)]

    def members(self, e_inc: ArrayLike) -> list[tuple[str, np.ndarray]]:
        """``(metric name, indices into e_inc)`` of every group that holds at least one energy,
        in increasing energy."""
        idx = self.assign(e_inc)
        names = self.metric_names()
        return [(names[g], np.flatnonzero(idx == g)) for g in np.argsort(self.energies) if np.any(idx == g)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "energies_mev": self.energies.tolist(),
            "edges_mev": None if self.edges is None else self.edges.tolist(),
            "labels": self.labels(),
            "keys": self.keys(),
        }


def energy_groups(
    e_inc: ArrayLike, max_discrete: int = MAX_DISCRETE, n_bins: int = N_BINS, rtol: float = 1e-5
) -> EnergyGroups:
    """Detect discrete incident energies or cut a continuous spectrum into equal-population bins.

    Args:
        e_inc: incident energies of the reference sample, shape (N,), MeV, > 0.
        max_discrete: at most this many distinct values (after merging values equal within
            ``rtol``) means a discrete sample.
        n_bins: number of bins of a continuous sample, each holding about N / n_bins energies
            (fewer bins when ties make quantiles coincide).
        rtol: relative tolerance when merging/matching discrete energies.

    Returns:
        The groups (see :class:`EnergyGroups`).
    """
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("no incident energies")
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise ValueError("incident energies must be finite and > 0 MeV")
    uniq = np.unique(e)
    # merge values that only differ by storage rounding
    keep = np.concatenate([[True], np.diff(uniq) > rtol * uniq[1:]])
    distinct = uniq[keep]
    if len(distinct) <= max_discrete:
        return EnergyGroups("discrete", distinct, None, rtol)
    edges = np.unique(np.quantile(e, np.linspace(0.0, 1.0, n_bins + 1)))
    edges[0], edges[-1] = uniq[0], uniq[-1]  # exact, so the extremes land inside
    return EnergyGroups("binned", np.sqrt(edges[:-1] * edges[1:]), edges, rtol)


def _delta_resolution(x: np.ndarray) -> tuple[float, float]:
    """(σ/μ, its delta-method uncertainty) of a 1-D sample; see the module docstring."""
    n = x.size
    m = float(x.mean())
    d = x - m
    m2 = float(np.mean(d**2))
    s = float(x.std(ddof=1))
    if m == 0:
        return math.nan, math.nan
    if s == 0:
        return 0.0, 0.0
    m3 = float(np.mean(d**3))
    m4 = float(np.mean(d**4))
    r = s / m
    var_s = max(m4 - m2**2, 0.0) / (4 * m2 * n)
    var_m = m2 / n
    cov = m3 / (2 * s * n)
    var_r = r**2 * (var_s / s**2 + var_m / m**2 - 2 * cov / (s * m))
    return r, math.sqrt(max(var_r, 0.0))


def summarize(values: ArrayLike, n_bootstrap: int = 0, seed: int = 0) -> dict[str, float]:
    """Mean, width and resolution of one sample, with uncertainties.

    Args:
        values: shape (N,), e.g. E_tot/E_inc of the showers at one incident energy (dimensionless).
        n_bootstrap: 0 for the analytic/delta-method uncertainties, else the number of
            bootstrap resamples for the resolution's uncertainty (the mean's stays σ/√N).
        seed: bootstrap seed.

    Returns:
        dict with ``n``, ``mean``, ``mean_unc`` (σ/√N), ``std`` (ddof=1), ``resolution`` (σ/mean),
        ``resolution_unc``, ``median``. With fewer than 2 values the spreads are NaN.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = int(x.size)
    if n == 0:
        nan = math.nan
        return {"n": 0, "mean": nan, "mean_unc": nan, "std": nan, "resolution": nan, "resolution_unc": nan, "median": nan}
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "mean_unc": math.nan, "std": math.nan, "resolution": math.nan,
                "resolution_unc": math.nan, "median": float(np.median(x))}
    std = float(x.std(ddof=1))
    res, res_unc = _delta_resolution(x)
    if n_bootstrap > 1:
        rng = np.random.default_rng(seed)
        boots = np.empty(n_bootstrap)
        for i in range(n_bootstrap):
            xb = x[rng.integers(0, n, n)]
            mb = xb.mean()
            boots[i] = xb.std(ddof=1) / mb if mb != 0 else np.nan
        res_unc = float(np.nanstd(boots, ddof=1))
    return {
        "n": n,
        "mean": mean,
        "mean_unc": std / math.sqrt(n),
        "std": std,
        "resolution": res,
        "resolution_unc": res_unc,
        "median": float(np.median(x)),
    }


def _ratio(a: float, ua: float, b: float, ub: float) -> tuple[float, float]:
    """a/b with independent uncertainties propagated (NaN if b is 0 or NaN)."""
    if not b or not math.isfinite(b) or not math.isfinite(a):
        return math.nan, math.nan
    r = a / b
    if a == 0:
        return r, abs(ua / b)
    return r, abs(r) * math.sqrt((ua / a) ** 2 + (ub / b) ** 2)


def energy_response(
    e_inc: ArrayLike,
    e_tot: ArrayLike,
    groups: EnergyGroups,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Response E_tot/E_inc and resolution per incident-energy group.

    Args:
        e_inc: incident energies, shape (N,), MeV.
        e_tot: total deposited energies, shape (N,), MeV.
        groups: from :func:`energy_groups` on the reference.
        n_bootstrap, seed: see :func:`summarize`.

    Returns:
        One :func:`summarize` dict per group (same order as ``groups.energies``), with the group
        ``energy`` (MeV) added. Showers outside every group are ignored.
    """
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    t = np.asarray(e_tot, dtype=np.float64).ravel()
    if e.shape != t.shape:
        raise ValueError(f"e_inc {e.shape} and e_tot {t.shape} differ in shape")
    idx = groups.assign(e)
    ratio = t / e
    out = []
    for g in range(groups.n_groups):
        row = summarize(ratio[idx == g], n_bootstrap=n_bootstrap, seed=seed + g)
        row["energy"] = float(groups.energies[g])
        out.append(row)
    return out


def layer_response(
    e_inc: ArrayLike, e_layer: ArrayLike, groups: EnergyGroups
) -> dict[str, np.ndarray]:
    """Layer energy fractions per group: E_layer/E_inc and E_layer/E_tot, mean and resolution.

    Args:
        e_inc: shape (N,), MeV.
        e_layer: shape (N, n_layers), MeV.
        groups: incident-energy groups.

    Returns:
        dict of float64 arrays of shape (G, n_layers), for ``q`` in ``frac_inc`` (E_layer/E_inc)
        and ``frac_tot`` (E_layer/E_tot, over showers with E_tot > 0): ``q`` and ``q_unc`` (mean
        and σ/√N), ``q_resolution`` and ``q_resolution_unc`` (σ/μ and its delta-method
        uncertainty, see :func:`summarize`); plus ``n`` (G,) showers per group. Groups with no
        showers hold NaN.
    """
    e = np.asarray(e_inc, dtype=np.float64).ravel()
    el = np.asarray(e_layer, dtype=np.float64)
    if el.ndim != 2 or el.shape[0] != e.shape[0]:
        raise ValueError(f"e_layer must have shape ({e.shape[0]}, n_layers), got {el.shape}")
    idx = groups.assign(e)
    tot = el.sum(axis=1)
    g_n, n_l = groups.n_groups, el.shape[1]
    keys = [f"{q}{suffix}" for q in ("frac_inc", "frac_tot") for suffix in ("", "_unc", "_resolution", "_resolution_unc")]
    out = {k: np.full((g_n, n_l), np.nan) for k in keys}
    out["n"] = np.zeros(g_n, dtype=np.int64)
    for g in range(g_n):
        sel = idx == g
        out["n"][g] = int(sel.sum())
        for key, num, den in (("frac_inc", el[sel], e[sel]), ("frac_tot", el[sel & (tot > 0)], tot[sel & (tot > 0)])):
            if num.shape[0] == 0:
                continue
            f = num / den[:, None]
            for li in range(n_l):
                summ = summarize(f[:, li])
                out[key][g, li] = summ["mean"]
                out[f"{key}_unc"][g, li] = summ["mean_unc"]
                out[f"{key}_resolution"][g, li] = summ["resolution"]
                out[f"{key}_resolution_unc"][g, li] = summ["resolution_unc"]
    return out


def compare_response(gen: dict[str, float], ref: dict[str, float]) -> dict[str, float]:
    """Generated/reference ratios of response and resolution, with propagated uncertainties.

    Args:
        gen, ref: :func:`summarize` dicts of the two samples at one energy.

    Returns:
        dict with ``response_ratio``, ``response_ratio_unc``, ``resolution_ratio``,
        ``resolution_ratio_unc`` (NaN where undefined).
    """
    rr, rru = _ratio(gen["mean"], gen["mean_unc"], ref["mean"], ref["mean_unc"])
    sr, sru = _ratio(gen["resolution"], gen["resolution_unc"], ref["resolution"], ref["resolution_unc"])
    return {"response_ratio": rr, "response_ratio_unc": rru, "resolution_ratio": sr, "resolution_ratio_unc": sru}

