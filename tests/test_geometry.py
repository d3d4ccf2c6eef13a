from __future__ import annotations

import math

import numpy as np
import pytest

from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry


@pytest.mark.parametrize(
    ("name", "n_voxels", "layer_ids"),
    [
        ("1-photons", 368, [0, 1, 2, 3, 12]),
        ("1-pions", 533, [0, 1, 2, 3, 12, 13, 14]),
        ("2", 6480, list(range(45))),
        ("3", 40500, list(range(45))),
    ],
)
def test_builtin_voxel_counts(name, n_voxels, layer_ids):
    geo = Geometry.builtin(name)
    assert geo.n_voxels == n_voxels
    assert geo.layer_ids == layer_ids
    assert geo.layer_offsets[-1] == n_voxels


def test_photon_layer_sizes(geo_photons):
    assert [s.stop - s.start for s in geo_photons.layer_slices] == [8, 160, 190, 5, 5]


def test_voxel_order_is_layer_alpha_r_with_r_fastest(geo_photons):
    g = geo_photons
    # layer position 1 (id 1) has 10 α × 16 r and starts at voxel 8
    idx = 8 + 3 * 16 + 5
    assert g.voxel_layer[idx] == 1 and g.voxel_alpha_bin[idx] == 3 and g.voxel_r_bin[idx] == 5
    assert np.all(np.diff(g.voxel_r_bin[8 : 8 + 16]) == 1)


def test_voxel_index_inverts_voxel_centres(geo_photons):
    g = geo_photons
    idx = g.voxel_index(g.voxel_layer, g.voxel_r_center, g.voxel_alpha_center)
    # single-α layers have centre α = 0, which lies inside their only bin
    np.testing.assert_array_equal(idx, np.arange(g.n_voxels))


def test_voxel_index_outside_is_minus_one(geo_small):
    idx = geo_small.voxel_index(np.array([0, 3, 1]), np.array([100.5, 1.0, 1.0]), np.array([0.0, 0.0, math.pi]))
    assert idx[0] == -1 and idx[1] == -1
    # α = π wraps to -π: first α bin
    assert idx[2] == geo_small.layer_offsets[1] + 0
    # α = 2π is α = 0: third of four α bins (5 r bins each)
    assert geo_small.voxel_index(np.array([1]), np.array([1.0]), np.array([2 * math.pi]))[0] == 20 + 2 * 5


def test_layer_energies_and_image(geo_small, rng):
    x = rng.random((7, geo_small.n_voxels))
    e = geo_small.layer_energies(x)
    np.testing.assert_allclose(e.sum(axis=1), x.sum(axis=1))
    img = geo_small.layer_image(x, 2)
    assert img.shape == (7, 4, 5)
    np.testing.assert_allclose(img.sum(axis=(1, 2)), e[:, 2])


def test_serialisation_round_trip(geo_photons):
    assert Geometry.from_json(geo_photons.to_json()) == geo_photons
    assert Geometry.resolve(geo_photons.to_dict()) == geo_photons


def test_regular_geometry():
    g = Geometry.regular(4, 3, [0, 1, 2])
    assert g.n_voxels == 24 and g.n_layers == 4
    np.testing.assert_allclose(g.voxel_area[:2], [math.pi / 3, 3 * math.pi / 3])


def test_bad_binning_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        Geometry.from_xml(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<Bins><Bin")
    with pytest.raises(InputFileError, match="bad.xml: not a valid XML"):
        Geometry.from_xml(bad)
    empty = tmp_path / "empty.xml"
    empty.write_text('<Bins><Bin name="x"><Layer id="0" r_edges="0" n_bin_alpha="1"/></Bin></Bins>')
    with pytest.raises(InputFileError, match="no used layers"):
        Geometry.from_xml(empty)
    with pytest.raises(FastsimError, match="unknown built-in"):
        Geometry.builtin("4")


def test_check_n_voxels(geo_photons):
    geo_photons.check_n_voxels(368, "f.h5")
    with pytest.raises(InputFileError, match="f.h5: showers have 367 voxels"):
        geo_photons.check_n_voxels(367, "f.h5")
