"""Compiled passes of :func:`fastsim.data.voxelise.voxelise_hits` (optional: needs numba).

Two loops over a block of hits replace the dozen numpy passes of the pure-numpy path; between
them numpy's own ``arctan2`` computes the angles, because the α bin must come from exactly the
float32 angle numpy computes (its SIMD arctan2 and libm's ``atan2f`` differ in the last bit for
about a third of the inputs, which would move hits on α bin edges). Every other operation is the
numpy path's, in the same order and the same precision (no fast-math, no fused multiply-add), and
the deposits are summed in float64 in hit order as ``np.bincount`` sums them, so the showers are
bit for bit those of the numpy path; ``tests/test_voxelise.py`` checks it.

Import this module only through :func:`kernels`, which returns None when numba is missing.
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
    binary search's mispredicted branches cost ~10x more here. Invalid values (NaN, inf; the
    check reports them after the loop) still give an index inside the tables."""
    c = (value - lo) * inv_h - _BIAS
    if not c >= 0.0:  # NaN too (an invalid hit, reported after the loop): never index outside
        c = 0.0
    if c > n_cells:
        c = n_cells
    cell = np.int64(c) + base
    nxt = next_edge[cell]
    # beyond the last edge there is no next one (+inf): an infinite value must not count it
    return cell_value[cell] + (value >= nxt and nxt < np.inf)


@njit(nogil=True, cache=True, error_model="numpy")
def frame_and_radial_bins(
    x, y, z, rows_in, use_rows, counts, p0, e1, e2, along_z,
    z_lo, z_inv_h, z_n_cells, z_cell_value, z_next,
    r_lo, r_inv_h, r_n_cells, r_stride, r_cell_value, r_next, r_values,
    check, min_energy, energy, u_out, v_out, index_out, row_out,
):  # fmt: skip
    """Per hit: the layer row, the shower-frame ``u``, ``v`` and ``layer offset + r bin``.

    Args:
        x, y, z: hit positions (M,), one float dtype ``ft``; ``z`` may be empty when it is not
            needed (layer rows given, axis along +z).
        rows_in: layer rows (M,) int64 when ``use_rows``, else empty (rows from ``z``).
        counts: hits per event (n,) int64.
        p0, e1, e2: (n, 3) impact point and frame vectors, already in ``ft``.
        along_z: every axis is +z: ``u = x - x0``, ``v = y - y0`` (no products: keeps signed zeros).
        z_*: the grid tables of the layer boundaries' ``EdgeLookup`` (the row is its count).
        r_*: the grid tables of the VoxelTable's radial ``EdgeLookup`` (``r_stride`` cells a row);
            ``r_values[count]`` is layer offset + r bin, or n_voxels outside.
        check: verify every position and energy finite and energy >= ``min_energy``.
        energy: hit energies (M,).
        u_out, v_out: (M,) ``ft``; index_out, row_out: (M,) int64 outputs.

    Returns:
        False when ``check`` found an invalid hit, else True.
    """
    hit = 0
    has_z = len(z) > 0
    # the check, branch-free and without a floating-point dependency between hits: v - v is 0 for
    # a finite v and NaN otherwise
    bad = False
    for ev in range(len(counts)):
        x0, y0, z0 = p0[ev, 0], p0[ev, 1], p0[ev, 2]
        a0, a1, a2 = e1[ev, 0], e1[ev, 1], e1[ev, 2]
        b0, b1, b2 = e2[ev, 0], e2[ev, 1], e2[ev, 2]
        for _ in range(counts[ev]):
            xi, yi = x[hit], y[hit]
            if check:
                ei = energy[hit]
                nan = (xi - xi) + (yi - yi) + (ei - ei)
                if has_z:
                    nan = nan + (z[hit] - z[hit])
                bad |= (nan != 0) | (ei < min_energy)
            if use_rows:
                row = rows_in[hit]
            else:
                row = _grid_count(np.float64(z[hit]), z_lo, z_inv_h, z_n_cells, 0, z_cell_value, z_next)
            if along_z:
                u = xi - x0
                v = yi - y0
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
            r = u * u
            r = r + v * v
            r = math.sqrt(r)
            count = _grid_count(np.float64(r), r_lo, r_inv_h, r_n_cells, row * r_stride, r_cell_value, r_next)
            index_out[hit] = r_values[count]
            row_out[hit] = row
            u_out[hit] = u
            v_out[hit] = v
            hit += 1
    return not bad


@njit(nogil=True, cache=True, error_model="numpy")
def alpha_bins_and_deposit(
    t, any_alpha, index, row, counts, energy, n_alpha, n_alpha_m1, n_r, pi, two_pi, n_voxels,
    showers, outside, scratch,
):  # fmt: skip
    """Add the α bin to each inside hit's index and sum the energies into the events' voxels.

    Args:
        t: ``arctan2(v, u)`` (M,) in ``ft`` (ignored unless ``any_alpha``).
        index, row: from :func:`frame_and_radial_bins`.
        counts: hits per event (n,); energy: (M,) MeV.
        n_alpha: (rows,) α bins per row in ``ft``; n_alpha_m1, n_r: (rows,) int64.
        pi, two_pi: π and 2π in ``ft``; n_voxels: V.
        showers: (n, V) float32 output rows; outside: (n,) float64 output.
        scratch: (V + 1,) float64 zeros (left zeroed).

    Returns:
        the number of hits outside the geometry.
    """
    hit = 0
    n_out = 0
    for ev in range(len(counts)):
        for _ in range(counts[ev]):
            k = index[hit]
            if any_alpha and k < n_voxels:
                rw = row[hit]
                a = t[hit] + pi
                if a >= two_pi:  # α = π exactly wraps to the first bin
                    a = a - two_pi
                a = a * n_alpha[rw]
                a = a / two_pi
                ab = min(np.int64(a), n_alpha_m1[rw]) * n_r[rw]
                k = min(k + ab, n_voxels) if ab >= 0 else n_voxels  # ab < 0 only from a NaN angle
            if k == n_voxels:
                n_out += 1
            scratch[k] += np.float64(energy[hit])
            hit += 1
        for j in range(n_voxels):
            showers[ev, j] = np.float32(scratch[j])
            scratch[j] = 0.0
        outside[ev] = scratch[n_voxels]
        scratch[n_voxels] = 0.0
    return n_out
