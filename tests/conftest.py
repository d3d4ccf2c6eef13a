"""Shared fixtures: tiny data made in tmp_path, never downloaded, and the real configs shrunk.

- :func:`toy_showers` is the one toy-shower maker of the suite (the tests that need showers call
  it with the shape, response and energies they test against); :func:`write_toy_showers` writes
  its showers as a CaloChallenge file.
- :func:`shrunk_config` loads packaged configs as ``fastsim fit`` reads them and shrinks them to
  run in seconds on a CPU (:data:`TINY_TRAINER`, :data:`TINY_MODELS`), as the
  lightning-hydra-template's conftest does; :func:`trainer_kwargs` is its trainer section, the
  arguments of a test's ``lightning.Trainer``. Fixtures of the same names hand them to tests.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

from fastsim.geometry import Geometry  # noqa: E402

#: the trainer of every shrunk config: one CPU process, two batches, no logger, checkpoints, bars
TINY_TRAINER: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
#: model sizes small enough to train in seconds, per system (``model.init_args`` keys)
TINY_MODELS: dict[str, dict[str, Any]] = {
    "WGANGP": {"generator_hidden": [16, 32], "critic_hidden": [32, 32], "n_critic": 2},
    "ShowerVAE": {
        "encoder_hidden": [32],
        "decoder_hidden": [32],
        "energy_hidden": [8],
        "n_importance_samples": 4,
    },
}


# ------------------------------------------------------------------------------------------ showers
def toy_showers(
    geo: Geometry,
    n: int,
    seed: int,
    energies: Sequence[float] = (1024.0, 16384.0, 262144.0),
    *,
    profile: np.ndarray | None = None,
    radial_mm: float = 30.0,
    alpha_mod: float = 0.0,
    shape: float = 2.0,
    empty: float = 0.0,
    response: float = 0.9,
    spread: float | Callable[[np.ndarray], np.ndarray] = 0.03,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Toy but physical-looking showers, seeded.

    Each shower: an incident energy drawn from ``energies`` (MeV); voxel weights
    ``profile × Gamma(shape)`` (a fraction ``empty`` of voxels set to 0), normalised; times the
    deposit ``E_inc × N(response, spread)`` (clipped at 0.1 E_inc) and ``scale``.

    Args:
        geo: the voxel geometry.
        n: showers; seed: of every draw (energies, weights, empties, deposits, in that order).
        energies: the discrete incident energies, MeV.
        profile: mean voxel weights (V,); default a radial exponential of ``radial_mm`` modulated
            in α by ``1 + alpha_mod cos α``.
        response, spread: mean and standard deviation of E_tot/E_inc (``spread`` may be a
            function of the incident energies, (n,) -> (n,)).
        scale: multiplies every deposit (a mis-calibrated generator).

    Returns:
        e_inc (n,) float64 MeV, showers (n, V) float32 MeV.
    """
    rng = np.random.default_rng(seed)
    e = rng.choice(np.asarray(energies, dtype=np.float64), size=n)
    if profile is None:
        profile = np.exp(-geo.voxel_r_center / radial_mm) * (1 + alpha_mod * np.cos(geo.voxel_alpha_center))
    w = rng.gamma(shape, size=(n, geo.n_voxels)) * profile
    if empty > 0:
        w *= rng.random((n, geo.n_voxels)) > empty
    w /= w.sum(axis=1, keepdims=True)
    frac = rng.normal(response, spread(e) if callable(spread) else spread, size=n).clip(0.1)
    return e, (scale * w * (frac * e)[:, None]).astype(np.float32)


def write_toy_showers(
    path: str, geo: Geometry, n: int, seed: int, attrs: dict[str, Any] | None = None, **kw: Any
) -> None:
    """:func:`toy_showers` written as a CaloChallenge file at ``path``."""
    from fastsim.data.hdf5 import write_calochallenge

    write_calochallenge(path, *toy_showers(geo, n, seed, **kw), attrs=attrs)


def depth_profile(geo: Geometry, length: float = 12.0) -> np.ndarray:
    """Mean voxel weights falling with the voxel index (layer by layer): ``exp(-i / length)``."""
    return np.exp(-np.arange(geo.n_voxels) / length)


# ------------------------------------------------------------------------------------------ configs
def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def shrunk_config(*names: str, **trainer: Any) -> dict[str, Any]:
    """The packaged configs ``names`` (``wgan_gp``, ``photons``, ``cpu``, …) merged as ``fastsim fit``
    merges them, with the trainer shrunk to :data:`TINY_TRAINER` (then ``trainer`` overrides) and
    the model's layer sizes to :data:`TINY_MODELS`."""
    from fastsim.training.configs import read_config, resolve_config

    cfg: dict[str, Any] = {}
    for name in names:
        cfg = _merge(cfg, read_config(resolve_config(name)))
    cfg["trainer"] = {**cfg.get("trainer", {}), **TINY_TRAINER, **trainer}
    model = cfg.get("model")
    if isinstance(model, dict):
        system = str(model.get("class_path", "")).rsplit(".", 1)[-1]
        model["init_args"] = {**(model.get("init_args") or {}), **TINY_MODELS.get(system, {})}
    return cfg


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    """Arguments of a test's ``lightning.Trainer``: the packaged ``cpu`` trainer config, shrunk."""
    return shrunk_config("cpu", **overrides)["trainer"]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def geo_small() -> Geometry:
    """A 3-layer regular geometry: 3 × 4 α × 5 r = 60 voxels."""
    return Geometry.regular(3, 4, [0.0, 5.0, 10.0, 20.0, 50.0, 100.0], name="small")


@pytest.fixture
def geo_photons() -> Geometry:
    return Geometry.builtin("1-photons")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(name="toy_showers")
def toy_showers_fixture() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """:func:`toy_showers`."""
    return toy_showers


@pytest.fixture(name="shrunk_config")
def shrunk_config_fixture() -> Callable[..., dict[str, Any]]:
    """:func:`shrunk_config`."""
    return shrunk_config


@pytest.fixture(name="trainer_kwargs")
def trainer_kwargs_fixture() -> Callable[..., dict[str, Any]]:
    """:func:`trainer_kwargs`."""
    return trainer_kwargs
