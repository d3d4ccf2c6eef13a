"""Voxelised calorimeter geometry in the CaloChallenge convention.

A shower is a flat vector of voxel energies (MeV). Voxels are ordered by layer, then α bin,
then r bin, with r fastest: ``index = layer_offset + alpha_bin * n_r + r_bin``. Within a layer the
radial edges (mm) are measured from the shower axis and the α bins divide ``[-π, π)`` evenly.
Layers whose XML entry has ``r_edges="0"`` are unused and carry no voxels.

Reference: CaloChallenge 2022, ``code/XMLHandler.py`` and the dataset binning files.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError

#: Built-in binnings shipped with the package: name -> (file, particle name in the XML).
BUILTIN = {
    "1-photons": ("binning_dataset_1_photons.xml", "photon"),
    "1-pions": ("binning_dataset_1_pions.xml", "pion"),
    "2": ("binning_dataset_2.xml", "electron"),
    "3": ("binning_dataset_3.xml", "electron"),
}


@dataclass(frozen=True)
class Layer:
    """One used calorimeter layer.

    Attributes:
        id: the layer id of the binning file (e.g. 12 for ATLAS tile layer 12).
        r_edges: radial bin edges in mm, increasing, starting at the shower axis.
        n_alpha: number of equal α bins covering [-π, π).
    """

    id: int
    r_edges: tuple[float, ...]
    n_alpha: int

    def __post_init__(self) -> None:
        edges = np.asarray(self.r_edges, dtype=float)
        if edges.ndim != 1 or len(edges) < 2:
            raise FastsimError(f"layer {self.id}: needs at least two radial edges, got {self.r_edges}")
        if not np.all(np.diff(edges) > 0) or edges[0] < 0:
            raise FastsimError(f"layer {self.id}: radial edges must be non-negative and increasing")
        if self.n_alpha < 1:
            raise FastsimError(f"layer {self.id}: n_alpha must be >= 1, got {self.n_alpha}")

    @property
    def n_r(self) -> int:
        return len(self.r_edges) - 1

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_alpha

    @property
    def alpha_edges(self) -> np.ndarray:
        """α bin edges in radians, shape (n_alpha + 1,)."""
        return np.linspace(-math.pi, math.pi, self.n_alpha + 1)


@dataclass(frozen=True)
class Geometry:
    """A voxelised calorimeter: the used layers and their (α, r) binning.

    Attributes:
        layers: the used layers in depth order.
        name: a short label (``"1-photons"`` for a built-in binning).
        particle: particle name from the binning file, if any.
    """

    layers: tuple[Layer, ...]
    name: str = "custom"
    particle: str = ""

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_xml(cls, path: str | os.PathLike, particle: str | None = None, name: str | None = None) -> Geometry:
        """Read a CaloChallenge binning XML file.

        Args:
            path: the XML file.
            particle: the ``<Bin name=…>`` to use; the first one when None.
            name: label for the geometry; the file stem when None.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise InputFileError(path, "binning file not found")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as err:
            raise InputFileError(path, f"not a valid XML binning file ({err})") from None
        bins = root.findall("Bin")
        if particle is not None:
            bins = [b for b in bins if b.get("name") == particle]
        if not bins:
            raise InputFileError(path, f"no <Bin> element{f' named {particle!r}' if particle else ''}")
        binel = bins[0]
        layers = []
        for el in binel.findall("Layer"):
            try:
                lid = int(el.get("id"))
                edges = tuple(float(v) for v in el.get("r_edges").split(","))
                n_alpha = int(el.get("n_bin_alpha", "1"))
            except (TypeError, ValueError) as err:
                raise InputFileError(path, f"malformed <Layer> element {el.attrib} ({err})") from None
            if len(edges) < 2:
                continue  # r_edges="0": layer not used
            try:
                layers.append(Layer(lid, edges, n_alpha))
            except FastsimError as err:
                raise InputFileError(path, str(err)) from None
        if not layers:
            raise InputFileError(path, "no used layers (every layer has r_edges='0')")
        label = name or os.path.splitext(os.path.basename(path))[0]
        return cls(tuple(layers), name=label, particle=binel.get("name", ""))

    @classmethod
    def builtin(cls, name: str) -> Geometry:
        """One of the CaloChallenge binnings shipped with the package: see :data:`BUILTIN`."""
        if name not in BUILTIN:
            raise FastsimError(f"unknown built-in geometry {name!r}; choose one of {sorted(BUILTIN)}")
        fname, particle = BUILTIN[name]
        with resources.as_file(resources.files("fastsim") / "binning" / fname) as p:
            return cls.from_xml(p, particle=particle, name=name)

    @classmethod
    def regular(
        cls, n_layers: int, n_alpha: int, r_edges: list[float] | tuple[float, ...], name: str = "regular"
    ) -> Geometry:
        """A user-defined detector: ``n_layers`` identical layers of ``n_alpha`` × len(r_edges)-1 voxels."""
        if n_layers < 1:
            raise FastsimError(f"n_layers must be >= 1, got {n_layers}")
        edges = tuple(float(e) for e in r_edges)
        return cls(tuple(Layer(i, edges, int(n_alpha)) for i in range(n_layers)), name=name)

    @classmethod
    def resolve(cls, spec: str | os.PathLike | dict | Geometry) -> Geometry:
        """A geometry from a built-in name, an XML path, a dict (:meth:`to_dict`) or a Geometry."""
        if isinstance(spec, Geometry):
            return spec
        if isinstance(spec, dict):
            return cls.from_dict(spec)
        spec = os.fspath(spec)
        if spec in BUILTIN:
            return cls.builtin(spec)
        if spec.lstrip().startswith("{"):
            return cls.from_json(spec)
        return cls.from_xml(spec)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "particle": self.particle,
            "layers": [{"id": ly.id, "r_edges": list(ly.r_edges), "n_alpha": ly.n_alpha} for ly in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        layers = tuple(Layer(int(ly["id"]), tuple(float(e) for e in ly["r_edges"]), int(ly["n_alpha"])) for ly in d["layers"])
        return cls(layers, name=d.get("name", "custom"), particle=d.get("particle", ""))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> Geometry:
        return cls.from_dict(json.loads(s))

    # ------------------------------------------------------------------ sizes and slices
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def layer_ids(self) -> list[int]:
        return [ly.id for ly in self.layers]

    @property
    def n_voxels(self) -> int:
        return sum(ly.n_voxels for ly in self.layers)

    @cached_property
    def layer_offsets(self) -> np.ndarray:
        """Start index of each layer in the flat voxel vector, shape (n_layers + 1,)."""
        return np.concatenate([[0], np.cumsum([ly.n_voxels for ly in self.layers])]).astype(np.int64)

    def layer_slice(self, i: int) -> slice:
        """Slice of the flat voxel vector holding layer index ``i`` (0-based position, not id)."""
        return slice(int(self.layer_offsets[i]), int(self.layer_offsets[i + 1]))

    @property
    def layer_slices(self) -> list[slice]:
        return [self.layer_slice(i) for i in range(self.n_layers)]

    # ------------------------------------------------------------------ per-voxel tables
    @cached_property
    def voxel_layer(self) -> np.ndarray:
        """Layer position (0..n_layers-1) of each voxel, shape (n_voxels,)."""
        return np.repeat(np.arange(self.n_layers), [ly.n_voxels for ly in self.layers])

    @cached_property
    def voxel_alpha_bin(self) -> np.ndarray:
        """α bin of each voxel, shape (n_voxels,)."""
        return np.concatenate([np.repeat(np.arange(ly.n_alpha), ly.n_r) for ly in self.layers])

    @cached_property
    def voxel_r_bin(self) -> np.ndarray:
        """r bin of each voxel, shape (n_voxels,)."""
        return np.concatenate([np.tile(np.arange(ly.n_r), ly.n_alpha) for ly in self.layers])

    @cached_property
    def voxel_r_center(self) -> np.ndarray:
        """Radial bin centre of each voxel in mm (midpoint of the edges), shape (n_voxels,)."""
        out = []
        for ly in self.layers:
            e = np.asarray(ly.r_edges)
            out.append(np.tile(0.5 * (e[:-1] + e[1:]), ly.n_alpha))
        return np.concatenate(out)

    @cached_property
    def voxel_alpha_center(self) -> np.ndarray:
        """α bin centre of each voxel in radians (0 for layers with a single α bin), shape (n_voxels,)."""
        out = []
        for ly in self.layers:
            if ly.n_alpha == 1:
                out.append(np.zeros(ly.n_r))
            else:
                a = ly.alpha_edges
                out.append(np.repeat(0.5 * (a[:-1] + a[1:]), ly.n_r))
        return np.concatenate(out)

    @cached_property
    def voxel_xy_center(self) -> tuple[np.ndarray, np.ndarray]:
        """Cartesian voxel centres (x = r cos α, y = r sin α) in mm, each shape (n_voxels,)."""
        r, a = self.voxel_r_center, self.voxel_alpha_center
        return r * np.cos(a), r * np.sin(a)

    @cached_property
    def voxel_area(self) -> np.ndarray:
        """Transverse area of each voxel in mm², shape (n_voxels,)."""
        out = []
        for ly in self.layers:
            e = np.asarray(ly.r_edges)
            out.append(np.tile(math.pi * (e[1:] ** 2 - e[:-1] ** 2) / ly.n_alpha, ly.n_alpha))
        return np.concatenate(out)

    # ------------------------------------------------------------------ indexing
    def voxel_index(self, layer: np.ndarray, r: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Flat voxel index of points given by layer position, radius (mm) and angle (rad).

        Args:
            layer: layer position 0..n_layers-1 (not the XML id), int array of shape (M,).
            r: distance from the shower axis in mm, shape (M,).
            alpha: angle around the axis in radians, any range (wrapped into [-π, π)), shape (M,).

        Returns:
            int64 array of shape (M,): the voxel index, or -1 where the point is outside the
            geometry (unknown layer, r beyond the last edge or below the first).
        """
        layer = np.asarray(layer, dtype=np.int64)
        r = np.asarray(r, dtype=float)
        alpha = np.mod(np.asarray(alpha, dtype=float) + math.pi, 2 * math.pi)  # in [0, 2π)
        out = np.full(layer.shape, -1, dtype=np.int64)
        for i, ly in enumerate(self.layers):
            sel = layer == i
            if not np.any(sel):
                continue
            rb = np.searchsorted(np.asarray(ly.r_edges), r[sel], side="right") - 1
            ab = np.minimum((alpha[sel] * ly.n_alpha / (2 * math.pi)).astype(np.int64), ly.n_alpha - 1)
            ok = (rb >= 0) & (rb < ly.n_r)
            idx = self.layer_offsets[i] + ab * ly.n_r + rb
            out[np.flatnonzero(sel)[ok]] = idx[ok]
        return out

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        """Energy per layer, shape (N, n_layers), same units as ``showers`` (N, n_voxels)."""
        showers = np.asarray(showers)
        return np.add.reduceat(showers, self.layer_offsets[:-1], axis=-1)

    def layer_image(self, showers: np.ndarray, i: int) -> np.ndarray:
        """Layer ``i`` of showers (N, n_voxels) as an array of shape (N, n_alpha, n_r)."""
        ly = self.layers[i]
        return np.asarray(showers)[..., self.layer_slice(i)].reshape(*np.shape(showers)[:-1], ly.n_alpha, ly.n_r)

    def check_n_voxels(self, n: int, path: str | os.PathLike) -> None:
        """Raise :class:`InputFileError` if a file's voxel count does not match this geometry."""
        if int(n) != self.n_voxels:
            raise InputFileError(
                path, f"showers have {n} voxels but geometry {self.name!r} has {self.n_voxels}"
            )

    def describe(self) -> str:
        """One line per layer: id, α bins, r bins, voxels."""
        lines = [f"geometry {self.name!r}: {self.n_layers} layers, {self.n_voxels} voxels"]
        for ly in self.layers:
            lines.append(
                f"  layer {ly.id:3d}: {ly.n_alpha:3d} α × {ly.n_r:3d} r = {ly.n_voxels:5d} voxels, r ≤ {ly.r_edges[-1]:g} mm"
            )
        return "\n".join(lines)
