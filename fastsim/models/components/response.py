"""ResponseReference: the training showers' E_tot/E_inc distribution per incident energy, and a
generator's distance to it.

The critic sees each shower's E_tot/E_inc standardised per energy (critic features), but one
event at a time: a critic cannot see a distribution's width in one event, and a generator whose
E_tot/E_inc is 10–20 % too narrow at some energies goes almost unpunished (measured: resolution
0.79–0.96 of Geant4's for the committed WGAN-GP, docs/results.md). This module gives the generator
a direct term on the distribution the energy-response benchmark measures, in the spirit of the
auxiliary summed-energy losses of calorimeter GANs (3DGAN): the energy distance (Székely; in one
dimension twice the Cramér distance, the CRPS of forecasting)

    D_g = (2 E|X − Y| − E|X − X'| − E|Y − Y'|) / s_g

between the E_tot/E_inc ``X`` of ``m`` showers generated at the conditions of ``m`` training showers
of energy group ``g`` and the training showers' ``Y`` (a grid of :data:`QUANTILES` quantiles of
them), in units of their standard deviation ``s_g``; ``D`` is the mean over the drawn groups.
``E|X − X'|`` is taken over distinct pairs, so ``D`` is an unbiased estimate whose expectation is
zero only when the whole distribution (mean, width, tails) matches, and positive otherwise. (A
squared Wasserstein distance of sorted samples is not: its expectation is smallest for a
generator about 20 % too narrow at ``m`` = 32, the very failure this term is for.)

Groups are the distinct training energies (up to 64) or equal-count bins of a continuous spectrum,
as for the critic features (:func:`~fastsim.models.components.features.condition_groups`). The
conditions drawn for a group are whole training rows (incidence angle included), so an
angle-conditioned generator is compared with the same mixture of angles. What the module keeps
(a bounded random sample of each group's rows) is rebuilt from the training tensors at every fit:
it is not part of a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from fastsim.errors import FastsimError
from fastsim.models.components.features import FINE_BINS, condition_groups, fine_bins

#: training rows kept per energy group (a uniform random sample of the group)
RESERVOIR = 4096
#: groups of a continuous spectrum
CONTINUOUS_GROUPS = 16
#: quantiles of the training showers' E_tot/E_inc kept per group
QUANTILES = 128


def energy_distance(x: Tensor, y: Tensor, yy: Tensor, scale: Tensor) -> Tensor:
    """Mean over groups of the energy distance between the samples ``x`` (k, m) and the reference
    quantile grids ``y`` (k, q), in units of ``scale`` (k,); ``yy`` (k,) is ``E|Y − Y'|`` of the grids.
    ``E|X − X'|`` over the ``m (m − 1)`` distinct pairs: unbiased in ``x``."""
    m = x.shape[1]
    xy = (x.unsqueeze(2) - y.unsqueeze(1)).abs().mean(dim=(1, 2))
    xx = (x.unsqueeze(2) - x.unsqueeze(1)).abs().sum(dim=(1, 2)) / (m * (m - 1))
    return ((2 * xy - xx - yy) / scale).mean()


class ResponseReference(nn.Module):
    """Per-energy reference of E_tot/E_inc from the training showers (see the module docstring).

    Args:
        per_group: ``m``, showers generated per energy group and step.
        max_groups: groups drawn per step (all of them when there are fewer).

    Fit with :meth:`fit` (two passes over ``(r (n,), cond (n, C))`` chunks); then each training step
    calls :meth:`sample_conditions` and :meth:`distance`.
    """

    def __init__(self, per_group: int = 32, max_groups: int = 16) -> None:
        super().__init__()
        if per_group < 2:
            raise FastsimError(f"ResponseReference: per_group must be >= 2, got {per_group}")
        self.per_group = int(per_group)
        self.max_groups = int(max_groups)
        # not persistent: rebuilt from the training tensors at each fit, never in a checkpoint
        self.register_buffer("cond", torch.zeros(0, 0, 1), persistent=False)  # (G, S, C)
        self.register_buffer("count", torch.zeros(0, dtype=torch.long), persistent=False)  # (G,)
        self.register_buffer("quantiles", torch.zeros(0, QUANTILES), persistent=False)  # (G, q)
        self.register_buffer("spread", torch.zeros(0), persistent=False)  # (G,) E|Y − Y'|
        self.register_buffer("scale", torch.ones(0), persistent=False)  # (G,)
        self.is_fitted = False

    @property
    def n_groups(self) -> int:
        return int(self.count.shape[0])

    def fit(
        self, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], seed: int = 0
    ) -> ResponseReference:
        """Two passes over ``chunks()`` (``(r (n,), cond (n, C))``, column 0 of ``cond`` in [0, 1]):
        the groups, then a uniform sample of at most :data:`RESERVOIR` rows per group (the rows
        with the smallest random keys, so the sample does not depend on the chunking)."""
        counts = np.zeros(FINE_BINS)
        for _, cond in chunks():
            counts += np.bincount(fine_bins(np.asarray(cond)[:, 0]), minlength=FINE_BINS)
        if not counts.any():
            raise FastsimError("ResponseReference.fit: no training showers seen")
        groups = condition_groups(counts, CONTINUOUS_GROUPS)
        group_of_bin = np.full(FINE_BINS, -1, dtype=np.int64)
        for g, bins in enumerate(groups):
            group_of_bin[bins] = g
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E5]))
        kept: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * len(groups)
        for r, cond in chunks():
            r = np.asarray(r, dtype=np.float64).reshape(-1)
            cond = np.asarray(cond, dtype=np.float32)
            if not np.all(np.isfinite(r)):
                raise FastsimError("ResponseReference.fit: NaN/inf in the training showers' E_tot/E_inc")
            keys = rng.random(r.shape[0])
            gid = group_of_bin[fine_bins(cond[:, 0])]
            for g in np.unique(gid):
                rows = gid == g
                new = (keys[rows], r[rows], cond[rows])
                old = kept[g]
                if old is not None:
                    new = tuple(np.concatenate([a, b]) for a, b in zip(old, new, strict=True))  # type: ignore[assignment]
                if new[0].shape[0] > RESERVOIR:
                    keep = np.argpartition(new[0], RESERVOIR - 1)[:RESERVOIR]
                    new = tuple(a[keep] for a in new)  # type: ignore[assignment]
                kept[g] = new
        n_cond = next(k for k in kept if k is not None)[2].shape[1]
        size = max(k[0].shape[0] for k in kept if k is not None)
        cond_t = np.zeros((len(groups), size, n_cond), dtype=np.float32)
        count = np.zeros(len(groups), dtype=np.int64)
        p = (np.arange(QUANTILES) + 0.5) / QUANTILES
        quantiles = np.zeros((len(groups), QUANTILES))
        scale = np.ones(len(groups))
        for g, k in enumerate(kept):
            assert k is not None  # every group has counts, so rows
            _, r, cond = k
            count[g] = r.shape[0]
            cond_t[g, : r.shape[0]] = cond
            quantiles[g] = np.quantile(r, p)
            # a group whose showers all carry the same E_tot/E_inc: any width is infinitely off
            scale[g] = max(float(r.std()), 1e-6 * max(float(np.abs(r).mean()), 1e-12))
        device = self.count.device
        self.cond = torch.tensor(cond_t, device=device)
        self.count = torch.tensor(count, device=device)
        self.quantiles = torch.tensor(quantiles, dtype=torch.float32, device=device)
        self.spread = torch.tensor(
            np.abs(quantiles[:, :, None] - quantiles[:, None, :]).mean(axis=(1, 2)),
            dtype=torch.float32,
            device=device,
        )
        self.scale = torch.tensor(scale, dtype=torch.float32, device=device)
        self.is_fitted = True
        return self

    def sample_conditions(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Conditions ``(k·m, C)`` of ``m`` training rows of each of ``k`` drawn groups (with
        replacement within a group), group after group, and the groups ``(k,)``."""
        if not self.is_fitted:
            raise FastsimError("ResponseReference is used before fit()")
        dev = self.count.device
        k = min(self.n_groups, self.max_groups)
        if k < self.n_groups:
            groups = torch.randperm(self.n_groups, generator=generator, device=dev)[:k]
        else:
            groups = torch.arange(self.n_groups, device=dev)
        u = torch.rand(k, self.per_group, generator=generator, device=dev)
        rows = (u * self.count[groups].unsqueeze(1)).long().clamp(max=self.cond.shape[1] - 1)
        cond = self.cond[groups.unsqueeze(1), rows]  # (k, m, C)
        return cond.reshape(k * self.per_group, -1), groups

    def distance(self, r: Tensor, groups: Tensor) -> Tensor:
        """``D`` for the generated E_tot/E_inc ``r`` (k·m,) at the conditions of :meth:`sample_conditions`."""
        r = r.reshape(groups.shape[0], self.per_group)
        return energy_distance(
            r, self.quantiles[groups].to(r), self.spread[groups].to(r), self.scale[groups].to(r)
        )
