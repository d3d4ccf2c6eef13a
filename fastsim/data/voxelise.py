"""Hits -> voxels in the shower frame: pure numpy, arrays in and arrays out.

The physics of turning simulated energy deposits ("hits") into a CaloChallenge shower vector lives
here; reading the hits from files lives in :mod:`fastsim.data.root`. Everything is vectorised over
the flat hit arrays of a chunk of events (no Python loop over events or hits), with the hits of
event ``i`` stored contiguously and ``counts[i]`` giving how many there are (the awkward/ROOT
"jagged" layout).

Shower frame
------------
A hit at position ``p`` (mm, detector frame) is assigned

* a **layer** from its detector ``z`` and the layer boundaries ``z_edges`` (mm, increasing, one per
  boundary of the used layers, so ``len(z_edges) == geometry.n_layers + 1``; layer ``i`` covers
  ``z_edges[i] <= z < z_edges[i+1]``), or from a per-hit layer id; the layers are the physical
  planes of the detector, so a tilted shower still crosses them at fixed ``z``;
* a **radius** ``r`` and **angle** ``α`` around the shower axis, the line through the impact point
  ``p0`` along the unit direction ``d``. The hit is projected onto the plane perpendicular to ``d``:
  ``u = (p - p0)·e1``, ``v = (p - p0)·e2``, ``r = sqrt(u² + v²)``, ``α = atan2(v, u)``.

The reference direction ``e1`` (where ``α = 0``) is the detector x axis projected onto the plane
perpendicular to ``d`` and normalised; ``e2 = d × e1`` completes a right-handed frame, so for the
default ``d = +z`` the frame is the detector's own (``e1 = x̂``, ``e2 = ŷ``, ``α = atan2(y - y0,
x - x0)``: the CaloChallenge convention). When ``d`` is within ~8° of the x axis
(``|d·x̂| > 0.99``) the projection of x̂ is too short to be a stable reference and the detector
y axis is projected instead.

Binning follows :meth:`fastsim.geometry.Geometry.voxel_index`: radial bins
``r_edges[k] <= r < r_edges[k+1]``, α bins dividing ``[-π, π)`` evenly (``α = π`` wraps to the
first bin). ``r`` is computed in the hits' own precision (float32 hits stay float32: half the
memory traffic) and compared exactly with the float64 edges. Hits outside (no layer, ``r`` below
the first or beyond the last edge) are counted with their energy, never dropped silently: per
event, voxel sum + outside energy = hit energy sum.

The α bin is found without computing α (no ``arctan2``): the pseudo-angle
``w = 1 - u/(|u| + |v|)`` for α in ``[0, π)`` (``v > 0``, or ``v = 0`` and ``u >= 0``), else
``w = u/(|u| + |v|) - 1``, grows with α from -2 (α = -π) through 0 (α = 0) to 2, so the α bin is
the number of bin edges ``θ_k = -π + 2πk/n_alpha`` (k >= 1) whose own ``w`` is <= the hit's:
an exact :class:`EdgeLookup` per layer, in float64 from the hit's ``u``, ``v``. This agrees with
``Geometry.voxel_index`` (float64 ``arctan2``) except for hits within ~1e-15 rad of a bin edge,
where both are at the limit of float64 (``tests/test_voxelise.py`` checks 1e-12 rad); edges on
the axes (θ = 0, ±π/2) are exact, so hits on the axes land in the exact bin, and at ``u = v = 0``
α is ``arctan2``'s (0, or π when ``u`` is -0). Before, α came from numpy's float32 ``arctan2``
of float32 ``u``, ``v`` (its own ~1e-7 rad of rounding at the edges).

Speed: binary search (``np.searchsorted``) costs ~15 ns per hit here, more than reading the hit
from an LZ4-compressed TTree; :class:`EdgeLookup` replaces it by an exact uniform-grid lookup, and
:func:`voxelise_hits` works through cache-sized blocks of events (optionally in threads). With
numba installed (``pip install 'fastsim[fast]'``), two compiled loops per block
(:mod:`fastsim.data._voxelise_numba`) replace the numpy passes, with bit-identical results;
without it the numpy passes run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from fastsim.errors import FastsimError
from fastsim.geometry import Geometry

__all__ = [
    "InvalidHitsError",
    "VoxeliseStats",
    "EdgeLookup",
    "VoxelTable",
    "voxel_table",
    "shower_frame_basis",
    "transverse_coordinates",
    "layer_from_z",
    "layer_from_id",
    "voxel_indices",
    "cell_voxel_indices",
    "deposit",
    "voxelise_hits",
]

#: above this |d·x̂| the x axis is too close to the shower axis to serve as the α reference
_X_REF_LIMIT = 0.99
#: largest lookup grid (cells × rows) before falling back to plain ``np.searchsorted``
_MAX_GRID = 1 << 22
#: hits per block in :func:`voxelise_hits` (a few MB of temporaries: cache-sized)
_BLOCK_HITS = 1 << 16


class InvalidHitsError(FastsimError):
    """Raised by :func:`voxelise_hits` (``min_energy`` given) when hits are non-finite or too
    negative; the readers then find and flag the offending events."""


@dataclass
class VoxeliseStats:
    """Bookkeeping of one voxelised chunk (or, summed with ``+``, of a whole run).

    Attributes:
        n_events: events voxelised.
        n_hits: hits seen in those events.
        n_hits_outside: hits that fell outside the geometry (no layer or r outside the edges).
        e_hits: total hit energy in MeV.
        e_outside: energy of the outside hits in MeV (``e_hits - e_outside`` is in the voxels).
        n_skipped: events dropped as invalid before voxelising (see the readers' ``bad="skip"``).
        skipped_reasons: how many events were skipped for each reason.
    """

    n_events: int = 0
    n_hits: int = 0
    n_hits_outside: int = 0
    e_hits: float = 0.0
    e_outside: float = 0.0
    n_skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: VoxeliseStats) -> VoxeliseStats:
        reasons = dict(self.skipped_reasons)
        for k, v in other.skipped_reasons.items():
            reasons[k] = reasons.get(k, 0) + v
        return VoxeliseStats(
            self.n_events + other.n_events,
            self.n_hits + other.n_hits,
            self.n_hits_outside + other.n_hits_outside,
            self.e_hits + other.e_hits,
            self.e_outside + other.e_outside,
            self.n_skipped + other.n_skipped,
            reasons,
        )

    @property
    def outside_fraction(self) -> float:
        """Fraction of the hit energy that fell outside the geometry."""
        return self.e_outside / self.e_hits if self.e_hits > 0 else 0.0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = (
            f"{self.n_events} events, {self.n_hits} hits; outside the geometry: {self.n_hits_outside} hits, "
            f"{self.e_outside:.6g} MeV of {self.e_hits:.6g} MeV ({100 * self.outside_fraction:.3g}%)"
        )
        if self.n_skipped:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped_reasons.items()))
            text += f"; skipped {self.n_skipped} invalid events ({why})"
        return text


# ---------------------------------------------------------------------------------------- engines
_ENGINES = ("auto", "numba", "numpy")


@lru_cache(maxsize=1)
def compiled_kernels():
    """The compiled module :mod:`fastsim.data._voxelise_numba`, or None without numba."""
    try:
        from fastsim.data import _voxelise_numba
    except ImportError:
        return None
    return _voxelise_numba


def use_compiled(engine: str) -> bool:
    """Whether ``engine`` (``"auto"``, ``"numba"``, ``"numpy"``) runs the compiled loops here."""
    if engine not in _ENGINES:
        raise FastsimError(f"engine must be one of {', '.join(_ENGINES)}, got {engine!r}")
    if engine == "numpy":
        return False
    if compiled_kernels() is None:
        if engine == "numba":
            raise FastsimError("engine='numba' needs numba (pip install 'fastsim[fast]')")
        return False
    return True


# ---------------------------------------------------------------------------------------- lookups
def _ceil_to(dtype: np.dtype, values: np.ndarray) -> np.ndarray:
    """Smallest ``dtype`` numbers >= values, so ``x >= result`` equals ``x >= values`` for x of dtype."""
    out = values.astype(dtype)
    low = out.astype(np.float64) < values
    out[low] = np.nextafter(out[low], dtype.type(np.inf))
    return out


class EdgeLookup:
    """Exact ``np.searchsorted(edges[row], x, side="right")`` for many queries, row by row.

    Binary search costs ~15 ns per query here; this replaces it by a uniform grid of spacing
    ``h = (smallest edge spacing) / 2`` starting one cell below the lowest edge. The query's cell is
    computed with a small downward bias so that it is the true cell or the one below, never above;
    the cell's lower grid point has a tabulated count of edges at or below it, and at most one edge
    lies between that point and the query (they are less than 2h apart), so one comparison with the
    tabulated next edge makes the count exact. Comparisons are done in the query dtype against
    edges rounded *up* to that dtype, which is exact too. Rows (one per layer) may have different
    edges; ``values`` optionally maps each row's count to an output value with the same gathers.

    Args:
        edges: list of 1-D strictly increasing edge arrays, one per row.
        values: optional list (one per row) of int arrays of length ``len(edges[row]) + 1``:
            the result is ``values[row][count]`` instead of the count.
    """

    #: downward bias of the computed cell, in cells; must exceed the rounding error (checked)
    _BIAS = 0.05

    def __init__(self, edges: list[np.ndarray] | list[tuple[float, ...]], values: list[np.ndarray] | None = None) -> None:
        rows = [np.asarray(e, dtype=np.float64) for e in edges]
        if not rows or any(r.ndim != 1 or len(r) == 0 for r in rows):
            raise FastsimError("EdgeLookup needs at least one non-empty edge list per row")
        if any(not np.all(np.isfinite(r)) or np.any(np.diff(r) <= 0) for r in rows):
            raise FastsimError("edges must be finite and strictly increasing")
        if values is None:
            values = [np.arange(len(r) + 1, dtype=np.int64) for r in rows]
        if len(values) != len(rows) or any(len(v) != len(r) + 1 for v, r in zip(values, rows, strict=True)):
            raise FastsimError("EdgeLookup values need len(edges[row]) + 1 entries per row")
        self.rows = rows
        self.values = np.concatenate([np.asarray(v, dtype=np.int64) for v in values])
        self._identity = len(rows) == 1 and np.array_equal(self.values, np.arange(len(self.values)))
        self.value_start = np.cumsum([0] + [len(v) for v in values])[:-1]
        gaps = [np.diff(r).min() for r in rows if len(r) > 1]
        first = float(min(r[0] for r in rows))
        last = float(max(r[-1] for r in rows))
        h = (min(gaps) if gaps else max(last - first, abs(first), 1.0)) / 2.0
        self.lo = first - h  # cell 0 lies below every edge
        n_cells = int(math.ceil((last - self.lo) / h)) + 1
        self.use_grid = n_cells * len(rows) <= _MAX_GRID
        self.n_cells = n_cells
        self.stride = n_cells + 1
        if not self.use_grid:
            return
        self.h = h
        grid = self.lo + np.arange(n_cells + 1) * h  # lower point of each cell; the last is > every edge
        cnt, nxt = [], []
        for r, start in zip(rows, self.value_start, strict=True):
            c = np.searchsorted(r, grid, side="right")  # edges <= grid point
            cnt.append(start + c)
            nxt.append(np.concatenate([r, [np.inf]])[c])  # smallest edge > grid point, or +inf
        self.cell_value = np.concatenate(cnt).astype(np.int64)
        self._next64 = np.concatenate(nxt)
        self._next32 = _ceil_to(np.dtype(np.float32), self._next64)
        # float32 cells are safe while the worst rounding error (in cells) stays below the bias
        eps32 = float(np.finfo(np.float32).eps)
        self._f32_ok = 4 * eps32 * (abs(self.lo) / h + 3 * n_cells + 3) < self._BIAS / 2

    def row_base(self, row: np.ndarray) -> np.ndarray:
        """Offsets to pass as ``row_base`` for rows ``row`` (int array)."""
        return np.asarray(row, dtype=np.int64) * self.stride

    def __call__(self, x: np.ndarray, row: np.ndarray | None = None, row_base: np.ndarray | None = None) -> np.ndarray:
        """Count of edges of ``row`` that are <= x (or ``values[row][count]``).

        Args:
            x: finite query values, shape (M,), float32 or float64.
            row: row of each query, int array (M,) in ``[0, n_rows)``; None for row 0.
            row_base: ``row_base(row)`` precomputed (saves a pass when reused); overrides ``row``.

        Returns:
            int64 array (M,): as ``np.searchsorted(edges[row], x, side="right")`` (mapped through
            ``values`` if given).
        """
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        if not self.use_grid:
            rows = np.zeros(len(x), np.int64) if row is None and row_base is None else (
                row if row is not None else row_base // self.stride)
            out = np.empty(len(x), dtype=np.int64)
            for i, r in enumerate(self.rows):
                sel = rows == i
                out[sel] = self.value_start[i] + np.searchsorted(r, x[sel], side="right")
            return self.values[out]
        if x.dtype == np.float32 and not self._f32_ok:
            x = x.astype(np.float64)
        ft = x.dtype.type
        # cell = floor((x - lo)/h - bias), clipped to the grid: the true cell or one below
        c = np.subtract(x, ft(self.lo))
        c *= ft(1.0 / self.h)
        c -= ft(self._BIAS)
        np.clip(c, 0, self.n_cells, out=c)
        cell = c.astype(np.int64)
        if row_base is None and row is not None and len(self.rows) > 1:
            row_base = self.row_base(row)
        if row_base is not None:
            cell += row_base
        nxt = np.take(self._next32 if ft is np.float32 else self._next64, cell)
        count = np.take(self.cell_value, cell)
        count += x >= nxt
        return count if self._identity else np.take(self.values, count)


@dataclass(frozen=True)
class VoxelTable:
    """Tables of a geometry for vectorised indexing, built once per geometry.

    Layer *rows* are indexed ``0..n_layers+1``: row 0 and row ``n_layers + 1`` are "no layer"
    (below/above, unknown id), row ``i + 1`` is layer position ``i``. The radial lookup maps a
    row's edge count straight to ``layer offset + r bin`` (or ``n_voxels`` outside), so the
    inside test costs no extra pass.
    """

    geometry: Geometry
    r_lookup: EdgeLookup  # rows as above; values: offset + r bin, or n_voxels
    r_row_base: np.ndarray  # (L+2,) int64 r_lookup.row_base of each row
    n_r: np.ndarray  # (L+2,) int64 radial bins per row (0 for the no-layer rows)
    any_alpha: bool  # some layer has more than one α bin
    offset: np.ndarray  # (L+2,) int64 first voxel of each row (n_voxels for no-layer rows)
    n_cells: np.ndarray  # (L+2,) int64 voxels per row (0 for no-layer rows)
    id_to_row: np.ndarray  # (max_id + 1,) int64 row of each layer id (0 if the id is not used)
    a_lookup: EdgeLookup  # rows as above, edges: the α bin boundaries' pseudo-angles w; values: α bin × n_r
    a_row_base: np.ndarray  # (L+2,) int64 a_lookup.row_base of each row


@lru_cache(maxsize=16)
def voxel_table(geometry: Geometry) -> VoxelTable:
    """The (cached) :class:`VoxelTable` of ``geometry``."""
    layers = geometry.layers
    n_vox = geometry.n_voxels
    edges = [np.asarray(layers[0].r_edges)] + [np.asarray(ly.r_edges) for ly in layers] + [np.asarray(layers[0].r_edges)]
    values = [np.full(len(edges[0]) + 1, n_vox)]
    for i, ly in enumerate(layers):
        v = np.full(ly.n_r + 2, n_vox, dtype=np.int64)  # count 0 (below) and n_r + 1 (beyond): outside
        v[1:-1] = geometry.layer_offsets[i] + np.arange(ly.n_r)
        values.append(v)
    values.append(np.full(len(edges[-1]) + 1, n_vox))
    lookup = EdgeLookup(edges, values)
    n_rows = len(layers) + 2
    n_r = np.array([0] + [ly.n_r for ly in layers] + [0], dtype=np.int64)
    n_alpha = [1] + [ly.n_alpha for ly in layers] + [1]
    ids = [ly.id for ly in layers]
    id_to_row = np.zeros(max(max(ids), 0) + 1, dtype=np.int64)
    for pos, lid in enumerate(ids):
        if lid >= 0:
            id_to_row[lid] = pos + 1
    offset = np.concatenate([[n_vox], geometry.layer_offsets[:-1], [n_vox]]).astype(np.int64)
    a_edges, a_values = [], []
    for n_a, n_rad in zip(n_alpha, n_r.tolist(), strict=True):
        # boundary k of n bins is θ = π m / n with m = 2k - n; on the axes cos and sin are exact
        cs = [(0.0, -1.0) if 2 * m == -n else (1.0, 0.0) if m == 0 else (0.0, 1.0) if 2 * m == n
              else (math.cos(math.pi * m / n), math.sin(math.pi * m / n))
              for n in [n_a] for m in range(2 - n, n, 2)]  # fmt: skip
        w = _pseudo_angle(np.array([c for c, _ in cs]), np.array([sn for _, sn in cs]))
        a_edges.append(w if len(w) else np.array([3.0]))  # one bin: an edge no w reaches (w < 2)
        a_values.append(np.arange(len(a_edges[-1]) + 1) * n_rad if len(w) else np.zeros(2, dtype=np.int64))
    a_lookup = EdgeLookup(a_edges, a_values)
    return VoxelTable(
        geometry=geometry,
        r_lookup=lookup,
        r_row_base=lookup.row_base(np.arange(n_rows)),
        n_r=n_r,
        any_alpha=any(ly.n_alpha > 1 for ly in layers),
        offset=offset,
        n_cells=np.array([0] + [ly.n_voxels for ly in layers] + [0], dtype=np.int64),
        id_to_row=id_to_row,
        a_lookup=a_lookup,
        a_row_base=a_lookup.row_base(np.arange(n_rows)),
    )


def _pseudo_angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pseudo-angle ``w`` in [-2, 2) of the directions (u, v), float64 (M,): increasing with
    α = atan2(v, u) in [-π, π), no ``arctan2`` needed (see the module docstring).

    ``t = u / (|u| + |v|)``; ``w = 1 - t`` for α in [0, π) (``v > 0``, or ``v = 0`` and ``u >= 0``),
    else ``w = t - 1``. At ``u = v = 0``, ``w`` is that of ``arctan2(±0, ±0)``: 0, or -2 (α = -π,
    the first bin) when ``u`` is -0. The compiled loop computes the same operations in the same order.
    """
    u = np.asarray(u).astype(np.float64, copy=False)
    v = np.asarray(v).astype(np.float64, copy=False)
    den = np.abs(u)
    den += np.abs(v)
    with np.errstate(invalid="ignore"):
        t = u / den
    upper = (v > 0) | ((v == 0) & (u >= 0))
    w = np.where(upper, 1.0 - t, t - 1.0)
    zero = den == 0
    if zero.any():
        w[zero] = np.where(np.signbit(u[zero]), -2.0, 0.0)
    return w


def _grid_tables(lookup: EdgeLookup) -> tuple:
    """An EdgeLookup's grid as the compiled loops take it: ``(lo, 1/h, n_cells, stride, next edge,
    value below it, value at or above it)`` per cell (rows one after the other, ``stride`` cells
    each); past the last edge (next edge +inf) both values are equal."""
    below = lookup.values[lookup.cell_value]
    last = np.minimum(lookup.cell_value + 1, len(lookup.values) - 1)
    above = np.where(np.isfinite(lookup._next64), lookup.values[last], below)
    return lookup.lo, 1.0 / lookup.h, float(lookup.n_cells), lookup.stride, lookup._next64, below, above


# ---------------------------------------------------------------------------------------- frame
def shower_frame_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal shower frame of each event (see the module docstring for the α reference).

    Args:
        direction: shower axis directions, shape (n, 3), any non-zero length.

    Returns:
        ``(d, e1, e2)``, each float64 of shape (n, 3): the unit axis, the α = 0 reference direction
        (detector x̂ projected perpendicular to ``d``; ŷ if ``|d·x̂| > 0.99``) and ``e2 = d × e1``.

    Raises:
        FastsimError: a direction is zero or not finite.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(-1, 3)
    norm = np.linalg.norm(d, axis=1)
    if not np.all(np.isfinite(norm) & (norm > 0)):
        raise FastsimError("shower directions must be finite and non-zero")
    d = d / norm[:, None]
    ref = np.zeros_like(d)
    use_y = np.abs(d[:, 0]) > _X_REF_LIMIT
    ref[~use_y, 0] = 1.0
    ref[use_y, 1] = 1.0
    e1 = ref - np.sum(ref * d, axis=1, keepdims=True) * d
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    return d, e1, e2


def transverse_coordinates(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray | None,
    counts: np.ndarray,
    impact: np.ndarray,
    direction: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hit coordinates in the plane perpendicular to each event's shower axis.

    Args:
        x, y, z: hit positions in mm, detector frame, each shape (M,) (the hits of event 0 first);
            ``z`` may be None when every direction is +z (it does not enter then).
        counts: hits per event, shape (n,), summing to M.
        impact: impact point ``p0`` of each event in mm, shape (n, 3).
        direction: shower axis of each event, shape (n, 3); None means +z for all.

    Returns:
        ``(u, v)`` in mm, each shape (M,), in the dtype of ``x`` (float32 stays float32):
        ``u = (p - p0)·e1``, ``v = (p - p0)·e2`` with the basis of :func:`shower_frame_basis`.
    """
    counts = np.asarray(counts, dtype=np.int64)
    impact = np.asarray(impact, dtype=np.float64).reshape(-1, 3)
    ft = np.result_type(x.dtype, np.float32)
    along_z = direction is None
    if not along_z:
        d = np.asarray(direction, dtype=np.float64).reshape(-1, 3)
        along_z = bool(np.all((d[:, 0] == 0) & (d[:, 1] == 0) & (d[:, 2] > 0)))
    if along_z:
        # e1 = x̂, e2 = ŷ exactly: the general formula below reduces to this, with fewer passes
        u = x - np.repeat(impact[:, 0].astype(ft), counts)
        v = y - np.repeat(impact[:, 1].astype(ft), counts)
        return u, v
    if z is None:
        raise FastsimError("a tilted shower axis needs the hits' z coordinates")
    _, e1, e2 = shower_frame_basis(d)
    # relative positions first (not p·e - p0·e), so hits far from the origin keep their precision
    rx = x - np.repeat(impact[:, 0].astype(ft), counts)
    ry = y - np.repeat(impact[:, 1].astype(ft), counts)
    rz = z - np.repeat(impact[:, 2].astype(ft), counts)
    u = rx * np.repeat(e1[:, 0].astype(ft), counts)
    u += ry * np.repeat(e1[:, 1].astype(ft), counts)
    u += rz * np.repeat(e1[:, 2].astype(ft), counts)
    v = rx * np.repeat(e2[:, 0].astype(ft), counts)
    v += ry * np.repeat(e2[:, 1].astype(ft), counts)
    v += rz * np.repeat(e2[:, 2].astype(ft), counts)
    return u, v


def layer_from_z(z: np.ndarray, z_edges: np.ndarray | EdgeLookup) -> np.ndarray:
    """Layer position of each hit from its detector z.

    Args:
        z: hit z in mm, shape (M,).
        z_edges: layer boundaries in mm, increasing, shape (n_layers + 1,) (or their EdgeLookup).

    Returns:
        int64 array (M,): layer position ``i`` with ``z_edges[i] <= z < z_edges[i+1]``, else -1
        below the first boundary or ``n_layers`` at/after the last.
    """
    lookup = z_edges if isinstance(z_edges, EdgeLookup) else EdgeLookup([z_edges])
    return lookup(z) - 1


def _rows_from_ids(layer_id: np.ndarray, tab: VoxelTable) -> np.ndarray:
    """Layer rows (see :class:`VoxelTable`) of layer ids; unknown ids give row 0 (no layer)."""
    padded = np.concatenate([[0], tab.id_to_row, [0]])
    ids = np.clip(np.asarray(layer_id).astype(np.int64, copy=False), -1, len(tab.id_to_row))
    return np.take(padded, ids + 1)


def _rows_from_positions(layer: np.ndarray, n_layers: int) -> np.ndarray:
    layer = np.asarray(layer, dtype=np.int64)
    return np.where((layer >= 0) & (layer < n_layers), layer + 1, 0)


def layer_from_id(layer_id: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Layer position of each hit from a per-hit layer id (the geometry's ``Layer.id``).

    Args:
        layer_id: integer layer ids, shape (M,). Ids of unused layers (or unknown ids) are outside.
        geometry: the voxel geometry.

    Returns:
        int64 array (M,): layer position 0..n_layers-1, or -1 where the id is not a used layer.
    """
    return _rows_from_ids(layer_id, voxel_table(geometry)) - 1


def _voxels_from_rows(tab: VoxelTable, row: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Voxel index (``n_voxels`` outside) from layer rows and transverse coordinates (mm)."""
    geometry = tab.geometry
    r = u * u
    r += v * v
    np.sqrt(r, out=r)
    # layer offset + r bin, or n_voxels (below the first / beyond the last edge, or no layer)
    index = tab.r_lookup(r, row_base=np.take(tab.r_row_base, row))
    if tab.any_alpha:
        # α bin × n_r of the row; added to the inside hits only
        ab = tab.a_lookup(_pseudo_angle(u, v), row_base=np.take(tab.a_row_base, row))
        index += ab
        np.minimum(index, geometry.n_voxels, out=index)  # outside stays outside
    return index


def voxel_indices(geometry: Geometry, layer: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Flat voxel index of hits given their layer position and shower-frame coordinates.

    Same binning as :meth:`Geometry.voxel_index` with ``r = sqrt(u² + v²)`` and
    ``α = atan2(v, u)``, computed in the dtype of ``u`` (float32 stays float32) without a loop
    over layers.

    Args:
        geometry: the voxel geometry.
        layer: layer position of each hit, int array (M,); anything outside ``[0, n_layers)`` is
            outside the geometry.
        u, v: finite transverse coordinates in mm, each shape (M,).

    Returns:
        int64 array (M,): the voxel index in ``[0, n_voxels)``, or ``n_voxels`` for hits outside.
    """
    tab = voxel_table(geometry)
    return _voxels_from_rows(tab, _rows_from_positions(layer, geometry.n_layers), np.asarray(u), np.asarray(v))


def _cells_from_rows(tab: VoxelTable, row: np.ndarray, cell: np.ndarray) -> np.ndarray:
    cell = np.asarray(cell).astype(np.int64, copy=False)
    ok = (cell >= 0) & (cell < np.take(tab.n_cells, row))
    return np.where(ok, np.take(tab.offset, row) + cell, tab.geometry.n_voxels)


def cell_voxel_indices(geometry: Geometry, layer: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Flat voxel index of hits given as (layer position, cell within the layer).

    Args:
        geometry: the voxel geometry.
        layer: layer position of each hit, int array (M,).
        cell: index within the layer, ``alpha_bin * n_r + r_bin`` (r fastest), int array (M,).

    Returns:
        int64 array (M,): voxel index, or ``n_voxels`` where layer or cell is out of range.
    """
    tab = voxel_table(geometry)
    return _cells_from_rows(tab, _rows_from_positions(layer, geometry.n_layers), cell)


def deposit(
    voxel: np.ndarray, energy: np.ndarray, counts: np.ndarray, n_voxels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum hit energies into dense per-event voxel vectors with one ``np.bincount``.

    Args:
        voxel: voxel index of each hit in ``[0, n_voxels]`` (``n_voxels`` = outside), shape (M,).
        energy: hit energies in MeV, shape (M,).
        counts: hits per event, shape (n,).
        n_voxels: voxels per shower V.

    Returns:
        ``(showers, outside)``: float64 (n, V) voxel energies in MeV and float64 (n,) energy of each
        event's outside hits in MeV (views of one (n, V+1) array). Sums are accumulated in float64.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    stride = n_voxels + 1  # one extra column per event collects the outside energy
    key = np.repeat(np.arange(n, dtype=np.int64) * stride, counts)
    key += voxel
    dense = np.bincount(key, weights=energy, minlength=n * stride).reshape(n, stride)
    return dense[:, :n_voxels], dense[:, n_voxels]


def voxelise_hits(
    geometry: Geometry,
    counts: np.ndarray,
    energy: np.ndarray,
    *,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    z: np.ndarray | None = None,
    layer_id: np.ndarray | None = None,
    cell: np.ndarray | None = None,
    z_edges: np.ndarray | EdgeLookup | None = None,
    impact: np.ndarray | None = None,
    direction: np.ndarray | None = None,
    threads: int = 1,
    min_energy: float | None = None,
    engine: str = "auto",
) -> tuple[np.ndarray, VoxeliseStats]:
    """Voxelise the hits of ``n`` events onto ``geometry`` in each event's shower frame.

    Positions come either as coordinates (``x``, ``y`` and the layer from ``z`` + ``z_edges`` or
    from ``layer_id``) or as ``layer_id`` + ``cell`` (hits already binned by the simulation).

    Args:
        geometry: the voxel geometry (V voxels).
        counts: hits per event, int shape (n,), summing to M.
        energy: hit energies in MeV, shape (M,), finite and >= 0 (the readers check).
        x, y, z: hit positions in mm, detector frame, each shape (M,).
        layer_id: per-hit layer id (``Layer.id`` of the geometry), int shape (M,).
        cell: per-hit index within the layer (``alpha_bin * n_r + r_bin``), int shape (M,).
        z_edges: layer boundaries in mm, shape (n_layers + 1,), when the layer comes from ``z``.
        impact: impact point per event in mm, shape (n, 3); None means the origin.
        direction: shower axis per event, shape (n, 3); None means +z.
        threads: worker threads for the blocks of hits (numpy releases the GIL in most passes);
            the result does not depend on it.
        min_energy: if given (MeV), check each block before binning it: every position and energy
            finite and every energy >= ``min_energy``, else raise :class:`InvalidHitsError`. The
            check runs on cache-resident blocks, so it costs far less than separate passes.
        engine: ``"numba"`` (compiled loops, :mod:`fastsim.data._voxelise_numba`), ``"numpy"``
            (numpy passes) or ``"auto"`` (numba when installed). Both give identical results;
            positions of mixed float dtypes and ``cell`` input always take the numpy passes.

    Returns:
        ``(showers, stats)``: float32 (n, V) voxel energies in MeV, and the chunk's
        :class:`VoxeliseStats` (hits and energy outside the geometry).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    n_hits = int(counts.sum())
    energy = np.asarray(energy)
    if len(energy) != n_hits:
        raise FastsimError(f"{len(energy)} hit energies but the counts sum to {n_hits}")
    tab = voxel_table(geometry)
    if cell is not None:
        if layer_id is None:
            raise FastsimError("cell indices need a per-hit layer id")
    elif x is None or y is None:
        raise FastsimError("hit coordinates x and y are needed (or layer id + cell)")
    elif layer_id is None:
        if z is None or z_edges is None:
            raise FastsimError("the layer of a hit needs z and the layer z boundaries, or a layer id")
        if not isinstance(z_edges, EdgeLookup):
            if len(z_edges) != geometry.n_layers + 1:
                raise FastsimError(
                    f"{len(z_edges)} layer z boundaries given but geometry {geometry.name!r} has "
                    f"{geometry.n_layers} layers (needs {geometry.n_layers + 1})"
                )
            z_edges = EdgeLookup([z_edges])
    if impact is None:
        impact = np.zeros((n, 3))
    impact = np.asarray(impact, dtype=np.float64).reshape(n, 3)
    if direction is not None:
        direction = np.asarray(direction, dtype=np.float64).reshape(n, 3)
    compiled = _compiled_setup(geometry, engine, counts, energy, x, y, z, cell, z_edges, impact, direction)

    n_vox = geometry.n_voxels
    showers = np.empty((n, n_vox), dtype=np.float32)
    outside = np.empty(n, dtype=np.float64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    # blocks of whole events of about _BLOCK_HITS hits: every temporary stays in the CPU cache,
    # which makes the passes below ~3x faster than over a whole chunk at once
    # (block 0 starts at event 0 even when the first events have no hits: every row gets written)
    firsts = np.searchsorted(offsets, np.arange(_BLOCK_HITS, n_hits, _BLOCK_HITS), side="right") - 1
    bounds = np.unique(np.concatenate([[0], firsts, [n]])) if n else np.zeros(1, dtype=np.int64)

    def block(s: int, t: int) -> tuple[int, float]:
        """Voxelise events s..t-1 into their rows of ``showers``; return (outside hits, hit energy)."""
        hits = slice(offsets[s], offsets[t])
        e_block = energy[hits]
        # summed in hit order, as the compiled loop sums it (the totals agree to the last bit)
        e_sum = float(np.add.accumulate(e_block, dtype=np.float64)[-1]) if e_block.size else 0.0
        if min_energy is not None:
            # a float64 sum is non-finite iff some value is (no overflow from float32 values)
            total = e_sum
            for coord in (x, y, z):
                if coord is not None and coord.dtype.kind == "f":
                    total += coord[hits].sum(dtype=np.float64)
            if not np.isfinite(total) or (e_block.size and e_block.min() < min_energy):
                raise InvalidHitsError("non-finite hit values or negative hit energies")
        if cell is not None:
            voxel = _cells_from_rows(tab, _rows_from_ids(layer_id[hits], tab), cell[hits])  # type: ignore[index]
        else:
            zb = z[hits] if z is not None else None
            row = _rows_from_ids(layer_id[hits], tab) if layer_id is not None else z_edges(zb)  # type: ignore[misc]
            u, v = transverse_coordinates(
                x[hits], y[hits], zb, counts[s:t], impact[s:t],  # type: ignore[index]
                direction[s:t] if direction is not None else None,
            )
            voxel = _voxels_from_rows(tab, row, u, v)
        dense, out = deposit(voxel, energy[hits], counts[s:t], n_vox)
        showers[s:t] = dense
        outside[s:t] = out
        return int(np.count_nonzero(voxel == n_vox)), e_sum

    pairs = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    if compiled is not None:
        # one compiled call per thread for its run of consecutive blocks, not one per block
        rows_all = _rows_from_ids(layer_id, tab) if layer_id is not None else None
        groups = [g for g in np.array_split(np.arange(len(pairs)), max(1, min(threads, len(pairs)))) if len(g)]

        def run(g: np.ndarray) -> list[tuple[int, float]]:
            return compiled(bounds[g[0] : g[-1] + 2], offsets, rows_all, showers, outside, min_energy)

        work, items = run, groups
    else:
        work, items = (lambda st: [block(*st)]), pairs
    if threads > 1 and len(items) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fastsim-voxelise") as pool:
            done = list(pool.map(work, items))
    else:
        done = [work(item) for item in items]
    results = [r for part in done for r in part]  # (outside hits, hit energy) per block, in order
    n_outside = sum(r[0] for r in results)
    stats = VoxeliseStats(
        n_events=n,
        n_hits=n_hits,
        n_hits_outside=n_outside,
        e_hits=float(sum(r[1] for r in results)),
        e_outside=float(outside.sum()),
    )
    return showers, stats


def _compiled_setup(
    geometry: Geometry,
    engine: str,
    counts: np.ndarray,
    energy: np.ndarray,
    x: np.ndarray | None,
    y: np.ndarray | None,
    z: np.ndarray | None,
    cell: np.ndarray | None,
    z_edges: EdgeLookup | None,
    impact: np.ndarray,
    direction: np.ndarray | None,
):
    """The compiled blocks function of :func:`voxelise_hits`, or None where the numpy passes run.

    The returned ``run(bounds, offsets, rows, showers, outside, min_energy)`` does for each block
    of events ``bounds[i]..bounds[i+1]-1`` (hits from ``offsets``; layer rows ``rows`` of the whole
    chunk if they come from ids) what the numpy block does, with the same arithmetic in the same
    order, and returns ``[(n_outside, e_sum)]`` per block; it raises :class:`InvalidHitsError` as
    the numpy check does.
    """
    if not use_compiled(engine) or cell is not None or x is None or y is None:
        return None
    ft = np.result_type(x.dtype, np.float32)
    if x.dtype != ft or y.dtype != ft or (z is not None and z.dtype != ft):
        return None  # mixed precisions: numpy's casting rules, not re-implemented here
    tab = voxel_table(geometry)
    grids = (tab.r_lookup, tab.a_lookup) + ((z_edges,) if z_edges is not None else ())
    if not all(lookup.use_grid for lookup in grids):
        return None  # edges too fine for a lookup grid: the numpy passes' binary search
    kern = compiled_kernels()
    no_z = (0.0, 1.0, 0.0, 1, np.full(1, np.inf), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
    z_tables = _grid_tables(z_edges) if z_edges is not None else no_z
    z_tables = z_tables[:3] + z_tables[4:]  # one row: no stride
    r_tables, a_tables = _grid_tables(tab.r_lookup), _grid_tables(tab.a_lookup)
    any_alpha = tab.any_alpha
    n = len(impact)
    along_z = direction is None or bool(
        np.all((direction[:, 0] == 0) & (direction[:, 1] == 0) & (direction[:, 2] > 0))
    )
    if along_z:
        e1 = e2 = np.zeros((n, 3), dtype=ft)
    else:
        if z is None:
            raise FastsimError("a tilted shower axis needs the hits' z coordinates")
        _, b1, b2 = shower_frame_basis(direction)
        e1, e2 = b1.astype(ft), b2.astype(ft)
    p0 = impact.astype(ft)
    z_all = z if z is not None else np.zeros(0, dtype=ft)
    no_rows = np.zeros(0, dtype=np.int64)
    n_vox = geometry.n_voxels

    def run(bounds, offsets, rows, showers, outside, min_energy):
        n_blocks = len(bounds) - 1
        m_max = int(np.max(offsets[bounds[1:]] - offsets[bounds[:-1]]))
        n_out, e_sum = np.zeros(n_blocks, dtype=np.int64), np.zeros(n_blocks)
        ok = kern.voxelise_blocks(
            bounds, offsets, x, y, z_all, counts, p0, e1, e2, along_z, any_alpha,
            min_energy is not None, -np.inf if min_energy is None else float(min_energy), energy,
            no_rows if rows is None else rows, rows is not None, *z_tables, *r_tables, *a_tables, n_vox,
            showers, outside, np.empty(m_max, dtype=ft), np.empty(m_max if any_alpha else 0), np.zeros(n_vox + 1),
            n_out, e_sum,
        )  # fmt: skip
        if not ok:
            raise InvalidHitsError("non-finite hit values or negative hit energies")
        return list(zip(n_out.tolist(), e_sum.tolist(), strict=True))

    return run
