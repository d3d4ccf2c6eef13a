"""The calorimeter's EM energy scale: per-layer sampling fractions.

A sampling calorimeter measures only the energy deposited in its active medium (liquid argon,
scintillator); most of a shower's energy stays in the absorbers (lead, iron). The *EM scale* of a
layer is its active-medium energy divided by that layer's **sampling fraction**

    f_l = Σ_events E_active,l / Σ_events (E_active,l + E_passive,l)

where ``E_active,l`` is the energy deposited in the layer's active material (its voxels plus the
active material beyond the binning's last radial edge) and ``E_passive,l`` the energy deposited in
the layer's passive material (absorbers). Both come from the simulation itself: the Geant4
application scores each layer's active and passive deposits separately
(:class:`fastsim.fullsim.engine.EventResult`). A layer without passive material (the LAr
presampler) has ``f = 1``. Energy lost in dead material in front of a layer (cryostat walls,
services) or leaking out is *not* corrected — as in a real calorimeter, where the EM scale is the
response to electrons/photons of the calorimeter itself and the dead-material correction is a
separate step. For a contained shower E_tot/E_inc on the EM scale is therefore close to, and a
little below, 1 (the CaloChallenge convention).

The conversion multiplies every voxel of layer ``l`` by the constant ``1 / f_l``: applying it to a
file written on the active-medium scale is exact, and reversible.

Files record their scale in the attribute ``energy_scale`` (:data:`SCALE_EM` or
:data:`SCALE_ACTIVE`) with ``sampling_fractions`` (JSON list, one per layer) and
``em_scale_factors`` (``1/f``) when on the EM scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsim.errors import FastsimError
from fastsim.geometry import Geometry

#: Voxel energies divided by each layer's sampling fraction (the default of ``fastsim simulate``).
SCALE_EM = "em"
#: Voxel energies as deposited in the active material (the raw Geant4 deposits).
SCALE_ACTIVE = "active"
SCALES = (SCALE_EM, SCALE_ACTIVE)
#: The ``units`` attribute of a file on each scale.
UNITS = {
    SCALE_EM: "MeV (incident kinetic energy; voxel energies on the EM scale: each layer's active-material "
    "deposit divided by the layer's sampling fraction)",
    SCALE_ACTIVE: "MeV (incident kinetic energy and energy deposited in the active material)",
}


@dataclass(frozen=True)
class SamplingCalibration:
    """Measured sampling fractions of one detector.

    Attributes:
        detector: the detector's name (``DetectorSpec.name``).
        fractions: (L,) sampling fraction per layer, in layer order.
        uncertainties: (L,) their statistical uncertainties.
        source: how they were measured (sample, seed, command).
    """

    detector: str
    fractions: tuple[float, ...]
    uncertainties: tuple[float, ...]
    source: str

    @property
    def factors(self) -> np.ndarray:
        """(L,) EM-scale factors 1/f."""
        return 1.0 / np.asarray(self.fractions, dtype=np.float64)


#: Stored calibrations, by detector name. Measured with
#: ``python scripts/calibrate_sampling.py --detector atlas -n 100 --seed 777`` (photons, 100 per
#: dataset-1 energy 256 MeV … 65.5 GeV, data-free EM physics, cut 0.7 mm; see docs/fullsim.md).
CALIBRATIONS: dict[str, SamplingCalibration] = {
    "atlas-barrel-like": SamplingCalibration(
        detector="atlas-barrel-like",
        # presampler (all LAr), EM strips, EM middle, EM back (1.5 mm Pb + 4.2 mm LAr), tile A (14 mm Fe + 3 mm scintillator)
        fractions=(1.0, 0.274316, 0.244863, 0.212334, 0.025931),
        uncertainties=(0.0, 0.000414, 0.000215, 0.001351, 0.000499),
        source=(
            "900 photons, 100 at each of 2^8 ... 2^16 MeV, seed 777, data-free EM physics, cut 0.7 mm, "
            "Geant4 11.4.p01 (python scripts/calibrate_sampling.py --detector atlas -n 100 --seed 777)"
        ),
    ),
}


def layer_totals(showers: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Energy per layer, (N, L) float64, from showers (N, V) in the geometry's voxel order."""
    s = np.asarray(showers, dtype=np.float64)
    return np.add.reduceat(s, geometry.layer_offsets[:-1], axis=1) if s.shape[0] else np.zeros((0, geometry.n_layers))


def sampling_fractions(active: np.ndarray, passive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer sampling fraction ``Σ active / Σ (active + passive)`` and its uncertainty.

    Args:
        active: (N, L) MeV deposited per event in each layer's active material.
        passive: (N, L) MeV deposited per event in each layer's passive material.

    Returns:
        (f (L,), σ_f (L,)): ratio-of-sums estimator and its standard error (delta method,
        ``σ = sqrt(Σ (a_i − f t_i)² / (n (n − 1))) / mean(t)``). A layer with no passive deposit
        at all has ``f = 1`` exactly (an all-active layer); a layer that saw no energy gets NaN.
    """
    a = np.asarray(active, dtype=np.float64)
    p = np.asarray(passive, dtype=np.float64)
    if a.shape != p.shape or a.ndim != 2:
        raise ValueError(f"active {a.shape} and passive {p.shape} must both be (N, L)")
    t = a + p
    n = a.shape[0]
    sum_t = t.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = a.sum(axis=0) / sum_t
        resid = a - f * t
        unc = np.sqrt((resid**2).sum(axis=0) / max(n * (n - 1), 1)) / (sum_t / n)
    all_active = (p.sum(axis=0) == 0) & (sum_t > 0)
    f[all_active], unc[all_active] = 1.0, 0.0
    return f, unc


def voxel_factors(geometry: Geometry, factors: np.ndarray) -> np.ndarray:
    """(V,) float32: each voxel's layer factor."""
    fac = np.asarray(factors, dtype=np.float64).reshape(-1)
    if fac.shape[0] != geometry.n_layers:
        raise FastsimError(f"{fac.shape[0]} layer factors for a geometry with {geometry.n_layers} layers")
    if not np.all(np.isfinite(fac)) or np.any(fac <= 0):
        raise FastsimError(f"layer factors must be finite and positive, got {fac.tolist()}")
    return np.repeat(fac, np.diff(geometry.layer_offsets)).astype(np.float32)


def scale_attributes(scale: str, fractions: np.ndarray | None, source: str = "") -> dict[str, Any]:
    """The HDF5 attributes that describe a file's energy scale."""
    if scale not in SCALES:
        raise FastsimError(f"unknown energy scale {scale!r}; choose {' or '.join(SCALES)}")
    if scale == SCALE_ACTIVE:
        return {"energy_scale": SCALE_ACTIVE}
    f = np.asarray(fractions, dtype=np.float64)
    return {
        "energy_scale": SCALE_EM,
        "sampling_fractions": json.dumps([float(x) for x in f]),
        "em_scale_factors": json.dumps([float(1.0 / x) for x in f]),
        "sampling_fraction_source": source,
    }


def file_scale(attrs: dict[str, Any]) -> str | None:
    """A file's energy scale from its attributes, or None when it does not say."""
    scale = attrs.get("energy_scale")
    if isinstance(scale, bytes):
        scale = scale.decode()
    return scale if scale in SCALES else None


def stored_calibration(detector_name: str) -> SamplingCalibration | None:
    """The stored calibration of a detector, or None."""
    return CALIBRATIONS.get(detector_name)
