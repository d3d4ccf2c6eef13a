"""One Geant4 application per process: build detector and physics once, then simulate events.

Geant4 allows one run manager per process and its geometry and physics cannot be rebuilt, so an
:class:`Application` is created once per worker process (:func:`get_application`). Events are
seeded one by one from ``(seed, event index)``, so an event's shower does not depend on which
worker simulated it or in what order: the same seed gives the same file for any ``--workers``.

Per event the application returns the voxel energies (MeV, deposited in the active material) and
the energy balance: active material outside the binning, passive material (absorbers and dead
material) and leakage (kinetic energy of particles leaving the detector, plus 2 mₑc² for each
escaping positron, whose annihilation energy is then missing too).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsim.errors import FastsimError
from fastsim.fullsim import g4env
from fastsim.fullsim.detector import ACTIVE_OUTSIDE, DEAD, PASSIVE, DetectorSpec, build_geant4
from fastsim.geometry import Geometry

#: Particles the EM physics lists can simulate, name -> Geant4 name.
EM_PARTICLES = {"gamma": "gamma", "photon": "gamma", "e-": "e-", "electron": "e-", "e+": "e+", "positron": "e+"}
#: Particles that need a hadronic physics list and its data sets.
HADRONS = {"pi+": "pi+", "pi-": "pi-", "proton": "proton", "neutron": "neutron", "kaon+": "kaon+"}

ELECTRON_MASS_MEV = 0.51099895
#: The particle starts this far (mm) from the axis, at angle GUN_PHI (rad), never on a sector edge.
GUN_OFFSET_MM, GUN_PHI = 1e-3, 0.1234

#: Columns of the per-event energy balance (MeV).
BALANCE_COLUMNS = ("visible_voxels", "active_outside", "passive", "dead", "leakage")

#: How the active gaps are scored: ``steps`` (default) — plain gap volumes, each step's deposit put
#: into the voxel of its midpoint by compiled code (:mod:`fastsim.fullsim.native`); ``volumes`` —
#: one Geant4 volume per voxel and gap, scored by copy number (exact voxel edges as geometry
#: boundaries, ~1.5× slower). Only ``steps`` can centre the binning on an inclined particle's axis.
SCORINGS = ("steps", "volumes")
#: What each scoring does, as recorded in the output file's ``scoring`` attribute.
SCORING_DESCRIPTIONS = {
    "steps": "steps: plain active gaps; each step's energy deposit goes to the voxel of the step's midpoint "
    "(Geometry.voxel_index rule), computed by a compiled Geant4 sensitive detector (fastsim.fullsim.native)",
    "volumes": "volumes: one G4Tubs ring-sector volume per voxel in every active gap, scored by copy number",
}
#: Largest incidence angle accepted (degrees from the calorimeter's normal).
MAX_ANGLE_DEG = 45.0


def event_seed(seed: int, index: int) -> int:
    """The Geant4 engine seed of event ``index`` of a run with ``seed`` (63-bit, never 0)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) or 1


def canonical_particle(name: str) -> str:
    """Geant4 name of a particle given as gamma/photon, e-/electron, e+/positron, pi+ …"""
    if name in EM_PARTICLES:
        return EM_PARTICLES[name]
    if name in HADRONS:
        return HADRONS[name]
    raise FastsimError(f"unknown particle {name!r}; choose one of {sorted({**EM_PARTICLES, **HADRONS})}")


def choose_physics(particle: str, physics: str = "auto") -> str:
    """The physics list to use: ``datafree``, ``stock`` or ``ftfp_bert``; raises if impossible.

    ``auto`` takes the stock EM list when its data sets are present and the data-free list
    otherwise; hadrons always need ``ftfp_bert`` and all its data sets (never silently something else).
    """
    particle = canonical_particle(particle)
    if particle in HADRONS.values():
        missing = g4env.missing_datasets(g4env.HADRONIC_NEEDS)
        if physics not in ("auto", "ftfp_bert"):
            raise FastsimError(f"particle {particle} needs a hadronic physics list (--physics ftfp_bert), not {physics!r}")
        if missing:
            raise FastsimError(
                f"particle {particle} needs hadronic physics (FTFP_BERT) and the Geant4 data sets "
                f"{', '.join(missing)}, which are not installed here; set those variables (or "
                "GEANT4_DATA_DIR) to the real data sets. Only e-, e+ and gamma can be simulated without them"
            )
        return "ftfp_bert"
    if physics == "auto":
        return "stock" if not g4env.missing_datasets(g4env.STOCK_EM_NEEDS) else "datafree"
    if physics == "stock":
        missing = g4env.missing_datasets(g4env.STOCK_EM_NEEDS)
        if missing:
            raise FastsimError(
                f"--physics stock needs the Geant4 data sets {', '.join(missing)} (not found); use --physics datafree"
            )
    elif physics not in ("datafree", "ftfp_bert"):
        raise FastsimError(f"unknown physics list {physics!r}; choose auto, datafree, stock or ftfp_bert")
    return physics


@dataclass
class EventResult:
    """What one event leaves.

    Attributes:
        voxels: (V,) float32 MeV deposited in the active material of each voxel.
        balance: (5,) float64 MeV, :data:`BALANCE_COLUMNS`.
        seconds: Geant4 time of the event.
        layer_sums: (2, L) float64 MeV per layer: row 0 the active material outside the binning,
            row 1 the passive material of the layer (its absorber). With the voxels this gives each
            layer's sampling fraction (:mod:`fastsim.fullsim.calibration`).
    """

    voxels: np.ndarray
    balance: np.ndarray
    seconds: float
    layer_sums: np.ndarray


class Application:
    """A configured Geant4 application (one per process).

    Args:
        geometry: the voxel binning.
        detector: the detector spec.
        particle: Geant4 particle name.
        physics: ``datafree``, ``stock`` or ``ftfp_bert`` (see :func:`choose_physics`).
        cut_mm: production cut in mm.
        scoring: ``steps`` or ``volumes`` (:data:`SCORINGS`).
    """

    def __init__(
        self, geometry: Geometry, detector: DetectorSpec, particle: str, physics: str, cut_mm: float = 0.7,
        scoring: str = "steps",
    ) -> None:
        from fastsim.fullsim.physics import make_physics_list

        if scoring not in SCORINGS:
            raise FastsimError(f"unknown scoring {scoring!r}; choose {' or '.join(SCORINGS)}")
        g4 = g4env.import_geant4()
        self.g4 = g4
        self.geometry, self.detector, self.particle, self.physics = geometry, detector, particle, physics
        self.scoring = scoring
        self.key = (geometry.to_json(), repr(detector), particle, physics, cut_mm, scoring)
        self._scorer: Any = None
        self._angles: np.ndarray = np.zeros(0)
        # the inclined particle's axis crosses the detector's z axis at the middle of the stack
        self.pivot_z_mm = detector.depth_mm / 2
        self._keep: list[Any] = []
        self._voxels = np.zeros(geometry.n_voxels, dtype=np.float64)
        self._balance = np.zeros(len(BALANCE_COLUMNS), dtype=np.float64)
        self._layer_sums = np.zeros((2, geometry.n_layers), dtype=np.float64)
        self._energies: np.ndarray = np.zeros(0)
        self._seeds: list[int] = []
        self._results: list[EventResult] = []
        self._t0 = 0.0
        app = self

        class Detector(g4.G4VUserDetectorConstruction):
            def Construct(self) -> Any:  # noqa: N802 - Geant4 interface
                world, info = build_geant4(g4, detector, geometry, app._keep, voxel_volumes=scoring == "volumes")
                app._info = info
                return world

            def ConstructSDandField(self) -> None:  # noqa: N802 - Geant4 interface
                sdm = g4.G4SDManager.GetSDMpointer()
                mfd = g4.G4MultiFunctionalDetector("calo")
                scorer = g4.G4PSEnergyDeposit("edep")
                mfd.RegisterPrimitive(scorer)
                sdm.AddNewDetector(mfd)
                for lv in app._info["scored"]:
                    self.SetSensitiveDetector(lv, mfd)
                leak = LeakageDetector("leak")
                sdm.AddNewDetector(leak)
                self.SetSensitiveDetector(app._info["world_lv"], leak)
                app._keep += [mfd, scorer, leak]
                app._hc_id = sdm.GetCollectionID("calo/edep")
                if scoring == "steps":
                    from fastsim.fullsim.native import StepScorer

                    app._scorer = StepScorer(g4, app._keep)
                    for (name, z_lo, z_hi), ly in zip(app._info["gaps"], geometry.layers, strict=True):
                        app._scorer.attach(name, np.asarray(ly.r_edges), ly.n_alpha, (z_lo, z_hi))

        class LeakageDetector(g4.G4VSensitiveDetector):
            """Counts and kills every particle that reaches the world volume (it left the detector)."""

            def ProcessHits(self, step: Any, history: Any) -> bool:  # noqa: N802 - Geant4 interface
                track = step.GetTrack()
                energy = step.GetPreStepPoint().GetKineticEnergy()
                if track.GetDefinition().GetPDGEncoding() == -11:
                    energy += 2 * g4.electron_mass_c2
                app._balance[4] += energy / g4.MeV
                track.SetTrackStatus(g4.fStopAndKill)
                return True

        class Primary(g4.G4VUserPrimaryGeneratorAction):
            def __init__(self) -> None:
                super().__init__()
                self.gun = g4.G4ParticleGun(1)
                pdef = g4.G4ParticleTable.GetParticleTable().FindParticle(particle)
                if pdef is None:
                    raise FastsimError(f"Geant4 does not know the particle {particle!r} in this physics list")
                self.gun.SetParticleDefinition(pdef)
                self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))

            def GeneratePrimaries(self, event: Any) -> None:  # noqa: N802 - Geant4 interface
                i = event.GetEventID()
                # seeding each event from (seed, index) makes it independent of worker and order
                g4.HepRandom.getTheEngine().setSeed(app._seeds[i], 0)
                # 1 µm off the axis, inside an α sector: on the axis itself the particle would sit on
                # the common edge of all sector volumes (Geant4 reports stuck tracks there)
                x, y = GUN_OFFSET_MM * math.cos(GUN_PHI), GUN_OFFSET_MM * math.sin(GUN_PHI)
                z = app._info["gun_z_mm"]
                angle = float(app._angles[i]) if len(app._angles) else 0.0
                x0, y0, dxdz, dydz = app.axis(angle)
                if angle != 0.0:
                    # inclined in the x-z plane, starting on the axis (+ the 1 µm offset)
                    theta = math.radians(angle)
                    x += x0 + dxdz * z
                    self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(math.sin(theta), 0, math.cos(theta)))
                else:
                    self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))
                if app._scorer is not None:
                    app._scorer.set_axis(x0, y0, dxdz, dydz)
                self.gun.SetParticlePosition(g4.G4ThreeVector(x * g4.mm, y * g4.mm, z * g4.mm))
                self.gun.SetParticleEnergy(float(app._energies[i]) * g4.MeV)
                self.gun.GeneratePrimaryVertex(event)

        class Events(g4.G4UserEventAction):
            def BeginOfEventAction(self, event: Any) -> None:  # noqa: N802 - Geant4 interface
                app._voxels[:] = 0.0
                app._balance[:] = 0.0
                app._layer_sums[:] = 0.0
                app._t0 = time.perf_counter()

            def EndOfEventAction(self, event: Any) -> None:  # noqa: N802 - Geant4 interface
                hce = event.GetHCofThisEvent()
                hits = hce.GetHC(app._hc_id) if hce is not None else None
                n_vox = geometry.n_voxels
                if hits is not None:
                    for index, edep in hits:
                        if index < n_vox:
                            app._voxels[index] += edep
                        elif index >= DEAD:
                            app._balance[3] += edep
                        elif index >= PASSIVE:
                            app._balance[2] += edep
                            app._layer_sums[1, index - PASSIVE] += edep
                        elif index >= ACTIVE_OUTSIDE:
                            app._balance[1] += edep
                            app._layer_sums[0, index - ACTIVE_OUTSIDE] += edep
                if app._scorer is not None:
                    vox, outside = app._scorer.read()
                    app._voxels += vox
                    app._balance[1] += outside.sum()
                    app._layer_sums[0] += outside
                app._balance[0] = app._voxels.sum()
                app._results.append(
                    EventResult(
                        app._voxels.astype(np.float32), app._balance.copy(), time.perf_counter() - app._t0,
                        app._layer_sums.copy(),
                    )
                )

        class Actions(g4.G4VUserActionInitialization):
            def Build(self) -> None:  # noqa: N802 - Geant4 interface
                actions = [Primary(), Events()]
                app._keep += actions  # Geant4 holds raw pointers to them
                for action in actions:
                    self.SetUserAction(action)

        t0 = time.perf_counter()
        ui = g4.G4UImanager.GetUIpointer()
        for cmd in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0",
                    "/process/verbose 0", "/process/em/verbose 0", "/process/eLoss/verbose 0"):
            ui.ApplyCommand(cmd)
        g4.HepRandom.setTheEngine(g4.MixMaxRng())
        self.run_manager = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.SerialOnly)
        self.run_manager.SetVerboseLevel(0)
        self.physics_list, self.physics_description = make_physics_list(g4, physics, cut_mm)
        inits = [Detector(), self.physics_list, Actions()]
        self._keep += inits
        for init in inits:
            self.run_manager.SetUserInitialization(init)
        self.run_manager.Initialize()
        # the EM parameters (and their UI commands) exist once the processes are constructed;
        # the tables are built, and would be printed, at the first BeamOn
        ui.ApplyCommand("/process/em/verbose 0")
        ui.ApplyCommand("/process/eLoss/verbose 0")
        self.init_seconds = time.perf_counter() - t0
        self.geant4_version = g4env.geant4_version(g4)

    def axis(self, angle_deg: float) -> tuple[float, float, float, float]:
        """The particle's nominal axis at incidence angle θ: (x0, y0, dx/dz, dy/dz), mm.

        The particle travels in the x-z plane at θ from +z; its axis crosses x = y = 0 at
        :attr:`pivot_z_mm` (the middle of the stack), so showers stay central at any angle. The
        binning of every layer is centred on this axis in the plane of each deposit's depth:
        x_axis(z) = (z − pivot) tan θ (at θ = 0 the z axis, as before).
        """
        t = math.tan(math.radians(angle_deg))
        return -self.pivot_z_mm * t, 0.0, t, 0.0

    def simulate(
        self, energies_mev: np.ndarray, seeds: list[int], angles_deg: np.ndarray | None = None
    ) -> list[EventResult]:
        """Simulate one event per entry of ``energies_mev`` (MeV), event ``k`` seeded with ``seeds[k]``.

        ``angles_deg`` (same length, optional): incidence angle of each event in degrees from the
        calorimeter's normal (0 = along +z), in [0, :data:`MAX_ANGLE_DEG`]; needs ``steps`` scoring
        unless all are 0.
        """
        energies = np.asarray(energies_mev, dtype=np.float64)
        if len(seeds) != len(energies):
            raise ValueError("one seed per event is needed")
        angles = np.zeros(len(energies)) if angles_deg is None else np.asarray(angles_deg, dtype=np.float64)
        if angles.shape != energies.shape:
            raise ValueError("one angle per event is needed")
        check_angles(angles)
        if self.scoring != "steps" and np.any(angles != 0):
            raise FastsimError("incidence angles other than 0 need --scoring steps (voxel volumes are fixed on the z axis)")
        self._angles = angles
        if len(energies) == 0:
            return []
        if not np.all(np.isfinite(energies)) or np.any(energies <= 0):
            raise FastsimError("incident energies must be finite and positive (MeV)")
        self._energies, self._seeds, self._results = energies, [int(s) for s in seeds], []
        self.run_manager.BeamOn(len(energies))
        results, self._results = self._results, []
        if len(results) != len(energies):
            raise FastsimError(f"Geant4 returned {len(results)} events for {len(energies)} requested")
        return results

    def check_voxel_mapping(self, points_per_layer: int = 200, seed: int = 0, angle_deg: float = 0.0) -> tuple[int, int]:
        """Ask Geant4's navigator which volume random points of each active slab are in.

        Every point (r, α) in the first active slab of each layer must be in the volume whose copy
        number is :meth:`Geometry.voxel_index` of that point (or the layer's "active outside" volume
        beyond the last radial edge). Needs the geometry closed (call after :meth:`simulate`).
        With ``steps`` scoring the compiled scorer of each layer is run on those points instead
        (:meth:`fastsim.fullsim.native.StepScorer.voxel_of_points`), with the binning centred on the
        axis of a particle at ``angle_deg`` (points around that axis at their own depth).

        Returns:
            (points checked, mismatches).
        """
        if self._scorer is not None:
            return self._check_step_scorer(points_per_layer, seed, angle_deg)
        g4 = self.g4
        nav = g4.G4TransportationManager.GetTransportationManager().GetNavigatorForTracking()
        rng = np.random.default_rng(seed)
        n = bad = 0
        z = 0.0
        for i, (ls, ly) in enumerate(zip(self.detector.layers, self.geometry.layers, strict=True)):
            z += ls.front_thickness_mm
            k = next(j for j, s in enumerate(ls.cell) if s.active)
            zc = z + sum(s.thickness_mm for s in ls.cell[:k]) + ls.cell[k].thickness_mm / 2
            r = rng.uniform(0, min(ls.radius_mm * 0.999, ly.r_edges[-1] * 1.2), points_per_layer)
            a = rng.uniform(-math.pi, math.pi, points_per_layer)
            expect = self.geometry.voxel_index(np.full(points_per_layer, i), r, a)
            expect[expect < 0] = ACTIVE_OUTSIDE + i
            for rj, aj, ej in zip(r, a, expect, strict=True):
                pos = g4.G4ThreeVector(rj * math.cos(aj) * g4.mm, rj * math.sin(aj) * g4.mm, zc * g4.mm)
                pv = nav.LocateGlobalPointAndSetup(pos, None, False)
                n += 1
                bad += pv is None or pv.GetCopyNo() != ej
            z += ls.thickness_mm
        return n, bad


    def _check_step_scorer(self, points_per_layer: int, seed: int, angle_deg: float = 0.0) -> tuple[int, int]:
        rng = np.random.default_rng(seed)
        n = bad = 0
        for i, ((_, lo, hi), ly) in enumerate(zip(self._info["gaps"], self.geometry.layers, strict=True)):
            r = rng.uniform(0, ly.r_edges[-1] * 1.2, points_per_layer)
            a = rng.uniform(-math.pi, math.pi, points_per_layer)
            z = rng.uniform(lo, hi, points_per_layer)
            x0, y0, tx, ty = self.axis(angle_deg)
            self._scorer.set_axis(x0, y0, tx, ty)
            pts = np.stack([x0 + tx * z + r * np.cos(a), y0 + ty * z + r * np.sin(a), z], axis=1)
            expect = self.geometry.voxel_index(np.full(points_per_layer, i), r, a)
            got = self._scorer.voxel_of_points(i, pts)
            got[got >= 0] += int(self.geometry.layer_offsets[i])
            n += points_per_layer
            bad += int(np.sum(got != expect))
        return n, bad


_APP: Application | None = None


def get_application(
    geometry: Geometry, detector: DetectorSpec, particle: str, physics: str, cut_mm: float = 0.7, scoring: str = "steps"
) -> Application:
    """The process's application, created on first use; a different configuration is an error."""
    global _APP
    key = (geometry.to_json(), repr(detector), particle, physics, cut_mm, scoring)
    if _APP is None:
        _APP = Application(geometry, detector, particle, physics, cut_mm, scoring)
    elif _APP.key != key:
        raise FastsimError(
            "Geant4 can be configured once per process; this process already simulates another setup "
            "(run a new process, e.g. workers >= 1)"
        )
    return _APP


def check_angles(angles_deg: np.ndarray) -> np.ndarray:
    """Incidence angles as float64 degrees; raises :class:`FastsimError` outside [0, MAX_ANGLE_DEG]."""
    a = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    bad = a[~np.isfinite(a) | (a < 0) | (a > MAX_ANGLE_DEG)]
    if bad.size:
        raise FastsimError(f"incidence angle {bad[0]:g} deg is outside [0, {MAX_ANGLE_DEG:g}] deg")
    return a


def balance_ok(e_inc: np.ndarray, balance: np.ndarray, particle: str, rel_tol: float = 1e-3) -> np.ndarray:
    """Per event: visible + invisible + leakage equals the available energy within ``rel_tol``.

    The available energy is the kinetic energy, plus 2 mₑc² for a positron (its annihilation).
    """
    avail = np.asarray(e_inc, dtype=float) + (2 * ELECTRON_MASS_MEV if particle == "e+" else 0.0)
    total = np.asarray(balance).sum(axis=1)
    return np.abs(total - avail) <= rel_tol * avail + 1e-6
