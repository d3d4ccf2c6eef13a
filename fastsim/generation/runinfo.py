"""What a generation run records: provenance attributes before, timing attributes after.

:func:`run_attributes` are the attributes a generated file carries from the start (provenance of
docs/architecture.md: checkpoint, seed, batch size, device, geometry, model class and
hyper-parameters); :func:`timing_attributes` are added when the run ends, from its
:class:`GenerateResult`; :func:`read_result` reads that result back from a finished file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastsim.generation.energies import EnergyPlan

__all__ = ["GenerateResult", "model_description", "read_result", "run_attributes", "timing_attributes"]


@dataclass
class GenerateResult:
    """What a generation run produced.

    Attributes:
        path: the output file.
        n_showers: showers written.
        wall_s: wall-clock seconds of the whole run (generation, transfer, compression, writing).
        time_per_shower_s: ``wall_s / n_showers``.
        time_per_shower_by_energy: ``{"<E in MeV>": s}`` generation time per shower, discrete runs only.
        device: the device(s) used, e.g. ``"cpu"``, ``"cuda:0"``, ``"cpu x2"``.
    """

    path: str
    n_showers: int
    wall_s: float
    time_per_shower_s: float
    time_per_shower_by_energy: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def model_description(model: Any) -> dict[str, Any]:
    """Class and hyper-parameters of a generator, JSON-able, for the provenance attributes."""
    from fastsim.provenance import config_hash

    cls = type(model)
    hparams = dict(getattr(model, "hparams", {}) or {})
    hparams_json = json.loads(json.dumps(hparams, default=str))
    return {
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "hparams": hparams_json,
        "config_hash": config_hash(hparams_json),
    }


def run_attributes(
    model: Any,
    plan: EnergyPlan,
    *,
    seed: int,
    batch_size: int,
    device: str,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Provenance attributes of a generated file (the timing attributes are added at the end)."""
    from fastsim.provenance import file_sha256, provenance

    if checkpoint is not None and checkpoint_sha256 is None:
        checkpoint_sha256 = file_sha256(checkpoint)
    return provenance(
        producer="fastsim-generate",
        checkpoint=os.path.abspath(checkpoint) if checkpoint is not None else None,
        checkpoint_sha256=checkpoint_sha256,
        seed=int(seed),
        batch_size=int(batch_size),
        device=device,
        geometry=model.geometry.to_json(),
        latent_dim=int(model.latent_dim),
        noise_dim=int(model.noise_dim),
        energies=plan.describe(),
        n_showers=len(plan),
        # the scale of the showers the model was trained on ("" if the training files did not say)
        energy_scale=str(getattr(model, "energy_scale", "") or ""),
        **model_description(model),
        **(extra or {}),
    )


def timing_attributes(result: GenerateResult) -> dict[str, Any]:
    """The timing attributes of docs/architecture.md for a finished run."""
    attrs: dict[str, Any] = {
        "time_per_shower_s": float(result.time_per_shower_s),
        "wall_time_s": float(result.wall_s),
    }
    if result.time_per_shower_by_energy:
        attrs["time_per_shower_by_energy"] = json.dumps(result.time_per_shower_by_energy, sort_keys=True)
    return attrs


def read_result(path: str | os.PathLike) -> GenerateResult:
    """The :class:`GenerateResult` recorded in a generated file's attributes."""
    import h5py

    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
        n = int(f["incident_energies"].shape[0])
    by_energy = json.loads(a["time_per_shower_by_energy"]) if "time_per_shower_by_energy" in a else {}
    return GenerateResult(
        os.fspath(path), n, float(a.get("wall_time_s", np.nan)), float(a["time_per_shower_s"]),
        by_energy, str(a.get("device", "")),
    )  # fmt: skip
