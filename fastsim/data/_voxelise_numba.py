"""Compiled passes of :func:`fastsim.data.voxelise.voxelise_hits` (optional: needs numba).

Two loops over a block of hits replace the dozen numpy passes of the pure-numpy path: the first
is plain arithmetic per hit (check, shower frame, ``r`` and the pseudo-angle ``w`` that stands in
for α, see :mod:`fastsim.data.voxelise`), which the compiler vectorises; the second does the
table lookups (layer, r bin, α bin) and the deposit. Measured on the benchmark's hits, the split
is ~25% faster than one fused loop: the fused loop's long chain of dependent operations per hit
left the CPU waiting. The lookups are branch-free selects (a mispredicted branch per lookup made
them ~4x slower) with unsigned indices (no negative-index wraparound code).
Every operation is the numpy path's, in the same order and the same precision (no fast-math, no
fused multiply-add), and the deposits are summed in float64 in hit order as ``np.bincount`` sums
them, so the showers are bit for bit those of the numpy path; ``tests/test_voxelise.py`` checks it.

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
def _grid_value(value, lo, inv_h, n_cells, base, next_edge, below, above):
    """``EdgeLookup``'s result for one float64 ``value``: its grid cell (the true one or the one
    below, with float64 arithmetic), then the tabulated value below or above the cell's next edge.
    Exact, like ``values[np.searchsorted(edges, value, side="right")]``, and branch-free. Invalid
    values (NaN, inf; the check reports them) still give an index inside the tables: NaN takes
    cell 0, +inf the last cell, whose next edge is +inf with equal values below and above."""
    c = (value - lo) * inv_h - _BIAS
    if not c >= 0.0:  # NaN too
        c = 0.0
    if c > n_cells:
        c = n_cells
    cell = np.uint64(c) + np.uint64(base)
    b = below[cell]
    return b + (above[cell] - b) * (value >= next_edge[cell])


@njit(nogil=True, cache=True, error_model="numpy")
def frame_pass(x, y, z, counts, p0, e1, e2, along_z, any_alpha, check, min_energy, energy, r_out, w_out):
    """Per hit: ``r`` (in ``ft``) and, if ``any_alpha``, the pseudo-angle ``w`` (float64).

    Args:
        x, y, z: hit positions (M,), one float dtype ``ft``; ``z`` may be empty when the axis is
            along +z and the layers come from ids (then it is neither checked nor used).
        counts: hits per event (n,) int64.
        p0, e1, e2: (n, 3) impact point and frame vectors, already in ``ft``.
        along_z: every axis is +z: ``u = x - x0``, ``v = y - y0`` (no products: keeps signed zeros).
        any_alpha: compute ``w`` (else ``w_out`` is left as it is).
        check: verify every position and energy finite and energy >= ``min_energy``.
        energy: hit energies (M,).
        r_out: (M,) ``ft``; w_out: (M,) float64 outputs.

    Returns:
        False when ``check`` found an invalid hit, else True.
    """
    has_z = len(z) > 0
    bad = 0
    start = 0
    for ev in range(len(counts)):
        stop = start + counts[ev]
        x0, y0, z0 = p0[ev, 0], p0[ev, 1], p0[ev, 2]
        a0, a1, a2 = e1[ev, 0], e1[ev, 1], e1[ev, 2]
        b0, b1, b2 = e2[ev, 0], e2[ev, 1], e2[ev, 2]
        if check:  # branch-free and without a floating-point dependency: v - v is 0 iff v is finite
            for i in range(start, stop):
                ei = energy[i]
                nan = (x[i] - x[i]) + (y[i] - y[i]) + (ei - ei)
                if has_z:
                    nan = nan + (z[i] - z[i])
                bad |= (nan != 0) | (ei < min_energy)
        for i in range(start, stop):
            if along_z:
                u = x[i] - x0
                v = y[i] - y0
            else:
                rx = x[i] - x0
                ry = y[i] - y0
                rz = z[i] - z0
                u = rx * a0
                u = u + ry * a1
                u = u + rz * a2
                v = rx * b0
                v = v + ry * b1
                v = v + rz * b2
            r = u * u
            r = r + v * v
            r_out[i] = math.sqrt(r)
            if any_alpha:  # as fastsim.data.voxelise._pseudo_angle, operation by operation
                u64, v64 = np.float64(u), np.float64(v)
                den = abs(u64) + abs(v64)
                t = u64 / den
                w = 1.0 - t if (v64 > 0) | ((v64 == 0) & (u64 >= 0)) else t - 1.0
                zero = -2.0 if math.copysign(1.0, u64) < 0 else 0.0  # u = v = 0: arctan2(±0, ±0)
                w_out[i] = zero if den == 0 else w
        start = stop
    return bad == 0


@njit(nogil=True, cache=True, error_model="numpy")
def bin_and_deposit(
    z, rows_in, use_rows, r, w, any_alpha, counts, energy,
    z_lo, z_inv_h, z_n_cells, z_next, z_below, z_above,
    r_lo, r_inv_h, r_n_cells, r_stride, r_next, r_below, r_above,
    a_lo, a_inv_h, a_n_cells, a_stride, a_next, a_below, a_above,
    n_voxels, showers, outside, scratch,
):  # fmt: skip
    """Layer, r bin and α bin of each hit, and the energies summed into the events' voxels.

    Args:
        z: hit z (M,) when the layer comes from it (``use_rows`` False); rows_in: layer rows (M,)
            int64 when ``use_rows``.
        r, w: from :func:`frame_pass` (``w`` unused unless ``any_alpha``).
        counts: hits per event (n,); energy: (M,) MeV.
        z_*, r_*, a_*: the grid tables (:func:`fastsim.data.voxelise._grid_tables`) of the layer
            boundaries (value: the row), of the radial lookup (``r_stride`` cells a row; value:
            layer offset + r bin, or n_voxels outside) and of the α lookup (value: α bin × n_r).
        n_voxels: V; showers: (n, V) float32 output rows; outside: (n,) float64 output.
        scratch: (V + 1,) float64 zeros (left zeroed).

    Returns:
        ``(n_outside, e_sum)``: hits outside the geometry, and the float64 sum of the hit
        energies in hit order.
    """
    hit = 0
    n_out = 0
    e_sum = 0.0
    for ev in range(len(counts)):
        for _ in range(counts[ev]):
            if use_rows:
                row = rows_in[hit]
            else:
                row = _grid_value(np.float64(z[hit]), z_lo, z_inv_h, z_n_cells, 0, z_next, z_below, z_above)
            k = _grid_value(
                np.float64(r[hit]), r_lo, r_inv_h, r_n_cells, row * r_stride, r_next, r_below, r_above
            )
            if any_alpha:
                ab = _grid_value(w[hit], a_lo, a_inv_h, a_n_cells, row * a_stride, a_next, a_below, a_above)
                k = k + ab * (k < n_voxels)  # outside stays outside
            n_out += k == n_voxels
            ef = np.float64(energy[hit])
            e_sum += ef
            scratch[k] += ef
            hit += 1
        for j in range(n_voxels):
            showers[ev, j] = np.float32(scratch[j])
            scratch[j] = 0.0
        outside[ev] = scratch[n_voxels]
        scratch[n_voxels] = 0.0
    return n_out, e_sum


@njit(nogil=True, cache=True, error_model="numpy")
def voxelise_blocks(
    bounds, offsets, x, y, z, counts, p0, e1, e2, along_z, any_alpha, check, min_energy, energy, rows_in, use_rows,
    z_lo, z_inv_h, z_n_cells, z_next, z_below, z_above,
    r_lo, r_inv_h, r_n_cells, r_stride, r_next, r_below, r_above,
    a_lo, a_inv_h, a_n_cells, a_stride, a_next, a_below, a_above,
    n_voxels, showers, outside, r_buf, w_buf, scratch, n_out, e_sum,
):  # fmt: skip
    """:func:`frame_pass` then :func:`bin_and_deposit` on each block of events, in one call.

    One call per chunk (or per thread's share of its blocks) instead of two per block: a thread
    voxelising beside the read-ahead thread then needs the GIL once, not ~100 times per chunk
    (each time waiting up to the interpreter's switch interval while the reader holds it).

    Args:
        bounds: (B + 1,) first event of each block, then the end; offsets: (n + 1,) first hit of
            each event. Events, hits, ``counts``, ``p0``, ``e1``, ``e2``, ``rows_in`` (if
            ``use_rows``), ``showers`` and ``outside`` are the whole chunk's; ``z`` may be empty.
        r_buf, w_buf: work arrays of at least the largest block's hits (``w_buf`` may be empty
            unless ``any_alpha``); scratch: (V + 1,) float64 zeros (left zeroed).
        n_out, e_sum: (B,) outputs: hits outside the geometry and float64 hit-energy sum per block.
        The other arguments are those of :func:`frame_pass` and :func:`bin_and_deposit`.

    Returns:
        False when ``check`` found an invalid hit (the remaining blocks are not done), else True.
    """
    has_z = len(z) > 0
    for b in range(len(bounds) - 1):
        s, t = bounds[b], bounds[b + 1]
        h0, h1 = offsets[s], offsets[t]
        m = h1 - h0
        zb = z[h0:h1] if has_z else z
        r = r_buf[:m]
        w = w_buf[:m] if any_alpha else w_buf[:0]
        ok = frame_pass(
            x[h0:h1], y[h0:h1], zb, counts[s:t], p0[s:t], e1[s:t], e2[s:t], along_z, any_alpha, check, min_energy,
            energy[h0:h1], r, w,
        )  # fmt: skip
        if not ok:
            return False
        rows = rows_in[h0:h1] if use_rows else rows_in
        o, e = bin_and_deposit(
            zb, rows, use_rows, r, w, any_alpha, counts[s:t], energy[h0:h1],
            z_lo, z_inv_h, z_n_cells, z_next, z_below, z_above,
            r_lo, r_inv_h, r_n_cells, r_stride, r_next, r_below, r_above,
            a_lo, a_inv_h, a_n_cells, a_stride, a_next, a_below, a_above,
            n_voxels, showers[s:t], outside[s:t], scratch,
        )  # fmt: skip
        n_out[b] = o
        e_sum[b] = e
    return True
