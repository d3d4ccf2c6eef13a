"""EnergyFeatures: per-event energy observables, standardised per incident energy, for a critic.

A WGAN critic that sees only the voxels measures the Wasserstein distance in voxel space, where
a shower's total energy is one direction among hundreds: a generator whose E_tot/E_inc spread is
five times too wide costs it almost nothing. The energy response and resolution the physics
benchmark asks for live in a few summary numbers, so the critic is given them explicitly:

    r   = E_tot / E_inc,        u   = (r   − m(c)) / s(c)
    r_k = E_layer k / E_inc,    u_k = (r_k − m_k(c)) / s_k(c)

with ``m``, ``s`` the mean and standard deviation of the training showers at the condition
``c`` (the scaled incident energy), linear in ``c`` between fitted knots (the distinct training
energies, or equal-count bins of a continuous spectrum). ``u`` is O(1) at every energy, so a
1 % resolution mismatch at 65 GeV moves it as much as at 256 MeV. The fitted knots are buffers:
they travel in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastsim.errors import FastsimError
from fastsim.fitted import FittedModule

#: distinct condition values up to which every value is its own knot
MAX_DISCRETE_KNOTS = 64
#: knots of a continuous spectrum (equal-count groups of fine bins)
CONTINUOUS_KNOTS = 32
#: fine bins over the condition range used to accumulate the statistics in one pass
FINE_BINS = 1024


def fine_bins(c: np.ndarray) -> np.ndarray:
    """The fine bin (0 … FINE_BINS − 1) of each condition value ``c`` in [0, 1]."""
    return np.clip(
        (np.asarray(c, dtype=np.float64).reshape(-1) * FINE_BINS).astype(np.int64), 0, FINE_BINS - 1
    )


def condition_groups(counts: np.ndarray, continuous_groups: int) -> list[list[int]]:
    """Groups of fine bins with training showers (``counts`` per fine bin): each used bin its own
    group when there are at most :data:`MAX_DISCRETE_KNOTS` (discrete energies), otherwise
    ``continuous_groups`` groups of about equal counts (a continuous spectrum)."""
    used = np.flatnonzero(counts)
    if used.size <= MAX_DISCRETE_KNOTS:
        return [[int(i)] for i in used]
    cum = np.cumsum(counts[used])
    edges = np.searchsorted(cum, cum[-1] * np.arange(1, continuous_groups) / continuous_groups)
    return [g.tolist() for g in np.split(used, np.unique(edges + 1)) if g.size]


def interp_knots(c: Tensor, knots: Tensor, values: Tensor) -> Tensor:
    """Piecewise-linear interpolation of ``values`` (K, F) given at ``knots`` (K,) (increasing) at
    ``c`` (n,), constant beyond the end knots. Returns (n, F).

    Written as ``values[0] + Σ_i slope_i · (clamp(c, k_i, k_i+1) − k_i)`` (no searchsorted), so the
    ONNX exporters carry it.
    """
    if knots.shape[0] == 1:
        return values.expand(c.shape[0], -1)
    lo, hi = knots[:-1], knots[1:]
    slopes = (values[1:] - values[:-1]) / (hi - lo).unsqueeze(1)  # (K-1, F)
    seg = torch.minimum(torch.maximum(c.unsqueeze(1), lo), hi) - lo  # (n, K-1)
    return values[0] + seg @ slopes


class EnergyFeatures(FittedModule):
    """``(fractions (n, V), c (n,)) -> (n, F)`` standardised energy features.

    Args:
        layer_slices: voxel ranges ``(start, stop)`` of the layers; empty: total energy only.
        min_std: floor of the fitted standard deviations (a layer that is always empty).

    Features: ``F = 1 + len(layer_slices)`` (total, then the layers in order). Fit with
    :meth:`fit_stream` on chunks of ``(fractions, c)``; ``fractions`` are voxel energies over the
    incident energy (model space of the ``DivideByIncident`` transform).
    """

    _data_shaped_buffers = ("knots", "mean", "std")

    def __init__(self, layer_slices: Sequence[Sequence[int]] = (), min_std: float = 1e-6) -> None:
        super().__init__()
        self.layer_slices = [(int(a), int(b)) for a, b in layer_slices]
        self.n_features = 1 + len(self.layer_slices)
        self.min_std = float(min_std)
        self.register_buffer("knots", torch.zeros(1, dtype=torch.float32))
        self.register_buffer("mean", torch.zeros(1, self.n_features, dtype=torch.float32))
        self.register_buffer("std", torch.ones(1, self.n_features, dtype=torch.float32))
        self._fitted = False

    def observables(self, fractions: Tensor) -> Tensor:
        """Raw ``r`` and ``r_k``: (n, V) fractions -> (n, F)."""
        cols = [fractions.sum(dim=1)]
        cols += [fractions[:, a:b].sum(dim=1) for a, b in self.layer_slices]
        return torch.stack(cols, dim=1)

    def forward(self, fractions: Tensor, c: Tensor) -> Tensor:
        """Standardised features (n, F) at conditions ``c`` (n,) or (n, 1)."""
        self._require_fitted()
        c = c.reshape(-1).to(self.knots.dtype)
        obs = self.observables(fractions)
        m = interp_knots(c, self.knots, self.mean)
        s = interp_knots(c, self.knots, self.std)
        return (obs - m.to(obs.dtype)) / s.to(obs.dtype)

    def destandardise(self, u: Tensor, c: Tensor) -> Tensor:
        """Inverse of :meth:`forward` on the features: ``m(c) + s(c)·u``, (n, F) -> (n, F)."""
        self._require_fitted()
        c = c.reshape(-1).to(self.knots.dtype)
        m = interp_knots(c, self.knots, self.mean).to(u.dtype)
        return m + interp_knots(c, self.knots, self.std).to(u.dtype) * u

    # ------------------------------------------------------------------ fitting
    def fit_stream(self, chunks: Iterable[tuple[Any, Any]]) -> EnergyFeatures:
        """One pass over ``(fractions (n, V), c (n,))`` chunks; ``c`` in [0, 1] (EnergyCondition)."""
        n = np.zeros(FINE_BINS)
        sc = np.zeros(FINE_BINS)
        s1 = np.zeros((FINE_BINS, self.n_features))
        s2 = np.zeros((FINE_BINS, self.n_features))
        for frac, c in chunks:
            with torch.no_grad():
                obs = self.observables(torch.as_tensor(frac)).double().cpu().numpy()
            cc = np.asarray(c, dtype=np.float64).reshape(-1)
            if not (np.all(np.isfinite(obs)) and np.all(np.isfinite(cc))):
                raise FastsimError("EnergyFeatures.fit: NaN/inf in the training showers or conditions")
            b = fine_bins(cc)
            n += np.bincount(b, minlength=FINE_BINS)
            sc += np.bincount(b, weights=cc, minlength=FINE_BINS)
            for j in range(self.n_features):
                s1[:, j] += np.bincount(b, weights=obs[:, j], minlength=FINE_BINS)
                s2[:, j] += np.bincount(b, weights=obs[:, j] ** 2, minlength=FINE_BINS)
        if not n.any():
            raise FastsimError("EnergyFeatures.fit: no training showers seen")
        groups = condition_groups(n, CONTINUOUS_KNOTS)
        cnt = np.array([n[g].sum() for g in groups])
        knots = np.array([sc[g].sum() for g in groups]) / cnt
        mean = np.stack([s1[g].sum(0) for g in groups]) / cnt[:, None]
        var = np.stack([s2[g].sum(0) for g in groups]) / cnt[:, None] - mean**2
        std = np.maximum(np.sqrt(np.maximum(var, 0.0)), self.min_std)
        self.knots = torch.tensor(knots, dtype=torch.float32, device=self.knots.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.knots.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.knots.device)
        self._fitted = True
        return self

    def config(self) -> dict[str, Any]:
        return {"layer_slices": self.layer_slices, "min_std": self.min_std}


class ShowerFeatures(EnergyFeatures):
    """:class:`EnergyFeatures` plus the shape information a high-level classifier sees, per layer.

    Observables, standardised per incident energy like the energies: E_tot/E_inc, each layer's
    E_layer/E_inc, then per layer the energy-weighted first and second moments of the voxel
    centres in x (η-like) and y (φ-like), ``Σ_v x_v·X_v`` and ``Σ_v x_v·X_v²`` (fractions × mm,
    × mm²), and, with ``sparsity_eps > 0``, a differentiable sparsity ``mean_v x_v / (x_v + ε)``
    (→ the fraction of hit voxels for ``x_v >> ε``; ε in fractions of the incident energy).

    With the layer energy the moments give the classifier's centres ``m1/E_layer`` and widths
    ``sqrt(m2/E_layer − centre²)``; they are given as moments because those are linear in the
    voxels: the centre of a nearly empty layer has a slope ~1/E_layer, which (measured,
    docs/results.md) dominates the generator's gradient and collapses its E_tot/E_inc spread.
    The soft sparsity has slope 1/ε at an empty voxel and the same problem, hence off by default.

    Args:
        layer_slices: voxel ranges ``(start, stop)`` of the layers.
        voxel_x, voxel_y: voxel centres (V,) in mm (``Geometry.voxel_xy_center``).
        sparsity_eps: ε of the soft hit count; 0: no sparsity features.
        min_std: floor of the fitted standard deviations (e.g. y of a layer without α binning).

    Features: ``F = 1 + 5·L``, or ``1 + 6·L`` with the sparsity, ordered total, layer energies,
    m1_x, m1_y, m2_x, m2_y, sparsity (each block over the layers).
    """

    def __init__(
        self,
        layer_slices: Sequence[Sequence[int]],
        voxel_x: Any,
        voxel_y: Any,
        sparsity_eps: float = 0.0,
        min_std: float = 1e-6,
    ) -> None:
        super().__init__(layer_slices, min_std)
        self.n_features = (6 if sparsity_eps > 0 else 5) * len(self.layer_slices) + 1
        self.sparsity_eps = float(sparsity_eps)
        self.register_buffer("voxel_x", torch.as_tensor(np.asarray(voxel_x), dtype=torch.float32))
        self.register_buffer("voxel_y", torch.as_tensor(np.asarray(voxel_y), dtype=torch.float32))
        self.mean = torch.zeros(1, self.n_features)
        self.std = torch.ones(1, self.n_features)

    def observables(self, fractions: Tensor) -> Tensor:
        """Raw observables: (n, V) fractions -> (n, F) (order in the class docstring)."""
        x, y = self.voxel_x.to(fractions.dtype), self.voxel_y.to(fractions.dtype)
        energies = [fractions.sum(dim=1)] + [fractions[:, a:b].sum(dim=1) for a, b in self.layer_slices]
        cols = [torch.stack(energies, dim=1)]
        for coord in (x, y, x**2, y**2):
            weighted = fractions * coord
            cols.append(torch.stack([weighted[:, a:b].sum(dim=1) for a, b in self.layer_slices], dim=1))
        if self.sparsity_eps > 0:
            hit = fractions / (fractions + self.sparsity_eps)
            cols.append(torch.stack([hit[:, a:b].mean(dim=1) for a, b in self.layer_slices], dim=1))
        return torch.cat(cols, dim=1)

    def config(self) -> dict[str, Any]:
        return {"layer_slices": self.layer_slices, "sparsity_eps": self.sparsity_eps, "min_std": self.min_std}
