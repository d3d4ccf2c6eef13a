"""A Lightning callback logging the benchmark's energy observables during training.

At the end of validation it generates one shower for each incident energy of a fixed reference
subsample (so the energy mix matches the reference exactly, discrete or continuous), and logs per
incident-energy group, under ``val/…``:

- ``val/response_ratio/<E>`` and ``val/resolution_ratio/<E>``: generated/reference ratio of the
  mean and of σ/μ of E_tot/E_inc (:mod:`fastsim.metrics.response`);
- ``val/sep_e_ratio/<E>``: separation power of E_tot/E_inc (CaloChallenge, arXiv:2410.21611) in
  30 bins over the reference's range (out-of-range values clipped into the edge bins);
- ``val/chi2ndf_e_ratio/<E>``: χ²/ndf in the FastCaloGAN ±3 RMS, 30-bin window;

and the aggregates ``val/sep_e_ratio_mean``, ``val/chi2ndf_e_ratio_mean`` and
``val/response_max_dev`` (max over energies of |response ratio − 1|), usable as a
``ModelCheckpoint`` monitor. ``<E>`` is the group key of
:meth:`fastsim.metrics.response.EnergyGroups.keys` (the energy in MeV, or "lo-hi").

``fastsim fit --benchmark.reference g4.h5`` adds it to a training run (``--benchmark.*`` sets
its other arguments); without a reference it does nothing. The module only needs
``pl_module.generate(e_inc: Tensor (n,) MeV) -> Tensor (n, V) MeV`` and ``pl_module.geometry``. Generation runs under a forked RNG seeded with ``seed``, so every epoch
sees the same noise (differences between epochs are the model's) and training's RNG stream is
untouched.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import numpy as np
import torch

from fastsim.errors import FastsimError, InputFileError
from fastsim.metrics.compare import chi2_ndf, fastcalogan_binning, reference_binning, separation_power
from fastsim.metrics.response import EnergyGroups, compare_response, energy_groups, summarize

__all__ = ["BenchmarkCallback"]


def _read_subsample(path: str, n_max: int, seed: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    """A seeded random subsample of at most ``n_max`` rows, streamed: (e_inc (n,), E_tot (n,), V,
    incidence angles (n,) degrees or None when the file has none)."""
    from fastsim.data.hdf5 import open_calochallenge

    with open_calochallenge(path) as cf:
        angles = cf.incident_angles()
        n = cf.n_showers
        rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, n_max), replace=False))
        e_parts, t_parts = [], []
        for start, (e, s) in zip(range(0, n, 10_000), cf.iter_chunks(10_000), strict=True):
            pick = rows[(rows >= start) & (rows < start + len(e))] - start
            e_parts.append(e[pick])
            t_parts.append(s[pick].sum(axis=1, dtype=np.float64))
        picked = None if angles is None else angles[rows]
        return np.concatenate(e_parts), np.concatenate(t_parts), cf.n_voxels, picked


class BenchmarkCallback(L.Callback):
    """Log response, resolution, separation power and χ²/ndf of E_tot/E_inc per incident energy.

    Args:
        reference: a CaloChallenge HDF5 file, or arrays ``(e_inc (N,) MeV, showers (N, V) MeV)``;
            None: the callback does nothing (``fastsim fit`` without ``--benchmark.reference``).
        max_showers: reference showers used (random, seeded); as many are generated each time.
        every_n_epochs: run at the end of every n-th validation epoch.
        batch_size: showers per ``generate`` call.
        seed: seeds the reference subsample and the generation noise.
        n_bins: bins of the separation-power histograms.
        prefix: metric-name prefix.
    """

    def __init__(
        self,
        reference: str | os.PathLike | tuple[np.ndarray, np.ndarray] | None = None,
        max_showers: int = 2000,
        every_n_epochs: int = 1,
        batch_size: int = 1000,
        seed: int = 0,
        n_bins: int = 30,
        prefix: str = "val",
    ) -> None:
        super().__init__()
        if max_showers < 10:
            raise FastsimError(f"benchmark.max_showers must be >= 10, got {max_showers}")
        if every_n_epochs < 1:
            raise FastsimError(f"benchmark.every_n_epochs must be >= 1, got {every_n_epochs}")
        if batch_size < 1:
            raise FastsimError(f"benchmark.batch_size must be >= 1, got {batch_size}")
        self.reference = reference
        self.max_showers = int(max_showers)
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.n_bins = int(n_bins)
        self.prefix = prefix
        self._e_inc: np.ndarray | None = None
        self._e_tot: np.ndarray | None = None
        self._n_voxels: int | None = None
        self._groups: EnergyGroups | None = None
        self._angles: np.ndarray | None = None  # (N,) degrees, for a model conditioned on the angle
        #: the metrics of the last run, name -> value (what was logged)
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ reference
    def _load_reference(self) -> None:
        if self._e_inc is not None:
            return
        assert self.reference is not None
        if isinstance(self.reference, tuple):
            e, s = (np.asarray(a) for a in self.reference)
            e = e.reshape(-1).astype(np.float64)
            if s.ndim != 2 or s.shape[0] != e.shape[0]:
                raise ValueError(f"reference arrays must be e_inc (N,) and showers (N, V), got {e.shape}, {s.shape}")
            rows = np.random.default_rng(self.seed).permutation(len(e))[: self.max_showers]
            rows.sort()
            e_inc, e_tot, n_vox = e[rows], s[rows].sum(axis=1, dtype=np.float64), s.shape[1]
        else:
            e_inc, e_tot, n_vox, self._angles = _read_subsample(os.fspath(self.reference), self.max_showers, self.seed)
        if not (np.all(np.isfinite(e_inc)) and np.all(e_inc > 0) and np.all(np.isfinite(e_tot))):
            raise InputFileError(str(self.reference)[:200], "reference has non-finite or non-positive energies")
        self._e_inc, self._e_tot, self._n_voxels = e_inc, e_tot, int(n_vox)
        self._groups = energy_groups(e_inc)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.reference is None:
            return
        self._load_reference()
        n_vox = pl_module.geometry.n_voxels
        if n_vox != self._n_voxels:
            where = self.reference if not isinstance(self.reference, tuple) else "reference arrays"
            raise InputFileError(
                os.fspath(where), f"showers have {self._n_voxels} voxels but the model's geometry has {n_vox}"
            )
        if getattr(pl_module, "n_conditions", 1) > 1 and (self._angles is None or pl_module.angle_range is None):
            where = self.reference if not isinstance(self.reference, tuple) else "reference arrays"
            raise InputFileError(
                os.fspath(where), "the model is conditioned on the incidence angle: the benchmark reference must be "
                "a file with incident_angles",
            )

    # ------------------------------------------------------------------ generation and metrics
    def generate_e_tot(self, pl_module: L.LightningModule) -> np.ndarray:
        """E_tot (MeV) of one generated shower per reference incident energy, shape (N,)."""
        assert self._e_inc is not None
        device = pl_module.device
        devices = [device] if device.type == "cuda" else []
        out = []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            for lo in range(0, len(self._e_inc), self.batch_size):
                e = torch.as_tensor(self._e_inc[lo : lo + self.batch_size], dtype=torch.float32, device=device)
                extra = None
                if getattr(pl_module, "n_conditions", 1) > 1 and self._angles is not None:
                    extra = pl_module.scale_extra_conditions(torch.as_tensor(self._angles[lo : lo + self.batch_size, None]))
                showers = pl_module.generate(e) if extra is None else pl_module.generate(e, extra_conditions=extra)
                out.append(showers.double().sum(dim=1).cpu().numpy())
        return np.concatenate(out)

    def compute(self, e_tot_generated: np.ndarray) -> dict[str, float]:
        """The logged metrics from generated E_tot (one per reference shower, same order)."""
        assert self._e_inc is not None and self._e_tot is not None and self._groups is not None
        groups, p = self._groups, self.prefix
        idx = groups.assign(self._e_inc)
        rg, rr = e_tot_generated / self._e_inc, self._e_tot / self._e_inc
        out: dict[str, float] = {}
        seps, chis, devs = [], [], []
        for g, key in enumerate(groups.keys()):
            sel = idx == g
            if sel.sum() < 2:
                continue
            xg, xr = rg[sel], rr[sel]
            if not np.all(np.isfinite(xg)):
                # a diverged generator: report the worst values rather than crash the training loop
                out.update({f"{p}/sep_e_ratio/{key}": 1.0, f"{p}/response_ratio/{key}": math.nan})
                seps.append(1.0)
                continue
            c = compare_response(summarize(xg), summarize(xr))
            sep, _ = separation_power(xg, xr, reference_binning(xr, self.n_bins), n_bootstrap=0, clip=True)
            chi2, ndf = chi2_ndf(xg, xr, fastcalogan_binning(xr))
            chi = chi2 / ndf if ndf > 0 else math.inf
            out[f"{p}/response_ratio/{key}"] = c["response_ratio"]
            out[f"{p}/resolution_ratio/{key}"] = c["resolution_ratio"]
            out[f"{p}/sep_e_ratio/{key}"] = sep
            out[f"{p}/chi2ndf_e_ratio/{key}"] = chi
            seps.append(sep)
            chis.append(chi)
            devs.append(abs(c["response_ratio"] - 1))
        out[f"{p}/sep_e_ratio_mean"] = float(np.mean(seps)) if seps else 1.0
        out[f"{p}/chi2ndf_e_ratio_mean"] = float(np.mean(chis)) if chis else math.inf
        out[f"{p}/response_max_dev"] = float(np.nanmax(devs)) if devs and not np.all(np.isnan(devs)) else math.inf
        return out

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.reference is None or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._load_reference()
        self.last_metrics = self.compute(self.generate_e_tot(pl_module))
        for name, value in self.last_metrics.items():
            # every rank computes the same numbers (same weights, same seed): no sync needed
            pl_module.log(name, float(value), on_step=False, on_epoch=True, sync_dist=False)

    def state_dict(self) -> dict[str, Any]:
        return {"last_metrics": dict(self.last_metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_metrics = dict(state_dict.get("last_metrics", {}))
