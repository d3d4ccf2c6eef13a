"""The compiled ``ProcessHits`` of the step scorer (numba ``cfunc``; see :mod:`fastsim.fullsim.native`).

Imported only by :func:`fastsim.fullsim.native._compile` (it needs numba). Compiled at the first
import and cached on disk by numba, so later processes load machine code. Geant4 calls it as the
C++ member function ``G4bool ProcessHits(G4Step*, G4TouchableHistory*)``: ``this`` in the first
argument. Geant4 11.4 layouts read: ``G4Step`` — ``double fTotalEnergyDeposit`` at byte 0,
``G4StepPoint* fpPreStepPoint, fpPostStepPoint`` at bytes 16 and 24; ``G4StepPoint`` —
``G4ThreeVector fPosition`` (3 doubles, mm) at byte 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import carray, cfunc, types
from numba.core.extending import intrinsic

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

_REGION = REGION_OFFSET // 8
_TWO_PI = 2.0 * math.pi
_PI = math.pi


@intrinsic
def _as_pointer(typingctx: Any, addr: Any) -> Any:
    """An integer address as a ``void*``."""
    sig = types.voidptr(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return sig, codegen


@cfunc(types.boolean(types.voidptr, types.voidptr, types.voidptr), nopython=True, cache=True)
def process_hits(this: Any, step: Any, history: Any) -> bool:  # pragma: no cover - runs inside Geant4
    """Add the step's energy deposit to the voxel of the step's midpoint (module doc)."""
    edep = carray(step, (1,), np.float64)[0]
    if edep == 0.0:
        return False
    ptrs = carray(step, (4,), np.uint64)
    pre = carray(_as_pointer(ptrs[2]), (3,), np.float64)
    post = carray(_as_pointer(ptrs[3]), (3,), np.float64)
    head = carray(this, (_REGION + HEADER,), np.float64)
    n_r = int(head[_REGION + H_NR])
    n_alpha = int(head[_REGION + H_NALPHA])
    n_edges = int(head[_REGION + H_NEDGES])
    acc0 = int(head[_REGION + H_ACC])
    d = carray(this, (_REGION + acc0 + n_r * n_alpha,), np.float64)
    h = _REGION
    d[h + H_STEPS] += 1.0
    d[h + H_TOTAL] += edep
    z = 0.5 * (pre[2] + post[2])
    if z < d[h + H_ZLO] - 1e-6 or z > d[h + H_ZHI] + 1e-6:
        d[h + H_BAD] += 1.0
    # the binning is centred on the particle's axis in the plane of the midpoint's depth
    dx = 0.5 * (pre[0] + post[0]) - (d[h + H_XC] + d[h + H_TX] * z)
    dy = 0.5 * (pre[1] + post[1]) - (d[h + H_YC] + d[h + H_TY] * z)
    r = math.sqrt(dx * dx + dy * dy)
    # Geometry.voxel_index: searchsorted(r_edges, r, "right") - 1, valid in [0, n_r)
    rb = -1
    for k in range(n_edges):
        if r >= d[h + HEADER + k]:
            rb = k
        else:
            break
    if rb < 0 or rb >= n_r:
        d[h + H_OUTSIDE] += edep
        return True
    # Geometry.voxel_index: floor(((α + π) mod 2π) · n_α / 2π), at most n_α - 1
    a = (math.atan2(dy, dx) + _PI) % _TWO_PI
    ab = int(a * n_alpha / _TWO_PI)
    if ab > n_alpha - 1:
        ab = n_alpha - 1
    d[h + acc0 + ab * n_r + rb] += edep
    return True
