"""Pass/fail thresholds of the benchmark report, and how a ratio is judged against them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from fastsim.errors import FastsimError, InputFileError

__all__ = ["Tolerances", "load_tolerances", "status"]


@dataclass
class Tolerances:
    """Pass/fail thresholds of the report.

    Attributes:
        response: max |⟨E_tot/E_inc⟩_gen / ⟨E_tot/E_inc⟩_ref − 1| per incident energy (1 %).
        resolution: max |(σ/μ)_gen / (σ/μ)_ref − 1| per incident energy (5 % relative).
        separation: max of the mean over incident energies of the separation power of
            E_tot/E_inc (0.003). Note its finite-sample floor (``separation_power_floor`` in
            metrics.json): ~0.0015 for 10⁴ showers per sample and 30 bins.
        auc: max classifier ROC AUC, low- and high-level (0.8).
    """

    response: float = 0.01
    resolution: float = 0.05
    separation: float = 0.003
    auc: float = 0.8


def load_tolerances(path: str | os.PathLike | None = None, **overrides: float | None) -> Tolerances:
    """Tolerances from a YAML mapping (keys of :class:`Tolerances`) and explicit overrides.

    Raises:
        InputFileError: missing/unreadable file, unknown keys, non-positive values.
    """
    import yaml

    values: dict[str, float] = {}
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputFileError(path, "tolerance file not found")
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise InputFileError(path, f"not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputFileError(path, "must hold a mapping like 'response: 0.01'")
        known = set(Tolerances.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputFileError(path, f"unknown tolerance keys {unknown}; known: {sorted(known)}")
        for key, val in data.items():
            try:
                values[key] = float(val)
            except (TypeError, ValueError):
                raise InputFileError(path, f"tolerance {key!r} is not a number: {val!r}") from None
            if not values[key] > 0:
                raise InputFileError(path, f"tolerance {key!r} must be > 0, got {val!r}")
    for key, val in overrides.items():
        if val is not None:
            if not val > 0:
                raise FastsimError(f"tolerance {key!r} must be > 0, got {val}")
            values[key] = float(val)
    return Tolerances(**values)


def status(ratio: float, unc: float, tol: float) -> str:
    """ "pass" (|ratio − 1| <= tol), "fail" (outside by more than 2 σ) or "not significant"
    (outside, but within 2 σ of the band: more showers are needed to tell)."""
    if not math.isfinite(ratio):
        return "fail"
    dev = abs(ratio - 1)
    if dev <= tol:
        return "pass"
    if math.isfinite(unc) and dev - 2 * unc <= tol:
        return "not significant"
    return "fail"
