"""Geant4 full simulation of single particles (optional extra ``g4``: geant4-pybind 0.1.3).

``fastsim simulate`` (:mod:`fastsim.fullsim.cli`) shoots γ, e⁻ or e⁺ into a layered calorimeter
(:mod:`fastsim.fullsim.detector`), scores the energy deposited in the active material per voxel of
a :class:`fastsim.geometry.Geometry` with Geant4's own scorers (:mod:`fastsim.fullsim.engine`),
runs one worker process per core and writes CaloChallenge HDF5 (:mod:`fastsim.fullsim.runner`).
Offline, where Geant4's data sets are missing, a data-free standard EM list is built
(:mod:`fastsim.fullsim.physics`, :mod:`fastsim.fullsim.g4env`).

Nothing here imports Geant4 at import time; :func:`simulate` is the library entry point.
"""

from __future__ import annotations

from typing import Any


def simulate(*args: Any, **kwargs: Any) -> Any:
    """See :func:`fastsim.fullsim.runner.simulate`."""
    from fastsim.fullsim.runner import simulate as _simulate

    return _simulate(*args, **kwargs)


__all__ = ["simulate"]
