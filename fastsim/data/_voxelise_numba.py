"""Compiled passes of :func:`fastsim.data.voxelise.voxelise_hits` (optional: needs numba).

Two loops over a block of hits replace the dozen numpy passes of the pure-numpy path; between
them numpy's own ``arctan2`` computes the angles, because the α bin must come from exactly the
float32 angle numpy computes (its SIMD arctan2 and libm's ``atan2f`` differ in the last bit for
about a third of the inputs, which would move hits on α bin edges). The first loop is as light
as it can be (the shower-frame ``u``, ``v`` that arctan2 needs, and the validity check of the
positions); the second does everything else per hit in one go: layer row, radius, radial bin,
α bin and the deposit. Every operation is the numpy path's, in the same order and the same
precision (no fast-math, no fused multiply-add), and the deposits are summed in float64 in hit
order as ``np.bincount`` sums them, so the showers are bit for bit those of the numpy path;
``tests/test_voxelise.py`` checks it.

Import this module only through :func:`fastsim.data.voxelise.compiled_kernels`, which returns
None when numba is missing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# nogil: voxelise_hits runs blocks on threads; cache: compiled once per machine, not per process


#: downward bias of the computed grid cell, in cells (as :class:`fastsim.data.voxelise.EdgeLookup`)
_BIAS = 0.05


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _grid_count(value, lo, inv_h, n_cells, base, cell_value, next_edge):
    """``EdgeLookup``'s count for one float64 ``value``: its grid cell (the true one or the one
    below, with float64 arithmetic), the tabulated count there, plus one if ``value`` reaches the
    next edge. Exact, like ``np.searchsorted(edges, value, side="right")``, and branch-free: a
    binary search's mispredicted branches cost ~10x more here.

    ``next_edge`` holds NaN where the lookup has +inf (no next edge: beyond the last one), so an
    infinite value never counts it (``inf >= NaN`` is false) without a guard in the loop (the
    guard cost ~1.5 ns per hit). Invalid values (NaN, inf; the check reports them after the
    loop) still give an index inside the tables."""
    c = (value - lo) * inv_h - _BIAS
    if not c >= 0.0:  # NaN too (an invalid hit, reported after the loop): never index outside
        c = 0.0
    if c > n_cells:
        c = n_cells
    cell = np.int64(c) + base
    return cell_value[cell] + np.int64(value >= next_edge[cell])


@njit(nogil=True, cache=True, error_model="numpy")
def frame(x, y, z, counts, p0, e1, e2, along_z, check, u_out, v_out):
    """Per hit: the shower-frame ``u``, ``v`` (as :func:`fastsim.data.voxelise.transverse_coordinates`).

    Args:
        x, y, z: hit positions (M,), one float dtype ``ft``; ``z`` may be empty when the axis is +z.
        counts: hits per event (n,) int64.
        p0, e1, e2: (n, 3) impact point and frame vectors, already in ``ft``.
        along_z: every axis is +z: ``u = x - x0``, ``v = y - y0`` (no products: keeps signed zeros).
        check: verify every ``x``, ``y`` (and ``z`` when given) finite.
        u_out, v_out: (M,) ``ft`` outputs.

    Returns:
        False when ``check`` found a non-finite position, else True.
    """
    hit = 0
    has_z = len(z) > 0
    # the check without a floating-point dependency between hits: v - v is 0 for a finite v, NaN otherwise
    bad = False
    for ev in range(len(counts)):
        x0, y0, z0 = p0[ev, 0], p0[ev, 1], p0[ev, 2]
        a0, a1, a2 = e1[ev, 0], e1[ev, 1], e1[ev, 2]
        b0, b1, b2 = e2[ev, 0], e2[ev, 1], e2[ev, 2]
        for _ in range(counts[ev]):
            xi, yi = x[hit], y[hit]
            if check:
                nan = (xi - xi) + (yi - yi)
                if has_z:
                    nan = nan + (z[hit] - z[hit])
                bad |= nan != 0
            if along_z:
                u_out[hit] = xi - x0
                v_out[hit] = yi - y0
            else:
                rx = xi - x0
                ry = yi - y0
                rz = z[hit] - z0
                u = rx * a0
                u = u + ry * a1
                u = u + rz * a2
                v = rx * b0
                v = v + ry * b1
                v = v + rz * b2
                u_out[hit] = u
                v_out[hit] = v
            hit += 1
    return not bad


@njit(nogil=True, cache=True, error_model="numpy")
def bins_and_deposit(
    u, v, t, any_alpha, z, rows_in, use_rows, counts, energy, check, min_energy,
    z_lo, z_inv_h, z_n_cells, z_cell_value, z_next,
    r_lo, r_inv_h, r_n_cells, r_stride, r_cell_value, r_next, r_values,
    n_alpha, n_alpha_m1, n_r, pi, two_pi, n_voxels, showers, outside, scratch,
):  # fmt: skip
    """Per hit: the layer row, ``layer offset + r bin + α bin``, and the deposit into the events' voxels.

    Args:
        u, v: shower-frame coordinates (M,) from :func:`frame`, float dtype ``ft``.
        t: ``arctan2(v, u)`` (M,) in ``ft`` (ignored unless ``any_alpha``).
        z: hit z (M,) when the rows come from it, else empty.
        rows_in: layer rows (M,) int64 when ``use_rows``, else empty (rows from ``z``).
        counts: hits per event (n,) int64; energy: (M,) MeV.
        check: verify every energy (and ``z`` when used) finite and energy >= ``min_energy``.
        z_*: the grid tables of the layer boundaries' ``EdgeLookup`` (the row is its count).
        r_*: the grid tables of the VoxelTable's radial ``EdgeLookup`` (``r_stride`` cells a row);
            ``r_values[count]`` is layer offset + r bin, or n_voxels outside.
        n_alpha: (rows,) α bins per row in ``ft``; n_alpha_m1, n_r: (rows,) int64.
        pi, two_pi: π and 2π in ``ft``; n_voxels: V.
        showers: (n, V) float32 output rows; outside: (n,) float64 output.
        scratch: (V + 1,) float64 zeros (left zeroed).

    Returns:
        the number of hits outside the geometry, or -1 when ``check`` found an invalid hit.
    """
    hit = 0
    n_out = 0
    bad = False
    for ev in range(len(counts)):
        for _ in range(counts[ev]):
            ui, vi, ei = u[hit], v[hit], energy[hit]
            if check:
                nan = ei - ei
                if not use_rows:
                    nan = nan + (z[hit] - z[hit])
                bad |= (nan != 0) | (ei < min_energy)
            if use_rows:
                row = rows_in[hit]
            else:
                row = _grid_count(np.float64(z[hit]), z_lo, z_inv_h, z_n_cells, 0, z_cell_value, z_next)
            r = ui * ui
            r = r + vi * vi
            r = math.sqrt(r)
            count = _grid_count(np.float64(r), r_lo, r_inv_h, r_n_cells, row * r_stride, r_cell_value, r_next)
            k = r_values[count]
            if any_alpha and k < n_voxels:
                a = t[hit] + pi
                if a >= two_pi:  # α = π exactly wraps to the first bin
                    a = a - two_pi
                a = a * n_alpha[row]
                a = a / two_pi
                ab = min(np.int64(a), n_alpha_m1[row]) * n_r[row]
                k = min(k + ab, n_voxels) if ab >= 0 else n_voxels  # ab < 0 only from a NaN angle
            n_out += k == n_voxels
            scratch[k] += np.float64(ei)
            hit += 1
        for j in range(n_voxels):
            showers[ev, j] = np.float32(scratch[j])
            scratch[j] = 0.0
        outside[ev] = scratch[n_voxels]
        scratch[n_voxels] = 0.0
    return -1 if bad else n_out
