"""Data layout shared by the compiled step scorer (:mod:`fastsim.fullsim._step_kernel`) and its owner.

Each layer's scorer is one C++ ``G4VSensitiveDetector`` allocation; float64 slots from byte
:data:`REGION_OFFSET` on hold a header (indices below), the radial edges from slot :data:`HEADER`
on, and the per-voxel sums (α-major, as the flat voxel order) from slot ``header[H_ACC]`` on.
"""

#: Byte offset of the scorer's data inside its allocation; G4VSensitiveDetector is ~200 bytes.
REGION_OFFSET = 4096
#: Header slots: n_r, n_α, the particle's axis at z = 0 (x, y in mm), z range (mm), steps outside
#: the z range, energy beyond the last edge (MeV), total energy (MeV), steps with energy, number of
#: edges, first accumulator slot, the axis' slopes dx/dz and dy/dz. The binning is centred at
#: (H_XC + H_TX·z, H_YC + H_TY·z) in the plane of the step's depth z.
H_NR, H_NALPHA, H_XC, H_YC, H_ZLO, H_ZHI, H_BAD, H_OUTSIDE, H_TOTAL, H_STEPS, H_NEDGES, H_ACC, H_TX, H_TY = (
    range(14)
)
#: First slot of the radial edges.
HEADER = 16
