"""Hits -> voxels (fastsim.data.voxelise): placements checked voxel by voxel, against Geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastsim.data.voxelise import (
    EdgeLookup,
    deposit,
    layer_from_id,
    layer_from_z,
    shower_frame_basis,
    transverse_coordinates,
    voxel_indices,
    voxelise_hits,
)
from fastsim.errors import FastsimError
from fastsim.geometry import Geometry

# 3 layers × 4 α × 5 r = 60 voxels; layer i covers z in [10 i, 10 (i+1)) mm
R_EDGES = [0.0, 5.0, 10.0, 20.0, 50.0, 100.0]
Z_EDGES = np.array([0.0, 10.0, 20.0, 30.0])


@pytest.fixture
def geo() -> Geometry:
    return Geometry.regular(3, 4, R_EDGES, name="small")


@pytest.fixture(autouse=True, params=["numpy", "numba"])
def engine(request, monkeypatch) -> str:
    """Every test runs with the numpy passes and with the compiled loops (when numba is installed):
    ``engine="auto"`` takes numba unless :func:`compiled_kernels` says it is missing."""
    import fastsim.data.voxelise as vx

    if request.param == "numpy":
        monkeypatch.setattr(vx, "compiled_kernels", lambda: None)
    elif vx.compiled_kernels() is None:
        pytest.skip("numba is not installed")
    return request.param


def expected_index(layer: int, alpha_bin: int, r_bin: int) -> int:
    """Flat index in the small geometry: layer-major, then α, then r (r fastest)."""
    return layer * 20 + alpha_bin * 5 + r_bin


# ------------------------------------------------------------------------------ lookups
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_edge_lookup_equals_searchsorted_at_and_next_to_edges(rng, dtype):
    edges = [np.sort(rng.uniform(-50, 300, 25)), np.array([0.0, 1.0, 2.5, 200.0]), np.array([3.0])]
    lookup = EdgeLookup(edges)
    for row, e in enumerate(edges):
        q = np.concatenate(
            [rng.uniform(-100, 400, 20_000), e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf), [-1e9, 1e9]]
        ).astype(dtype)
        if dtype is np.float32:  # the float32 numbers around each (unrepresentable) float64 edge
            e32 = e.astype(np.float32)
            q = np.concatenate([q, e32, np.nextafter(e32, np.float32(-np.inf)), np.nextafter(e32, np.float32(np.inf))])
        got = lookup(q, np.full(len(q), row))
        np.testing.assert_array_equal(got, np.searchsorted(e, q, side="right"))


def test_edge_lookup_float32_rounding_next_to_grid_points(rng):
    # edges on grid points with float32 queries one ulp below: an unbiased cell computation
    # rounds some of them up into the edge's cell (this found such cases in ~15% of the sets)
    for _ in range(100):
        edges = np.cumsum(rng.choice([0.1, 0.3, 0.7, 1.1, 2.3], 40)) + rng.uniform(-50, 50)
        e32 = edges.astype(np.float32)
        q = np.concatenate([np.nextafter(e32, np.float32(-np.inf)), e32, np.nextafter(e32, np.float32(np.inf))])
        np.testing.assert_array_equal(EdgeLookup([edges])(q), np.searchsorted(edges, q, side="right"))


def test_edge_lookup_falls_back_when_the_grid_would_be_huge():
    edges = np.array([0.0, 1e-6, 1e4])  # spacing 1e-6 over 1e4 mm: far too many cells
    lookup = EdgeLookup([edges])
    assert not lookup.use_grid
    q = np.array([-1.0, 0.0, 5e-7, 1e-6, 5.0, 1e4, 2e4])
    np.testing.assert_array_equal(lookup(q), np.searchsorted(edges, q, side="right"))


@pytest.mark.parametrize("name", ["1-photons", "1-pions", "2"])
def test_voxel_indices_match_geometry_voxel_index(rng, name):
    g = Geometry.builtin(name)
    m = 200_000
    scale = 400.0 if name.startswith("1") else 25.0
    layer = rng.integers(-2, g.n_layers + 2, m)
    u, v = rng.normal(0, scale, m), rng.normal(0, scale, m)
    # points exactly on radial edges along ±x (α = 0 and α = ±π) are included
    edges = np.concatenate([ly.r_edges for ly in g.layers])
    u[:2000] = rng.choice(edges, 2000) * rng.choice([-1.0, 1.0], 2000)
    v[:2000] = 0.0
    ref = g.voxel_index(layer, np.sqrt(u * u + v * v), np.arctan2(v, u))
    ref[ref < 0] = g.n_voxels
    np.testing.assert_array_equal(voxel_indices(g, layer, u, v), ref)


@pytest.mark.parametrize("n_alpha", [2, 3, 4, 5, 7, 10, 16, 50])
def test_alpha_bins_agree_with_arctan2_except_within_1e_12_rad_of_an_edge(rng, n_alpha):
    """The pseudo-angle rule (no arctan2) against Geometry.voxel_index (float64 arctan2): the same
    bin for every hit more than 1e-12 rad from a bin edge, hits 1e-9 rad either side of every edge
    included; hits on the axes (θ = 0, ±π/2, ±π, and u = v = 0) in the exact bin."""
    g = Geometry.regular(1, n_alpha, [0.0, 1e4], name="ring")
    theta = -np.pi + 2 * np.pi * np.arange(n_alpha) / n_alpha  # bin edges (and -π = π)
    a = np.concatenate([rng.uniform(-np.pi, np.pi, 50_000), theta, theta + 1e-9, theta - 1e-9])
    r = rng.exponential(50.0, len(a)) + 1e-3
    u, v = r * np.cos(a), r * np.sin(a)
    layer = np.zeros(len(u), dtype=np.int64)
    ref = g.voxel_index(layer, np.hypot(u, v), np.arctan2(v, u))
    got = voxel_indices(g, layer, u, v)
    off = np.arctan2(v, u)[:, None] - theta[None, :]
    dist = np.min(np.abs((off + np.pi) % (2 * np.pi) - np.pi), axis=1)
    near = dist < 1e-12
    assert near.sum() <= len(theta) and near[-2 * len(theta) :].sum() == 0  # only the exact edges
    np.testing.assert_array_equal(got[~near], ref[~near])
    assert np.all(np.abs(got[near] - ref[near]) % (n_alpha - 1) <= 1)  # neighbours (or 0 and n - 1)
    # on the axes: α = q π/2 lies in bin floor(n (q/4 + 1/2)) mod n; u = v = 0 is arctan2's α (0 or π)
    q = np.array([0, 1, 2, -1, -2])
    au = np.array([1.0, 0.0, -1.0, 0.0, -1.0]) * 7.0
    av = np.array([0.0, 1.0, 0.0, -1.0, -0.0]) * 7.0
    zeros = np.zeros(7, dtype=np.int64)
    axes = voxel_indices(g, zeros, np.append(au, [0.0, -0.0]), np.append(av, [0.0, 0.0]))
    np.testing.assert_array_equal(axes, np.append(((2 + q) * n_alpha // 4) % n_alpha, [n_alpha // 2, 0]))


# ------------------------------------------------------------------------------ known placements
def test_hits_along_z_land_in_the_named_voxels(geo):
    # (x, y, z) in mm with impact (0, 0): layer from z, r = hypot, α = atan2(y, x) in 4 bins of [-π, π)
    hits = [
        ((7.0, 0.0, 15.0), expected_index(1, 2, 1)),  # α = 0 -> bin 2, r = 7 -> bin 1
        ((0.0, -30.0, 25.0), expected_index(2, 1, 3)),  # α = -π/2 -> bin 1, r = 30 -> bin 3
        ((-3.0, 0.0, 0.0), expected_index(0, 0, 0)),  # α = π wraps to bin 0; z = 0 is layer 0
        ((-60.0, -1.0, 9.99), expected_index(0, 0, 4)),  # α just above -π -> bin 0
        ((-0.5, 80.0, 20.0), expected_index(2, 3, 4)),  # α just above π/2 -> bin 3; z = 20 starts layer 2
        ((5.0, 0.0, 29.0), expected_index(2, 2, 1)),  # r = 5 exactly is the start of bin 1
    ]
    x, y, z = (np.array([h[0][k] for h in hits]) for k in range(3))
    e = np.arange(1.0, len(hits) + 1)
    showers, stats = voxelise_hits(geo, np.array([len(hits)]), e, x=x, y=y, z=z, z_edges=Z_EDGES)
    assert showers.shape == (1, 60) and showers.dtype == np.float32
    for k, (_, index) in enumerate(hits):
        assert showers[0, index] == pytest.approx(e[k]), k
    assert np.count_nonzero(showers) == len(hits)
    assert stats.n_hits_outside == 0 and stats.e_outside == 0.0


def test_impact_point_shifts_the_axis(geo):
    impact = np.array([[100.0, -40.0, 0.0], [0.0, 0.0, 0.0]])
    # the same detector position is r = 7 (α = 0) from event 0's axis, r ≈ 113 (outside) from event 1's
    x, y, z = np.array([107.0, 107.0]), np.array([-40.0, -40.0]), np.array([5.0, 5.0])
    showers, stats = voxelise_hits(
        geo, np.array([1, 1]), np.array([2.0, 3.0]), x=x, y=y, z=z, z_edges=Z_EDGES, impact=impact
    )
    assert showers[0, expected_index(0, 2, 1)] == 2.0
    assert showers[1].sum() == 0.0
    assert stats.n_hits_outside == 1 and stats.e_outside == 3.0


def test_tilted_axis_projects_perpendicular_to_the_direction(geo):
    theta = math.radians(30.0)
    d = np.array([math.sin(theta), 0.0, math.cos(theta)])
    # frame: e1 = x̂ projected ⟂ d = (cos θ, 0, -sin θ), e2 = d × e1 = ŷ
    e1 = np.array([math.cos(theta), 0.0, -math.sin(theta)])
    y_hat = np.array([0.0, 1.0, 0.0])
    _, b1, b2 = shower_frame_basis(d[None])
    np.testing.assert_allclose(b1[0], e1, atol=1e-15)
    np.testing.assert_allclose(b2[0], y_hat, atol=1e-15)
    impact = np.array([[2.0, 3.0, 0.0]])

    def at(t: float, r: float, alpha: float) -> np.ndarray:
        """Point at path length t (mm) along the axis, then r (mm) at angle α (rad) in the frame."""
        return impact[0] + t * d + r * (math.cos(alpha) * e1 + math.sin(alpha) * y_hat)

    points = [  # detector z = t cos θ - r cos α sin θ picks the layer
        (at(17.0, 1.0, math.pi / 4), expected_index(1, 2, 0)),  # z = 14.4
        (at(10.0, 7.0, 0.3), expected_index(0, 2, 1)),  # z = 5.3
        (at(22.0, 30.0, 2.0), expected_index(2, 3, 3)),  # z = 25.3
        (at(20.0, 12.0, -3.0), expected_index(2, 0, 2)),  # z = 23.3, α just above -π
        (at(20.0, 12.0, 3.0), expected_index(2, 3, 2)),  # α just below π
        (at(25.0, 40.0, -1.0), expected_index(1, 1, 3)),  # z = 10.8 (21.7 on the axis): layer 1
    ]
    p = np.array([pt for pt, _ in points])
    e = np.arange(1.0, len(points) + 1)
    showers, stats = voxelise_hits(
        geo, np.array([len(points)]), e, x=p[:, 0], y=p[:, 1], z=p[:, 2], z_edges=Z_EDGES,
        impact=impact, direction=(d * 3.0)[None],  # any length: the axis is normalised
    )
    for k, (_, index) in enumerate(points):
        assert showers[0, index] == pytest.approx(e[k]), k
    assert stats.n_hits_outside == 0
    # the naive frame (x - x0, y - y0) puts the r = 7 mm hit at r = 11 mm: the projection matters
    naive, _ = voxelise_hits(geo, np.array([1]), e[1:2], x=p[1:2, 0], y=p[1:2, 1], z=p[1:2, 2],
                             z_edges=Z_EDGES, impact=impact)
    assert naive[0, expected_index(0, 2, 1)] == 0.0 and naive[0, expected_index(0, 2, 2)] == e[1]


def test_shower_frame_is_orthonormal_and_right_handed(rng):
    d = rng.normal(size=(500, 3))
    d[:5] = [[1, 0, 0], [-1, 0, 0], [1, 1e-3, 0], [0, 0, -1], [0, 0, 1]]  # on and near the x axis too
    a, e1, e2 = shower_frame_basis(d)
    for vec in (a, e1, e2):
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.sum(a * e1, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(a * e2, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.cross(a, e1), e2, atol=1e-12)
    with pytest.raises(FastsimError, match="non-zero"):
        shower_frame_basis(np.array([[0.0, 0.0, 0.0]]))


def test_transverse_coordinates_general_path_equals_fast_path_for_z(rng):
    counts = rng.integers(0, 20, 50)
    m = int(counts.sum())
    x, y, z = (rng.normal(0, 50, m) for _ in range(3))
    impact = rng.normal(0, 10, (50, 3))
    fast = transverse_coordinates(x, y, z, counts, impact, None)
    # +z given with a tiny x component forces the general path; it must agree to ~1e-3 relative
    d = np.tile([1e-9, 0.0, 1.0], (50, 1))
    general = transverse_coordinates(x, y, z, counts, impact, d)
    np.testing.assert_allclose(general[0], fast[0], atol=1e-6)
    np.testing.assert_allclose(general[1], fast[1], atol=1e-6)


# ------------------------------------------------------------------------------ layers and cells
def test_layer_from_z_and_from_id():
    z = np.array([-0.1, 0.0, 9.999, 10.0, 29.999, 30.0, 1e6])
    np.testing.assert_array_equal(layer_from_z(z, Z_EDGES), [-1, 0, 0, 1, 2, 3, 3])
    g = Geometry.builtin("1-photons")  # used layer ids 0, 1, 2, 3, 12
    ids = np.array([0, 3, 12, 4, 11, 13, -1, 999])
    np.testing.assert_array_equal(layer_from_id(ids, g), [0, 3, 4, -1, -1, -1, -1, -1])


def test_layer_id_and_cell_modes(geo):
    g = Geometry.builtin("1-photons")
    counts = np.array([3, 2])
    layer_id = np.array([12, 1, 5, 0, 1])  # id 5 is not a used layer -> outside
    cell = np.array([2, 15, 0, 7, 10_000])  # cell 7 is beyond layer 0's 8 voxels; 10000 beyond layer 1
    e = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    showers, stats = voxelise_hits(g, counts, e, layer_id=layer_id, cell=cell)
    assert showers[0, g.layer_slice(4).start + 2] == 1.0
    assert showers[0, g.layer_slice(1).start + 15] == 2.0
    assert showers[1].sum() == 8.0 and showers[1, 7] == 8.0  # cell 7 of layer 0 (8 voxels) is inside
    assert stats.n_hits_outside == 2 and stats.e_outside == 20.0
    # layer id + x, y (no z): ids pick the layer, the position the (α, r) cell
    s2, _ = voxelise_hits(geo, np.array([1]), np.array([5.0]), x=np.array([0.0]), y=np.array([12.0]),
                          layer_id=np.array([2]))
    assert s2[0, expected_index(2, 3, 2)] == 5.0


# ------------------------------------------------------------------------------ conservation
def test_energy_is_conserved_and_outside_hits_counted(geo, rng):
    counts = rng.integers(0, 400, 300)
    m = int(counts.sum())
    x, y = rng.normal(0, 40, m).astype(np.float32), rng.normal(0, 40, m).astype(np.float32)
    z = rng.uniform(-5, 35, m).astype(np.float32)  # some before the first / after the last layer
    e = rng.exponential(2.0, m).astype(np.float32)
    impact = np.column_stack([rng.normal(0, 5, 300), rng.normal(0, 5, 300), np.zeros(300)])
    showers, stats = voxelise_hits(geo, counts, e, x=x, y=y, z=z, z_edges=Z_EDGES, impact=impact)
    # independent bookkeeping: which hits are inside, from Geometry.voxel_index
    u = x - np.repeat(impact[:, 0], counts).astype(np.float32)
    v = y - np.repeat(impact[:, 1], counts).astype(np.float32)
    layer = np.searchsorted(Z_EDGES, z, side="right") - 1
    ref = geo.voxel_index(layer, np.sqrt(u * u + v * v), np.arctan2(v, u))
    outside = ref < 0
    assert stats.n_hits == m and stats.n_hits_outside == int(outside.sum()) > 0
    per_event = np.bincount(np.repeat(np.arange(300), counts), weights=e, minlength=300)
    out_event = np.bincount(np.repeat(np.arange(300), counts)[outside], weights=e[outside], minlength=300)
    np.testing.assert_allclose(showers.sum(axis=1, dtype=np.float64) + out_event, per_event, rtol=1e-5)
    assert stats.e_hits == pytest.approx(e.sum(dtype=np.float64), rel=1e-9)
    assert stats.e_outside == pytest.approx(out_event.sum(), rel=1e-9)
    assert showers.sum(dtype=np.float64) + stats.e_outside == pytest.approx(stats.e_hits, rel=1e-6)
    # and the dense result equals a per-hit accumulation with Geometry's own indices
    dense = np.zeros((300, geo.n_voxels))
    np.add.at(dense, (np.repeat(np.arange(300), counts)[~outside], ref[~outside]), e[~outside])
    np.testing.assert_allclose(showers, dense, rtol=1e-5, atol=1e-5)


def test_deposit_handles_empty_events():
    showers, outside = deposit(np.array([0, 2, 3]), np.array([1.0, 2.0, 4.0]), np.array([0, 2, 0, 1]), 3)
    np.testing.assert_array_equal(showers, [[0, 0, 0], [1, 0, 2], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(outside, [0, 0, 0, 4])


@pytest.mark.parametrize("counts", [[0, 0, 2, 0, 1, 0], [0, 0, 0], [3]])
def test_events_without_hits_get_empty_showers(geo, counts, monkeypatch):
    import fastsim.data.voxelise as vx

    monkeypatch.setattr(vx, "_BLOCK_HITS", 2)  # several blocks, some starting after empty events
    counts = np.array(counts)
    m = int(counts.sum())
    x, y, z = np.full(m, 7.0), np.zeros(m), np.full(m, 15.0)
    for _ in range(3):  # fresh np.empty buffers may hold garbage from earlier allocations
        showers, stats = voxelise_hits(geo, counts, np.ones(m), x=x, y=y, z=z, z_edges=Z_EDGES)
        np.testing.assert_array_equal(showers.sum(axis=1), counts.astype(np.float32))
        assert stats.n_events == len(counts) and stats.n_hits == m


def test_bad_arguments_raise(geo):
    with pytest.raises(FastsimError, match="layer z boundaries"):
        voxelise_hits(geo, np.array([1]), np.array([1.0]), x=np.zeros(1), y=np.zeros(1), z=np.zeros(1),
                      z_edges=np.array([0.0, 10.0]))
    with pytest.raises(FastsimError, match="counts sum"):
        voxelise_hits(geo, np.array([2]), np.array([1.0]), x=np.zeros(1), y=np.zeros(1), z=np.zeros(1),
                      z_edges=Z_EDGES)


def test_blocks_and_threads_do_not_change_the_result(geo, rng, monkeypatch):
    import fastsim.data.voxelise as vx

    counts = rng.integers(0, 50, 400)
    counts[7] = 700  # one event larger than a block
    m = int(counts.sum())
    x, y = rng.normal(0, 40, m), rng.normal(0, 40, m)
    z, e = rng.uniform(-5, 35, m), rng.exponential(1.0, m)
    impact = rng.normal(0, 5, (400, 3))
    d = np.column_stack([rng.normal(0, 0.2, 400), rng.normal(0, 0.2, 400), np.ones(400)])
    kw = dict(x=x, y=y, z=z, z_edges=Z_EDGES, impact=impact, direction=d)
    one, st1 = voxelise_hits(geo, counts, e, **kw)
    monkeypatch.setattr(vx, "_BLOCK_HITS", 256)
    blocked, st2 = voxelise_hits(geo, counts, e, **kw)
    threaded, st3 = voxelise_hits(geo, counts, e, threads=3, **kw)
    np.testing.assert_array_equal(blocked, one)
    np.testing.assert_array_equal(threaded, one)
    assert st1.n_hits_outside == st2.n_hits_outside == st3.n_hits_outside > 0
    assert st1.e_outside == pytest.approx(st3.e_outside, rel=1e-12)


@pytest.mark.parametrize(("field", "value"), [("x", np.nan), ("z", np.inf), ("e", -0.5), (None, None)])
def test_min_energy_check_rejects_invalid_hits(geo, field, value):
    from fastsim.data.voxelise import InvalidHitsError

    hits = {"x": np.array([1.0, 2.0, 3.0]), "y": np.zeros(3), "z": np.array([1.0, 11.0, 21.0]), "e": np.ones(3)}
    if field is not None:
        hits[field][1] = value
    kw = dict(x=hits["x"], y=hits["y"], z=hits["z"], z_edges=Z_EDGES)
    if field is None:
        showers, _ = voxelise_hits(geo, np.array([3]), hits["e"], min_energy=-1e-3, **kw)
        assert showers.sum() == 3.0
    else:
        with pytest.raises(InvalidHitsError):
            voxelise_hits(geo, np.array([3]), hits["e"], min_energy=-1e-3, **kw)


# ------------------------------------------------------------------------------ compiled loops = numpy passes
def _awkward_hits(rng, geometry, n=300, dtype=np.float32):
    """Hits that sit on every edge the binning has: r on radial edges, α = ±π and bin edges, u = ±0,
    z on layer boundaries, hits outside in r and z, empty events, a large event."""
    counts = rng.integers(0, 60, n)
    counts[3], counts[5] = 0, 900
    m = int(counts.sum())
    impact = np.column_stack([rng.normal(0, 3, n), rng.normal(0, 3, n), np.zeros(n)])
    x0 = np.repeat(impact[:, 0], counts)
    y0 = np.repeat(impact[:, 1], counts)
    edges = np.concatenate([ly.r_edges for ly in geometry.layers])
    r = np.where(rng.random(m) < 0.3, rng.choice(edges, m), rng.exponential(30.0, m))
    n_alpha = max(ly.n_alpha for ly in geometry.layers)
    a = np.where(rng.random(m) < 0.3, -np.pi + 2 * np.pi * rng.integers(0, n_alpha + 1, m) / n_alpha,
                 rng.uniform(-np.pi, np.pi, m))  # fmt: skip
    x = (x0 + r * np.cos(a)).astype(dtype)
    y = (y0 + r * np.sin(a)).astype(dtype)
    on_axis = rng.random(m) < 0.02
    x[on_axis] = x0[on_axis].astype(dtype)  # u = 0 exactly; with v = 0 too, sometimes
    both = on_axis & (rng.random(m) < 0.5)
    y[both] = y0[both].astype(dtype)
    z_edges = np.linspace(0.0, 300.0, geometry.n_layers + 1)
    z = np.where(rng.random(m) < 0.2, rng.choice(z_edges, m), rng.uniform(-20.0, 320.0, m)).astype(dtype)
    e = rng.exponential(1.0, m).astype(dtype)
    return counts, e, x, y, z, z_edges, impact


class TestCompiledEqualsNumpy:
    """Both engines in one test (so not under the module's engine parameter)."""

    @pytest.fixture
    def engine(self) -> str:
        from fastsim.data.voxelise import compiled_kernels

        if compiled_kernels() is None:
            pytest.skip("numba is not installed")
        return "both"

    @pytest.fixture(autouse=True)
    def _needs_numba(self, engine: str) -> None:
        pass

    def test_grid_value_is_searchsorted_and_stays_inside_the_tables(self, rng):
        """The compiled lookup equals searchsorted (mapped through the values) on edges and next
        to them, and an invalid value (the check reports it only after the loop) never indexes
        past the tables."""
        from fastsim.data.voxelise import _grid_tables, compiled_kernels

        edges = np.array(R_EDGES)
        mapped = np.array([7, 3, 9, 1, 4, 8, 2])  # any values per count (len(edges) + 1)
        near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
        values = np.concatenate([near, rng.uniform(-10.0, 150.0, 1000), [-np.inf, np.inf, np.nan, 1e300]])
        finite = np.isfinite(values)
        lookup_fn = compiled_kernels()._grid_value
        for lookup, expect in ((EdgeLookup([edges]), np.arange(7)), (EdgeLookup([edges], [mapped]), mapped)):
            lo, inv_h, n_cells, _, next_edge, below, above = _grid_tables(lookup)
            got = np.array([lookup_fn(v, lo, inv_h, n_cells, 0, next_edge, below, above) for v in values])
            ref = expect[np.searchsorted(edges, values[finite], side="right")]
            np.testing.assert_array_equal(got[finite], ref)
            assert set(got[~finite]) <= set(expect.tolist())

    @pytest.mark.parametrize("name", ["small", "1-photons", "1-pions"])
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("tilted", [False, True])
    def test_compiled_loops_give_the_numpy_results_bit_for_bit(self, rng, name, dtype, tilted, monkeypatch):
        """The compiled loops against the numpy passes on hits placed on every edge; α bins come from
        numpy's own float32 arctan2 in both."""
        import fastsim.data.voxelise as vx

        geometry = Geometry.regular(3, 4, R_EDGES, name="small") if name == "small" else Geometry.builtin(name)
        counts, e, x, y, z, z_edges, impact = _awkward_hits(rng, geometry, dtype=dtype)
        n = len(counts)
        d = np.column_stack([rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), np.ones(n)]) if tilted else None
        monkeypatch.setattr(vx, "_BLOCK_HITS", 1000)  # several blocks
        kw = dict(x=x, y=y, z=z, z_edges=z_edges, impact=impact, direction=d, min_energy=-1e-3)
        ref, st_ref = voxelise_hits(geometry, counts, e, engine="numpy", **kw)
        for threads in (1, 3):
            out, st = voxelise_hits(geometry, counts, e, engine="numba", threads=threads, **kw)
            np.testing.assert_array_equal(out, ref)
            assert st == st_ref and st.n_hits_outside > 0
        # per-hit layer ids instead of z (ids of unused layers fall outside)
        ids = rng.integers(-1, geometry.n_layers + 2, len(e))
        kw_ids = dict(x=x, y=y, layer_id=ids, impact=impact, direction=d if tilted else None, z=z if tilted else None)
        ref, st_ref = voxelise_hits(geometry, counts, e, engine="numpy", **kw_ids)
        out, st = voxelise_hits(geometry, counts, e, engine="numba", **kw_ids)
        np.testing.assert_array_equal(out, ref)
        assert st == st_ref


def test_engine_argument(geo, engine, monkeypatch):
    import fastsim.data.voxelise as vx

    one = dict(x=np.array([7.0]), y=np.zeros(1), z=np.array([15.0]), z_edges=Z_EDGES)
    with pytest.raises(FastsimError, match="engine must be one of"):
        voxelise_hits(geo, np.array([1]), np.ones(1), engine="fortran", **one)
    monkeypatch.setattr(vx, "compiled_kernels", lambda: None)  # as without numba
    with pytest.raises(FastsimError, match="needs numba"):
        voxelise_hits(geo, np.array([1]), np.ones(1), engine="numba", **one)
    showers, _ = voxelise_hits(geo, np.array([1]), np.ones(1), **one)  # auto: the numpy passes
    assert showers[0, expected_index(1, 2, 1)] == 1.0
