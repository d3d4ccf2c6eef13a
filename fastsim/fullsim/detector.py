"""The simulated calorimeter: a layered stack whose active layers carry the voxels of a Geometry.

The detector is described by plain dataclasses (:class:`DetectorSpec`, :class:`LayerSpec`,
:class:`Slab`) that need no Geant4, so the description can be printed, stored in an output file's
``detector`` attribute and tested without it. :func:`build_geant4` turns a spec plus a
:class:`fastsim.geometry.Geometry` into Geant4 volumes.

Frame: the particle travels along +z on the axis x = y = 0; the front face of the first slab is at
z = 0. The shower frame of the binning (layer × α × r around the particle's axis) is therefore the
detector frame: r = √(x² + y²), α = atan2(y, x) ∈ [-π, π).

Scoring (all inside Geant4, read once per event): one ``G4MultiFunctionalDetector`` with a
``G4PSEnergyDeposit`` scorer indexed by the copy number of the volume the step starts in.
The active gaps are scored in one of two ways. ``steps`` (default): each gap is one plain volume
whose sensitive detector is compiled code (:mod:`fastsim.fullsim.native`) putting each step's
deposit into the voxel of the step's midpoint. ``volumes``: each active slab of layer ``i`` holds
one daughter volume per voxel — a ``G4Tubs`` ring sector with the voxel's exact radial edges and
α range — whose copy number is the flat voxel index. The rest is scored under offset copy numbers:
active material beyond the last radial edge (``ACTIVE_OUTSIDE + i``), passive material of the
layer (``PASSIVE + i``) and dead material in front of it (``DEAD + i``). Energy leaving the
detector is counted by a small sensitive detector on the world volume (one step per escaping
particle), so visible + invisible + leakage can be checked against the incident energy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fastsim.errors import FastsimError
from fastsim.geometry import Geometry

#: Copy-number offsets of the non-voxel scoring volumes (voxel indices are below 1000).
ACTIVE_OUTSIDE, PASSIVE, DEAD = 100_000, 200_000, 300_000

#: Radiation lengths (mm) of the NIST materials used, from the PDG tables / Geant4's G4NistManager.
RADIATION_LENGTH_MM: dict[str, float] = {
    "G4_Pb": 5.613,
    "G4_lAr": 140.3,
    "G4_Al": 88.97,
    "G4_Fe": 17.57,
    "G4_PLASTIC_SC_VINYLTOLUENE": 425.4,
    "G4_Galactic": math.inf,
}


@dataclass(frozen=True)
class Slab:
    """A flat slab of one material.

    Attributes:
        material: a Geant4 NIST material name (``G4_Pb``, ``G4_lAr`` …).
        thickness_mm: thickness along z in mm.
        active: whether deposits in it are measured (scored into voxels).
    """

    material: str
    thickness_mm: float
    active: bool = False

    @property
    def x0(self) -> float:
        """Thickness in radiation lengths."""
        return self.thickness_mm / RADIATION_LENGTH_MM.get(self.material, math.inf)


@dataclass(frozen=True)
class LayerSpec:
    """One readout layer: optional dead material in front, then ``n_cells`` repetitions of ``cell``.

    Attributes:
        name: a label ("presampler", "EM strips", …).
        radius_mm: transverse radius of the layer's volumes (>= the binning's last radial edge).
        cell: the slabs of one sampling cell, in depth order; exactly one must be active.
        n_cells: number of cells.
        front: passive slabs in front of the layer (cryostat walls, …), not part of any voxel.
    """

    name: str
    radius_mm: float
    cell: tuple[Slab, ...]
    n_cells: int = 1
    front: tuple[Slab, ...] = ()

    def __post_init__(self) -> None:
        if sum(s.active for s in self.cell) != 1:
            raise FastsimError(f"layer {self.name!r}: a cell needs exactly one active slab")
        if self.n_cells < 1 or self.radius_mm <= 0 or any(s.thickness_mm <= 0 for s in (*self.cell, *self.front)):
            raise FastsimError(f"layer {self.name!r}: cells, radius and thicknesses must be positive")

    @property
    def cell_thickness_mm(self) -> float:
        return sum(s.thickness_mm for s in self.cell)

    @property
    def thickness_mm(self) -> float:
        """Depth of the sampling part (without the front slabs) in mm."""
        return self.n_cells * self.cell_thickness_mm

    @property
    def front_thickness_mm(self) -> float:
        return sum(s.thickness_mm for s in self.front)

    @property
    def x0(self) -> float:
        """Depth of the sampling part in radiation lengths."""
        return self.n_cells * sum(s.x0 for s in self.cell)

    @property
    def front_x0(self) -> float:
        return sum(s.x0 for s in self.front)

    @property
    def absorber(self) -> str:
        """Material filling the layer volume: the thickest passive slab (the active one if none)."""
        passive = [s for s in self.cell if not s.active]
        return max(passive, key=lambda s: s.thickness_mm).material if passive else self.cell[0].material


@dataclass(frozen=True)
class DetectorSpec:
    """A stack of readout layers, one per layer of the binning, in depth order."""

    name: str
    layers: tuple[LayerSpec, ...]
    description: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def check(self, geometry: Geometry) -> None:
        """Raise :class:`FastsimError` unless the stack can carry the binning ``geometry``."""
        if len(self.layers) != geometry.n_layers:
            raise FastsimError(
                f"detector {self.name!r} has {len(self.layers)} layers but geometry {geometry.name!r} has "
                f"{geometry.n_layers}; use a 5-layer binning (e.g. 1-photons) or --detector sampling"
            )
        for spec, ly in zip(self.layers, geometry.layers, strict=True):
            if ly.r_edges[-1] > spec.radius_mm + 1e-9:
                raise FastsimError(
                    f"layer {spec.name!r}: binning reaches r = {ly.r_edges[-1]} mm beyond the layer radius {spec.radius_mm} mm"
                )

    @property
    def depth_mm(self) -> float:
        return sum(ly.front_thickness_mm + ly.thickness_mm for ly in self.layers)

    @property
    def max_radius_mm(self) -> float:
        return max(ly.radius_mm for ly in self.layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description with per-layer depths in mm and X0 (the ``detector`` attribute)."""
        layers = []
        z = 0.0
        for ly in self.layers:
            d = asdict(ly)
            z += ly.front_thickness_mm
            d.update(
                z_front_mm=round(z, 3),
                thickness_mm=round(ly.thickness_mm, 3),
                x0=round(ly.x0, 3),
                front_x0=round(ly.front_x0, 3),
                absorber=ly.absorber,
            )
            z += ly.thickness_mm
            layers.append(d)
        return {
            "name": self.name,
            "description": self.description,
            "frame": "particle along +z on the axis x=y=0; front face of the first slab at z=0; r, alpha=atan2(y,x) about the axis",
            "depth_mm": round(self.depth_mm, 3),
            "total_x0": round(sum(ly.x0 + ly.front_x0 for ly in self.layers), 3),
            "radiation_length_mm": {k: v for k, v in RADIATION_LENGTH_MM.items() if math.isfinite(v)},
            "layers": layers,
            **({"notes": self.notes} if self.notes else {}),
        }

    def describe(self) -> str:
        """A few lines: each layer's structure, depth in mm and X0."""
        lines = [f"detector {self.name!r}: {self.description}"]
        for ly in self.layers:
            front = " + ".join(f"{s.thickness_mm:g} mm {s.material}" for s in ly.front)
            cell = " + ".join(f"{s.thickness_mm:g} mm {s.material}{' (active)' if s.active else ''}" for s in ly.cell)
            lines.append(
                f"  {ly.name:<22s} {('front ' + front + '; ') if front else ''}{ly.n_cells} × [{cell}] = "
                f"{ly.thickness_mm:.1f} mm, {ly.x0:.2f} X0{f' (+{ly.front_x0:.2f} X0 in front)' if front else ''}; r ≤ {ly.radius_mm:g} mm"
            )
        return "\n".join(lines)


# ATLAS-barrel-like numbers (η ≈ 0), simplified to flat slabs:
# - ~1 X0 of aluminium (inner-detector services, solenoid, cryostat) before the 11 mm LAr presampler;
# - accordion EM: 1.5 mm lead absorbers (η < 0.8) with 2 × 2.1 mm LAr gaps, here one 4.2 mm gap per
#   cell (0.297 X0 per cell): strips ≈ 4.2 X0, middle ≈ 16 X0, back ≈ 2.1 X0;
# - cryostat back wall, then the tile calorimeter: 14 mm steel + 3 mm scintillator periods
#   (tile A-layer depth ≈ 300 mm).
_PB_LAR_CELL = (Slab("G4_Pb", 1.5), Slab("G4_lAr", 4.2, active=True))


def atlas_like() -> DetectorSpec:
    """The default detector for the five-layer dataset-1 photon binning (layer ids 0, 1, 2, 3, 12)."""
    return DetectorSpec(
        name="atlas-barrel-like",
        description=(
            "simplified ATLAS barrel at eta=0: Al dead material, LAr presampler, Pb/LAr sampling "
            "EM calorimeter in three layers (~4.2, 16, 2.1 X0), Al cryostat wall, Fe/scintillator tile layer"
        ),
        layers=(
            LayerSpec("presampler", 600.0, (Slab("G4_lAr", 11.0, active=True),), 1, front=(Slab("G4_Al", 80.0),)),
            LayerSpec("EM strips", 600.0, _PB_LAR_CELL, 14, front=(Slab("G4_Al", 20.0),)),
            LayerSpec("EM middle", 600.0, _PB_LAR_CELL, 54),
            LayerSpec("EM back", 600.0, _PB_LAR_CELL, 7),
            LayerSpec(
                "tile A",
                2000.0,
                (Slab("G4_Fe", 14.0), Slab("G4_PLASTIC_SC_VINYLTOLUENE", 3.0, active=True)),
                18,
                front=(Slab("G4_Al", 50.0),),
            ),
        ),
    )


def sampling_stack(geometry: Geometry, total_x0: float = 25.0) -> DetectorSpec:
    """A plain Pb/LAr sampling stack for any binning: ``total_x0`` split evenly over its layers."""
    cell_x0 = sum(s.x0 for s in _PB_LAR_CELL)
    n = max(1, round(total_x0 / cell_x0 / geometry.n_layers))
    radius = max(ly.r_edges[-1] for ly in geometry.layers)
    return DetectorSpec(
        name="pb-lar-sampling",
        description=f"uniform Pb/LAr sampling stack (1.5 mm Pb + 4.2 mm LAr cells), {geometry.n_layers} layers of {n} cells",
        layers=tuple(LayerSpec(f"layer {ly.id}", radius, _PB_LAR_CELL, n) for ly in geometry.layers),
    )


def resolve_detector(name: str, geometry: Geometry) -> DetectorSpec:
    """``"atlas"`` (default, five layers) or ``"sampling"`` (any binning)."""
    if name == "atlas":
        spec = atlas_like()
    elif name == "sampling":
        spec = sampling_stack(geometry)
    else:
        raise FastsimError(f"unknown detector {name!r}; choose atlas or sampling")
    spec.check(geometry)
    return spec


# --------------------------------------------------------------------------- Geant4 construction


def build_geant4(
    g4: Any, spec: DetectorSpec, geometry: Geometry, keep: list[Any], voxel_volumes: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Create the Geant4 volumes of ``spec`` with the voxel sectors of ``geometry``.

    Args:
        g4: the imported geant4_pybind module.
        spec: the detector (checked against ``geometry``).
        geometry: the binning; voxel copy numbers follow its flat voxel order.
        keep: list that receives every Geant4 object made here; the caller keeps it alive as long
            as the geometry is used (Python must not collect objects Geant4 still points to).
        voxel_volumes: place one ring-sector daughter per voxel in each active gap (the
            ``volumes`` scoring); False leaves the gaps plain, for the compiled step scorer
            (:mod:`fastsim.fullsim.native`), which then owns the gap volumes.

    Returns:
        (world physical volume, dict with ``scored`` — logical volumes that get the copy-number
        scoring detector — ``gaps`` — per layer (active gap volume name, global z of the front and
        back of the layer's sampling part in mm) — ``world_lv`` and ``gun_z_mm``, the z of the
        particle's starting point).
    """
    spec.check(geometry)
    nist = g4.G4NistManager.Instance()
    mats: dict[str, Any] = {}

    def material(name: str) -> Any:
        if name not in mats:
            m = nist.FindOrBuildMaterial(name)
            if m is None:
                raise FastsimError(f"Geant4 has no NIST material {name!r}")
            mats[name] = m
        return mats[name]

    def tubs(name: str, rmin: float, rmax: float, half_z: float, sphi: float = 0.0, dphi: float = 2 * math.pi) -> Any:
        solid = g4.G4Tubs(name, rmin * g4.mm, rmax * g4.mm, half_z * g4.mm, sphi, dphi)
        keep.append(solid)
        return solid

    def logical(solid: Any, mat: str, name: str) -> Any:
        lv = g4.G4LogicalVolume(solid, material(mat), name)
        keep.append(lv)
        return lv

    def place(lv: Any, mother: Any, z_mm: float, name: str, copy: int) -> None:
        pv = g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, z_mm * g4.mm), lv, name, mother, False, copy, False)
        keep.append(pv)

    margin = 10.0  # mm of vacuum between the stack and the envelope's surface
    depth, rmax = spec.depth_mm, spec.max_radius_mm
    # World (vacuum, centred on the origin) > envelope (vacuum tube around the stack, from
    # z = -margin to depth + margin) > layers; the stack's front face is at global z = 0.
    half_world = (depth + 3 * margin) * g4.mm
    world_solid = g4.G4Box("World", (rmax + 2 * margin) * g4.mm, (rmax + 2 * margin) * g4.mm, half_world)
    keep.append(world_solid)
    world_lv = logical(world_solid, "G4_Galactic", "World")
    world_pv = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_lv, "World", None, False, 0, False)
    keep.append(world_pv)
    env_half = depth / 2 + margin
    env_lv = logical(tubs("Envelope", 0, rmax + margin, env_half), "G4_Galactic", "Envelope")
    place(env_lv, world_lv, depth / 2, "Envelope", 0)

    scored: list[Any] = []
    gaps: list[tuple[str, float, float]] = []
    z = -depth / 2  # envelope-local z of the stack's front face
    for i, (ls, ly) in enumerate(zip(spec.layers, geometry.layers, strict=True)):
        for j, slab in enumerate(ls.front):
            lv = logical(tubs(f"L{i}_front{j}", 0, ls.radius_mm, slab.thickness_mm / 2), slab.material, f"L{i}_front{j}")
            place(lv, env_lv, z + slab.thickness_mm / 2, f"L{i}_front{j}", DEAD + i)
            scored.append(lv)
            z += slab.thickness_mm
        half = ls.thickness_mm / 2
        layer_lv = logical(tubs(f"L{i}", 0, ls.radius_mm, half), ls.absorber, f"L{i}")
        place(layer_lv, env_lv, z + half, f"L{i}", PASSIVE + i)
        scored.append(layer_lv)

        # the active slab with its voxel sectors: one logical volume, placed once per cell
        act = next(s for s in ls.cell if s.active)
        gap_lv = logical(tubs(f"L{i}_active", 0, ls.radius_mm, act.thickness_mm / 2), act.material, f"L{i}_active")
        if voxel_volumes:
            scored.append(gap_lv)
        gaps.append((f"L{i}_active", z + depth / 2, z + depth / 2 + ls.thickness_mm))
        if voxel_volumes:
            dphi = 2 * math.pi / ly.n_alpha
            for a in range(ly.n_alpha):
                sphi, width = (0.0, 2 * math.pi) if ly.n_alpha == 1 else (-math.pi + a * dphi, dphi)
                for r in range(ly.n_r):
                    copy = int(geometry.layer_offsets[i]) + a * ly.n_r + r
                    name = f"vox{copy}"
                    vlv = logical(tubs(name, ly.r_edges[r], ly.r_edges[r + 1], act.thickness_mm / 2, sphi, width), act.material, name)
                    place(vlv, gap_lv, 0.0, name, copy)
                    scored.append(vlv)
        # other passive slabs (when a cell holds more than one passive material)
        others: dict[int, Any] = {}
        for k in range(ls.n_cells):
            zc = -half + k * ls.cell_thickness_mm
            for j, slab in enumerate(ls.cell):
                zmid = zc + slab.thickness_mm / 2
                if slab.active:
                    place(gap_lv, layer_lv, zmid, f"L{i}_active", ACTIVE_OUTSIDE + i)
                elif slab.material != ls.absorber:
                    if j not in others:
                        others[j] = logical(tubs(f"L{i}_p{j}", 0, ls.radius_mm, slab.thickness_mm / 2), slab.material, f"L{i}_p{j}")
                        scored.append(others[j])
                    place(others[j], layer_lv, zmid, f"L{i}_p{j}", PASSIVE + i)
                zc += slab.thickness_mm
        z += ls.thickness_mm
    return world_pv, {"scored": scored, "gaps": gaps, "world_lv": world_lv, "gun_z_mm": -margin / 2}
