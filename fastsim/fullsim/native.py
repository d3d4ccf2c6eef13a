"""Voxel scoring in compiled code: a Geant4 sensitive detector whose ``ProcessHits`` is a numba cfunc.

Why: scoring with one Geant4 volume per voxel (``scoring="volumes"``) makes every voxel edge a
geometry boundary, which adds ~25 % steps and costs ~1.5× the time of the same detector with
plain active gaps (docs/fullsim.md, "Where the time goes"); a Python ``ProcessHits`` would cost
several µs per step. Here each active gap of a layer is one plain volume, and the energy of every
step in it is put into the voxel that contains the step's **midpoint**, computed with the binning's
own rule (:meth:`fastsim.geometry.Geometry.voxel_index`: r bin by ``searchsorted(r_edges, r,
"right") - 1``, α bin ``floor(((α + π) mod 2π) · n_α / 2π)``) around the layer's centre
the particle's axis, in the plane of the step's depth (for an inclined particle the binning follows
the axis through the layer, as the projective cells of ATLAS do). Energy beyond the last radial
edge is kept apart (the layer's "active outside" balance column).

How, without a C++ compiler or Geant4's headers (geant4-pybind 0.1.3 exports the C++ symbols):

- the object is allocated with the C++ ``operator new`` and built by the real
  ``G4VSensitiveDetector`` constructor; its virtual table is a copy of that class's table with the
  one pure-virtual slot (``ProcessHits``) pointing at :func:`_process_hits`, a numba ``cfunc``
  (native code, no Python or GIL per step). The slot is found by comparing with
  ``G4MultiFunctionalDetector``'s table, and checked to be the pure-virtual one;
- the cfunc reads the ``G4Step`` and ``G4StepPoint`` fields it needs (total energy deposit,
  pre/post-step positions) at the offsets of Geant4 11.4's class layouts (both classes have no
  virtual functions; the first members are ``G4double fTotalEnergyDeposit, fNonIonizingEnergyDeposit;
  G4StepPoint *fpPreStepPoint, *fpPostStepPoint`` and ``G4ThreeVector fPosition``);
- every call also checks that the step's midpoint lies inside the layer's z range; any step that
  does not is counted, and :meth:`StepScorer.read` raises if the count is not zero — a layout that
  did not match would be caught at the first event, never written;
- the sums live in the same allocation, after the C++ object (at :data:`REGION_OFFSET` bytes), and
  Python reads and clears them once per event through a numpy view.

Steps of particles crossing a voxel edge put all their deposit on the midpoint's side; steps in the
thin gaps are short (mostly < 1 mm for e±; photons deposit almost nothing themselves). The midpoint
lies a little closer to the axis than the average point of a step (r is convex): measured at 64 GeV,
0.2 % of the strips layer's energy moves inside r = 10 mm (docs/fullsim.md, "Before and after").
``scoring="volumes"`` keeps the exact-boundary scoring.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsim.errors import FastsimError
from fastsim.fullsim._step_layout import (
    H_ACC,
    H_BAD,
    H_NALPHA,
    H_NEDGES,
    H_NR,
    H_OUTSIDE,
    H_STEPS,
    H_TOTAL,
    H_TX,
    H_TY,
    H_XC,
    H_YC,
    H_ZHI,
    H_ZLO,
    HEADER,
    REGION_OFFSET,
)

_SYMBOLS = {
    "ctor": "_ZN20G4VSensitiveDetectorC2ERK8G4String",
    "store": "_ZN20G4LogicalVolumeStore11GetInstanceEv",
    "get_volume": "_ZNK20G4LogicalVolumeStore9GetVolumeERK8G4Stringbb",
    "set_sd": "_ZN15G4LogicalVolume20SetSensitiveDetectorEP20G4VSensitiveDetector",
    "mfd_process_hits": "_ZN25G4MultiFunctionalDetector11ProcessHitsEP6G4StepP18G4TouchableHistory",
}
_VTABLE_SD = "_ZTV20G4VSensitiveDetector"
_VTABLE_MFD = "_ZTV25G4MultiFunctionalDetector"
_VTABLE_SLOTS = 40  # copied entries; G4VSensitiveDetector has about a dozen virtual functions


def _compile() -> Any:
    """The ProcessHits cfunc (compiled at the first import of the kernel module, then cached by numba)."""
    try:
        from fastsim.fullsim._step_kernel import process_hits
    except ImportError as err:
        if "numba" not in str(err):
            raise
        raise FastsimError(
            "--scoring steps needs numba (pip install 'fastsim[g4]'); use --scoring volumes without it"
        ) from None
    return process_hits


@dataclass
class _Layer:
    ptr: int  # the C++ object
    view: np.ndarray  # float64 view of its data region
    acc: slice  # accumulators in view
    n_vox: int


class StepScorer:
    """One compiled sensitive detector per active layer, read once per event.

    Args:
        g4: the imported geant4_pybind module.
        keep: list that receives the objects that must stay alive as long as Geant4 runs.
    """

    def __init__(self, g4: Any, keep: list[Any]) -> None:
        from fastsim.fullsim.physics import _Cxx

        self._cx = _Cxx(g4)
        lib = ctypes.CDLL(g4.__file__)
        vp = ctypes.c_void_p
        try:
            fn = {k: getattr(lib, s) for k, s in _SYMBOLS.items()}
            sd_vt = ctypes.addressof(ctypes.c_char.in_dll(lib, _VTABLE_SD))
            mfd_vt = ctypes.addressof(ctypes.c_char.in_dll(lib, _VTABLE_MFD))
        except (AttributeError, ValueError) as err:
            raise FastsimError(
                f"geant4-pybind does not export a symbol the compiled scorer needs ({err}); it is built for "
                "geant4-pybind==0.1.3 (Geant4 11.4.p01); use --scoring volumes"
            ) from None
        fn["ctor"].restype, fn["ctor"].argtypes = None, [vp, vp]
        fn["store"].restype, fn["store"].argtypes = vp, []
        fn["get_volume"].restype, fn["get_volume"].argtypes = vp, [vp, vp, ctypes.c_bool, ctypes.c_bool]
        fn["set_sd"].restype, fn["set_sd"].argtypes = None, [vp, vp]
        self._fn = fn
        self._sd_vt = sd_vt
        # the ProcessHits slot: where G4MultiFunctionalDetector's table holds its ProcessHits,
        # and G4VSensitiveDetector's holds the pure-virtual handler
        mfd_ph = ctypes.cast(fn["mfd_process_hits"], vp).value
        sd_slots = (ctypes.c_void_p * _VTABLE_SLOTS).from_address(sd_vt)
        mfd_slots = (ctypes.c_void_p * _VTABLE_SLOTS).from_address(mfd_vt)
        slots = [k for k in range(2, _VTABLE_SLOTS) if mfd_slots[k] == mfd_ph]
        pure = ctypes.cast(getattr(ctypes.CDLL("libstdc++.so.6"), "__cxa_pure_virtual"), vp).value
        if len(slots) != 1 or sd_slots[slots[0]] != pure:
            raise FastsimError(
                "unexpected G4VSensitiveDetector virtual table in this geant4-pybind build; use --scoring volumes"
            )
        self._slot = slots[0]
        self._cfunc = _compile()
        self._vtable = (ctypes.c_void_p * _VTABLE_SLOTS)(*sd_slots)
        self._vtable[self._slot] = self._cfunc.address
        self.layers: list[_Layer] = []
        keep.append(self)

    def attach(self, lv_name: str, r_edges: np.ndarray, n_alpha: int, z_range_mm: tuple[float, float]) -> int:
        """Make the scorer of one layer and make it the sensitive detector of logical volume ``lv_name``.

        Args:
            lv_name: the logical volume (the layer's active gap; ≤ 15 characters).
            r_edges: (n_r + 1,) radial edges in mm.
            n_alpha: number of α bins over [-π, π).
            z_range_mm: global z range (mm) that every scored step's midpoint must lie in.

        Returns:
            the layer's position in :attr:`layers`.
        """
        edges = np.asarray(r_edges, dtype=np.float64)
        n_r = len(edges) - 1
        acc0 = HEADER + len(edges)
        size = REGION_OFFSET + 8 * (acc0 + n_r * n_alpha)
        ptr = self._cx.new(size)
        ctypes.memset(ptr, 0, size)
        self._fn["ctor"](ptr, self._cx.string(f"vox{len(self.layers)}"))
        vptr = ctypes.c_void_p.from_address(ptr)
        if vptr.value != self._sd_vt + 16:
            raise FastsimError("G4VSensitiveDetector's constructor did not set the expected virtual table")
        vptr.value = ctypes.addressof(self._vtable) + 16
        view = np.ctypeslib.as_array(
            (ctypes.c_double * (acc0 + n_r * n_alpha)).from_address(ptr + REGION_OFFSET)
        )
        view[H_NR], view[H_NALPHA], view[H_NEDGES], view[H_ACC] = n_r, n_alpha, len(edges), acc0
        view[H_ZLO], view[H_ZHI] = z_range_mm
        view[HEADER:acc0] = edges
        lv = self._fn["get_volume"](self._fn["store"](), self._cx.string(lv_name), False, False)
        if not lv:
            raise FastsimError(f"no logical volume {lv_name!r} to score")
        self._fn["set_sd"](lv, ptr)
        self.layers.append(_Layer(ptr, view, slice(acc0, acc0 + n_r * n_alpha), n_r * n_alpha))
        return len(self.layers) - 1

    def set_axis(self, x0_mm: float, y0_mm: float, dxdz: float, dydz: float) -> None:
        """The particle's axis for the next event: (x0 + dxdz·z, y0 + dydz·z) in mm, global frame.

        Every layer's binning is centred on the axis in the plane of each step's depth z.
        """
        for ly in self.layers:
            ly.view[H_XC], ly.view[H_YC], ly.view[H_TX], ly.view[H_TY] = x0_mm, y0_mm, dxdz, dydz

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The event's sums, then clear them.

        Returns:
            (voxels (Σ n_vox,) MeV in flat voxel order, outside (n_layers,) MeV beyond the last edge).
        """
        vox = np.concatenate([ly.view[ly.acc] for ly in self.layers])
        outside = np.array([ly.view[H_OUTSIDE] for ly in self.layers])
        bad = sum(int(ly.view[H_BAD]) for ly in self.layers)
        for ly in self.layers:
            ly.view[ly.acc] = 0.0
            ly.view[H_OUTSIDE] = ly.view[H_BAD] = ly.view[H_TOTAL] = ly.view[H_STEPS] = 0.0
        if bad:
            raise FastsimError(
                f"the compiled scorer saw {bad} steps outside their layer: the G4Step layout does not match "
                "this geant4-pybind build; use --scoring volumes"
            )
        return vox, outside

    def voxel_of_points(self, layer: int, xyz_mm: np.ndarray) -> np.ndarray:
        """Run the compiled ``ProcessHits`` of ``layer`` on a 1 MeV step at each point (pre = post point).

        A check of the kernel's binning against :meth:`Geometry.voxel_index` that needs no event:
        it calls the same machine code Geant4 calls, with a step laid out as Geant4's.

        Args:
            layer: layer position.
            xyz_mm: (M, 3) global points in mm.

        Returns:
            (M,) int64: the voxel index within the layer (α-major), -1 beyond the last edge.
            (The axis set by :meth:`set_axis` applies.)
        """
        ly = self.layers[layer]
        proto = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        call = proto(self._cfunc.address)
        point = (ctypes.c_double * 3)()
        step = (ctypes.c_uint64 * 4)()
        ctypes.c_double.from_buffer(step, 0).value = 1.0
        step[2] = step[3] = ctypes.addressof(point)
        out = np.empty(len(xyz_mm), dtype=np.int64)
        for k, p in enumerate(np.asarray(xyz_mm, dtype=np.float64)):
            point[:] = p.tolist()
            before = ly.view[ly.acc].copy()
            outside = ly.view[H_OUTSIDE]
            call(ly.ptr, ctypes.addressof(step), None)
            hit = np.flatnonzero(ly.view[ly.acc] != before)
            out[k] = hit[0] if len(hit) == 1 else (-1 if ly.view[H_OUTSIDE] != outside else -2)
        self.read()
        return out
