"""Shared fixtures: tiny data made in tmp_path, never downloaded."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

from fastsim.geometry import Geometry  # noqa: E402


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
