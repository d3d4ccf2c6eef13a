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

Binning follows :meth:`fastsim.geometry.Geometry.voxel_index` exactly: radial bins
``r_edges[k] <= r < r_edges[k+1]``, α bins dividing ``[-π, π)`` evenly. Hits outside (no layer,
``r`` below the first or beyond the last edge) are counted with their energy, never dropped
silently: per event, voxel sum + outside energy = hit energy sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from fastsim.errors import FastsimError
from fastsim.geometry import Geometry

__all__ = [
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

_TWO_PI = 2.0 * math.pi
#: above this |d·x̂| the x axis is too close to the shower axis to serve as the α reference
_X_REF_LIMIT = 0.99
#: largest lookup grid (cells × rows) before falling back to plain ``np.searchsorted``
_MAX_GRID = 1 << 22


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


# ---------------------------------------------------------------------------------------- lookups
class EdgeLookup:
    """Exact ``np.searchsorted(edges[row], x, side="right")`` for many queries, row by row.

    Binary search costs ~15 ns per query here; this replaces it by a uniform grid of spacing
    ``h <= (smallest edge spacing) / 2``: a query's grid cell gives the number of edges at or below
    the cell's lower grid point, and at most one edge lies between that point and the query, so one
    comparison with the next edge (and one with the previous edge, for a cell index that rounding
    moved up by one) makes it exact. Rows (one per layer) may have different edges.

    Args:
        edges: list of 1-D increasing edge arrays, one per row (mm).
    """

    def __init__(self, edges: list[np.ndarray] | list[tuple[float, ...]]) -> None:
        rows = [np.asarray(e, dtype=np.float64) for e in edges]
        if not rows or any(r.ndim != 1 or len(r) == 0 for r in rows):
            raise FastsimError("EdgeLookup needs at least one non-empty edge list per row")
        if any(np.any(np.diff(r) <= 0) for r in rows):
            raise FastsimError("edges must be strictly increasing")
        self.rows = rows
        self.lo = float(min(r[0] for r in rows))
        hi = float(max(r[-1] for r in rows))
        gaps = [np.diff(r).min() for r in rows if len(r) > 1]
        spacing = min(gaps) if gaps else max(hi - self.lo, 1.0)
        h = spacing / 2.0
        n_cells = int(math.ceil((hi - self.lo) / h)) + 1 if hi > self.lo else 1
        self.use_grid = n_cells * len(rows) <= _MAX_GRID
        if not self.use_grid:
            return
        self.inv_h = 1.0 / h
        self.n_cells = n_cells
        grid = self.lo + np.arange(n_cells + 1) * h  # lower point of each cell, last one >= hi
        counts, prev, nxt = [], [], []
        for r in rows:
            c = np.searchsorted(r, grid, side="right")  # edges <= grid point
            counts.append(c)
            padded = np.concatenate([[-np.inf], r, [np.inf]])
            prev.append(padded[c])  # largest edge <= grid point (counted), or -inf
            nxt.append(padded[c + 1])  # smallest edge > grid point, or +inf
        self.counts = np.concatenate(counts).astype(np.int64)
        self.prev = np.concatenate(prev)
        self.next = np.concatenate(nxt)
        self.stride = n_cells + 1

    def __call__(self, x: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
        """Number of edges of ``row`` that are <= x.

        Args:
            x: query values, shape (M,), float32 or float64 (compared exactly with the edges).
            row: row of each query, int array of shape (M,) in ``[0, n_rows)``; None for row 0.

        Returns:
            int64 array of shape (M,), as ``np.searchsorted(edges[row], x, side="right")``
            (NaN queries give an unspecified count).
        """
        if not self.use_grid:
            if row is None or len(self.rows) == 1:
                return np.searchsorted(self.rows[0], x, side="right").astype(np.int64)
            out = np.empty(len(x), dtype=np.int64)
            for i, r in enumerate(self.rows):
                sel = row == i
                out[sel] = np.searchsorted(r, x[sel], side="right")
            return out
        # cell index in the dtype of x (float32 keeps it fast); rounding can move it by one cell,
        # which the two comparisons below correct
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        ft = x.dtype.type
        c = (x - ft(self.lo)) * ft(self.inv_h)
        np.clip(c, 0, self.n_cells, out=c)
        cell = c.astype(np.int64)
        if row is not None and len(self.rows) > 1:
            cell += row * self.stride
        out = self.counts[cell]
        out += x >= self.next[cell]
        out -= x < self.prev[cell]
        return out


@dataclass(frozen=True)
class VoxelTable:
    """Per-layer tables of a geometry for vectorised indexing (built once per geometry).

    The arrays have ``n_layers + 1`` entries: the last one is a sentinel "no layer" with zero radial
    bins, so layer index -1 (numpy's last element) or ``n_layers`` lands on it and is outside.
    """

    geometry: Geometry
    offset: np.ndarray  # (L+1,) int64 first voxel of each layer
    n_r: np.ndarray  # (L+1,) int64 radial bins (0 for the sentinel)
    n_alpha: np.ndarray  # (L+1,) float64 α bins (1 for the sentinel)
    n_cells: np.ndarray  # (L+1,) int64 voxels per layer (0 for the sentinel)
    r_lookup: EdgeLookup  # rows: the L layers' radial edges
    any_alpha: bool  # some layer has more than one α bin
    id_to_pos: np.ndarray  # (max_id + 2,) int64 layer position of each layer id, -1 if unused


@lru_cache(maxsize=16)
def voxel_table(geometry: Geometry) -> VoxelTable:
    """The (cached) :class:`VoxelTable` of ``geometry``."""
    layers = geometry.layers
    n_layers = len(layers)
    offset = np.append(geometry.layer_offsets[:-1], geometry.n_voxels).astype(np.int64)
    n_r = np.array([ly.n_r for ly in layers] + [0], dtype=np.int64)
    n_alpha = np.array([ly.n_alpha for ly in layers] + [1], dtype=np.float64)
    n_cells = np.array([ly.n_voxels for ly in layers] + [0], dtype=np.int64)
    ids = [ly.id for ly in layers]
    id_to_pos = np.full(max(max(ids), 0) + 2, -1, dtype=np.int64)
    for pos, lid in enumerate(ids):
        if lid >= 0:
            id_to_pos[lid] = pos
    # the sentinel row repeats layer 0's edges; its n_r = 0 makes every hit there outside
    r_rows = [np.asarray(ly.r_edges) for ly in layers] + [np.asarray(layers[0].r_edges)]
    return VoxelTable(
        geometry=geometry,
        offset=offset,
        n_r=n_r,
        n_alpha=n_alpha,
        n_cells=n_cells,
        r_lookup=EdgeLookup(r_rows),
        any_alpha=any(ly.n_alpha > 1 for ly in layers) and n_layers > 0,
        id_to_pos=id_to_pos,
    )


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


def layer_from_id(layer_id: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Layer position of each hit from a per-hit layer id (the geometry's ``Layer.id``).

    Args:
        layer_id: integer layer ids, shape (M,). Ids of unused layers (or unknown ids) are outside.
        geometry: the voxel geometry.

    Returns:
        int64 array (M,): layer position 0..n_layers-1, or -1 where the id is not a used layer.
    """
    table = voxel_table(geometry).id_to_pos
    ids = np.asarray(layer_id).astype(np.int64, copy=False)
    ok = (ids >= 0) & (ids < len(table))
    return np.where(ok, table[np.where(ok, ids, 0)], -1)


def voxel_indices(geometry: Geometry, layer: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Flat voxel index of hits given their layer position and shower-frame coordinates.

    Same binning as :meth:`Geometry.voxel_index` with ``r = sqrt(u² + v²)`` and
    ``α = atan2(v, u)``, computed in the dtype of ``u`` without a loop over layers.

    Args:
        geometry: the voxel geometry.
        layer: layer position of each hit, int array (M,); anything outside ``[0, n_layers)`` is
            outside the geometry.
        u, v: transverse coordinates in mm, each shape (M,).

    Returns:
        int64 array (M,): the voxel index in ``[0, n_voxels)``, or ``n_voxels`` for hits outside.
    """
    tab = voxel_table(geometry)
    n_layers = geometry.n_layers
    layer = np.asarray(layer, dtype=np.int64)
    # every out-of-range layer (including -1) goes to the sentinel row n_layers
    bad = (layer < 0) | (layer >= n_layers)
    if bad.any():
        layer = np.where(bad, n_layers, layer)
    r = np.sqrt(u * u + v * v)
    rb = tab.r_lookup(r, layer) - 1  # radial bin, -1 below the first edge
    n_r = tab.n_r[layer]
    inside = (rb >= 0) & (rb < n_r)
    index = tab.offset[layer] + rb
    if tab.any_alpha:
        ft = r.dtype.type
        t = np.arctan2(v, u)
        t += ft(math.pi)  # in [0, 2π]; 2π wraps to 0 like np.mod in Geometry.voxel_index
        t[t >= ft(_TWO_PI)] -= ft(_TWO_PI)
        n_alpha = tab.n_alpha[layer]
        ab = (t * n_alpha / _TWO_PI).astype(np.int64)
        np.minimum(ab, n_alpha.astype(np.int64) - 1, out=ab)
        index += ab * n_r
    return np.where(inside, index, geometry.n_voxels)


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
    n_layers = geometry.n_layers
    layer = np.asarray(layer, dtype=np.int64)
    cell = np.asarray(cell).astype(np.int64, copy=False)
    layer = np.where((layer < 0) | (layer >= n_layers), n_layers, layer)
    ok = (cell >= 0) & (cell < tab.n_cells[layer])
    return np.where(ok, tab.offset[layer] + cell, geometry.n_voxels)


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
        ``(showers, outside)``: float32 (n, V) voxel energies in MeV and float64 (n,) energy of each
        event's outside hits in MeV. Sums are accumulated in float64.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    stride = n_voxels + 1  # one extra column per event collects the outside energy
    key = np.repeat(np.arange(n, dtype=np.int64) * stride, counts)
    key += voxel
    dense = np.bincount(key, weights=energy, minlength=n * stride).reshape(n, stride)
    return dense[:, :n_voxels].astype(np.float32), dense[:, n_voxels].copy()


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
    if cell is not None:
        if layer_id is None:
            raise FastsimError("cell indices need a per-hit layer id")
        voxel = cell_voxel_indices(geometry, layer_from_id(layer_id, geometry), cell)
    else:
        if x is None or y is None:
            raise FastsimError("hit coordinates x and y are needed (or layer id + cell)")
        if layer_id is not None:
            layer = layer_from_id(layer_id, geometry)
        elif z is not None and z_edges is not None:
            if not isinstance(z_edges, EdgeLookup) and len(z_edges) != geometry.n_layers + 1:
                raise FastsimError(
                    f"{len(z_edges)} layer z boundaries given but geometry {geometry.name!r} has "
                    f"{geometry.n_layers} layers (needs {geometry.n_layers + 1})"
                )
            layer = layer_from_z(z, z_edges)
        else:
            raise FastsimError("the layer of a hit needs z and the layer z boundaries, or a layer id")
        if impact is None:
            impact = np.zeros((n, 3))
        u, v = transverse_coordinates(x, y, z, counts, impact, direction)
        voxel = voxel_indices(geometry, layer, u, v)
    showers, outside = deposit(voxel, energy, counts, geometry.n_voxels)
    stats = VoxeliseStats(
        n_events=n,
        n_hits=n_hits,
        n_hits_outside=int(np.count_nonzero(voxel == geometry.n_voxels)),
        e_hits=float(energy.sum(dtype=np.float64)),
        e_outside=float(outside.sum()),
    )
    return showers, stats
