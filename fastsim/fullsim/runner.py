"""Run the Geant4 simulation in worker processes and write CaloChallenge HDF5 (and optionally ROOT).

Each worker process builds its own Geant4 application (:mod:`fastsim.fullsim.engine`) and
simulates every ``workers``-th event (event ``k`` goes to worker ``k % workers``), so high and low
energies are spread evenly. Events are seeded from ``(seed, k)``, which makes the output depend on
the seed only, not on the number of workers. Workers append their events to shard files in a
temporary directory next to the output; the parent shows progress (tqdm, showers/s), then merges
the shards in event order through :class:`fastsim.data.hdf5.ShowerWriter`, which renames the file
into place only when complete. A killed run therefore leaves no output file, only (when killed
hard) a hidden shard directory.

Geant4 sometimes crashes while tearing down at interpreter exit; workers therefore leave with
``os._exit`` after their shard is closed, and the parent process never imports Geant4.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastsim.errors import FastsimError
from fastsim.fullsim.calibration import (
    SCALE_EM,
    SCALES,
    UNITS,
    layer_totals,
    sampling_fractions,
    scale_attributes,
    stored_calibration,
    voxel_factors,
)
from fastsim.fullsim.detector import DetectorSpec, resolve_detector
from fastsim.fullsim.engine import (
    BALANCE_COLUMNS,
    SCORING_DESCRIPTIONS,
    SCORINGS,
    canonical_particle,
    check_angles,
    choose_physics,
    event_seed,
)
from fastsim.geometry import Geometry
from fastsim.outputs import check_target, discard, publish, temporary_path

#: Largest incident energy accepted (MeV): 100 TeV, as in the CaloChallenge file validation.
MAX_ENERGY_MEV = 1e8
#: Events a worker simulates per Geant4 run (between progress reports and shard appends).
BLOCK_EVENTS = 16


@dataclass
class SimulationSummary:
    """What a finished run reports.

    Attributes:
        path: the HDF5 file written.
        root_path: the ROOT file written, if any.
        e_inc: (N,) incident energies in MeV, in file order.
        balance: (N, 5) energy balance per event in MeV, columns :data:`BALANCE_COLUMNS`.
        event_seconds: (N,) Geant4 time of each event (BeginOfEvent to EndOfEvent), s.
        attrs: the attributes written into the file.
    """

    path: str
    root_path: str | None
    e_inc: np.ndarray
    balance: np.ndarray
    event_seconds: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    e_tot: np.ndarray | None = None

    @property
    def response(self) -> np.ndarray:
        """Visible (voxel, active-material) energy over incident energy per event, (N,)."""
        return self.balance[:, 0] / self.e_inc

    @property
    def file_response(self) -> np.ndarray:
        """E_tot/E_inc per event on the file's energy scale (EM scale by default), (N,)."""
        return (self.e_tot if self.e_tot is not None else self.balance[:, 0]) / self.e_inc


def check_energies(energies: np.ndarray) -> np.ndarray:
    """Incident energies as float64 (N,) MeV; raises :class:`FastsimError` for absurd values."""
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise FastsimError("no incident energies given")
    if not np.all(np.isfinite(e)):
        raise FastsimError("incident energies must be finite")
    if np.any(e <= 0) or np.any(e > MAX_ENERGY_MEV):
        bad = e[(e <= 0) | (e > MAX_ENERGY_MEV)][0]
        raise FastsimError(f"incident energy {bad:g} MeV is outside (0, {MAX_ENERGY_MEV:g}] MeV")
    return e


# --------------------------------------------------------------------------- worker side


def _worker_main(
    wid: int,
    config: dict[str, Any],
    indices: np.ndarray,
    energies: np.ndarray,
    angles: np.ndarray,
    shard_path: str,
    log_path: str,
    messages: Any,
    parent_pid: int,
) -> None:
    """Worker process: simulate events ``indices`` (energies in MeV, angles in degrees) into ``shard_path``."""
    import h5py

    code = 0
    # Geant4 writes its banner and warnings to the C++ streams: keep them in the worker's log
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.write(1, f"fastsim geant4 worker {wid} pid {os.getpid()}\n".encode())
    try:
        from fastsim.fullsim.engine import Application

        t_start = time.perf_counter()
        geometry = Geometry.from_dict(config["geometry"])
        detector = resolve_detector(config["detector"], geometry)
        app = Application(geometry, detector, config["particle"], config["physics"], config["cut_mm"], config["scoring"])
        messages.put(("init", wid, app.init_seconds, app.geant4_version, app.physics_description))
        n_vox = geometry.n_voxels
        with h5py.File(shard_path, "w") as f:
            d_sh = f.create_dataset("showers", (0, n_vox), maxshape=(None, n_vox), dtype=np.float32, chunks=(BLOCK_EVENTS, n_vox))
            d_bal = f.create_dataset("balance", (0, len(BALANCE_COLUMNS)), maxshape=(None, len(BALANCE_COLUMNS)), dtype=np.float64)
            d_t = f.create_dataset("seconds", (0,), maxshape=(None,), dtype=np.float64)
            n_lay = geometry.n_layers
            d_ls = f.create_dataset("layer_sums", (0, 2, n_lay), maxshape=(None, 2, n_lay), dtype=np.float64)
            for start in range(0, len(indices), BLOCK_EVENTS):
                if os.getppid() != parent_pid:
                    # the parent was killed: nobody will merge this shard, stop using the CPU
                    raise SystemExit("parent process is gone")
                idx = indices[start : start + BLOCK_EVENTS]
                block = slice(start, start + BLOCK_EVENTS)
                res = app.simulate(energies[block], [event_seed(config["seed"], int(k)) for k in idx], angles[block])
                n0, n = d_sh.shape[0], len(res)
                for d in (d_sh, d_bal, d_t, d_ls):
                    d.resize(n0 + n, axis=0)
                d_sh[n0:] = np.stack([r.voxels for r in res])
                d_bal[n0:] = np.stack([r.balance for r in res])
                d_t[n0:] = [r.seconds for r in res]
                d_ls[n0:] = np.stack([r.layer_sums for r in res])
                f.flush()  # a shard on disk is always readable up to the last block
                messages.put(("progress", wid, n))
            f.attrs["worker_seconds"] = time.perf_counter() - t_start
        messages.put(("done", wid, time.perf_counter() - t_start))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises
        code = 1
        with contextlib.suppress(Exception):
            messages.put(("error", wid, f"{type(err).__name__}: {err}"))
    finally:
        with contextlib.suppress(Exception):
            messages.close()
            messages.join_thread()
        os._exit(code)


# --------------------------------------------------------------------------- parent side


def _tail(path: str, n: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-n:] if line.strip())
    except OSError:
        return ""


def _run_workers(
    config: dict[str, Any], energies: np.ndarray, angles: np.ndarray, workers: int, shard_dir: str, progress: bool
) -> tuple[list[str], dict[str, Any]]:
    """Start the workers, follow their progress, return shard paths and run information."""
    from tqdm import tqdm

    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: Geant4 state is never forked
    messages = ctx.Queue()
    n = len(energies)
    procs, shards, logs = [], [], []
    for wid in range(workers):
        idx = np.arange(wid, n, workers)
        shard = os.path.join(shard_dir, f"shard-{wid}.h5")
        log = os.path.join(shard_dir, f"worker-{wid}.log")
        p = ctx.Process(target=_worker_main, args=(wid, config, idx, energies[idx], angles[idx], shard, log, messages, os.getpid()), daemon=True)
        procs.append(p)
        shards.append(shard)
        logs.append(log)
    info: dict[str, Any] = {"worker_seconds": [0.0] * workers, "init_seconds": [0.0] * workers}
    done: set[int] = set()
    bar = tqdm(total=n, unit="shower", desc="geant4", disable=not progress, smoothing=0.05, dynamic_ncols=True)
    try:
        for p in procs:
            p.start()
        while len(done) < workers:
            try:
                msg = messages.get(timeout=1.0)
            except queue_mod.Empty:
                msg = None
            if msg is None:
                dead = [w for w, p in enumerate(procs) if w not in done and not p.is_alive() and p.exitcode not in (None, 0)]
                if dead:
                    w = dead[0]
                    raise FastsimError(f"Geant4 worker {w} died (exit code {procs[w].exitcode}): {_tail(logs[w])}")
                continue
            kind, wid = msg[0], msg[1]
            if kind == "progress":
                bar.update(msg[2])
            elif kind == "init":
                info["init_seconds"][wid] = msg[2]
                info["geant4_version"], info["physics_description"] = msg[3], msg[4]
            elif kind == "done":
                info["worker_seconds"][wid] = msg[2]
                done.add(wid)
            elif kind == "error":
                raise FastsimError(f"Geant4 worker {wid} failed: {msg[2]} (log: {_tail(logs[wid], 4)})")
        for p in procs:
            p.join(timeout=60)
    finally:
        bar.close()
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    return shards, info


def _iter_merged(shards: list[str], n: int, block: int = 4096) -> Any:
    """Yield (rows slice, showers, balance, seconds, layer sums) blocks in event order from interleaved shards."""
    import h5py

    w = len(shards)
    files = [h5py.File(s, "r") for s in shards]
    try:
        sizes = [f["showers"].shape[0] for f in files]
        expected = [len(range(i, n, w)) for i in range(w)]
        if sizes != expected:
            raise FastsimError(f"worker shards hold {sizes} events, expected {expected}")
        per = max(1, block // w)
        for p0 in range(0, max(sizes), per):
            p1 = p0 + per
            k0, k1 = p0 * w, min(n, p1 * w)
            n_vox = files[0]["showers"].shape[1]
            sh = np.empty((k1 - k0, n_vox), dtype=np.float32)
            bal = np.empty((k1 - k0, len(BALANCE_COLUMNS)), dtype=np.float64)
            sec = np.empty(k1 - k0, dtype=np.float64)
            lsum = np.empty((k1 - k0, *files[0]["layer_sums"].shape[1:]), dtype=np.float64)
            for i, f in enumerate(files):
                rows = slice(p0, min(p1, sizes[i]))
                pos = np.arange(rows.start, rows.stop) * w + i - k0
                sh[pos] = f["showers"][rows]
                bal[pos] = f["balance"][rows]
                sec[pos] = f["seconds"][rows]
                lsum[pos] = f["layer_sums"][rows]
            yield slice(k0, k1), sh, bal, sec, lsum
    finally:
        for f in files:
            f.close()


def _energy_table(e_inc: np.ndarray, values: np.ndarray, discrete: bool) -> dict[str, float]:
    """Mean of ``values`` per distinct energy, keys the energy in MeV formatted with %g."""
    if not discrete:
        return {}
    return {f"{e:g}": float(values[e_inc == e].mean()) for e in np.unique(e_inc)}


def simulate(
    output: str | os.PathLike,
    energies: np.ndarray,
    *,
    particle: str = "gamma",
    geometry: str | Geometry = "1-photons",
    detector: str = "atlas",
    physics: str = "auto",
    seed: int = 0,
    workers: int | None = None,
    cut_mm: float = 0.7,
    root_output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    energy_spec: str = "",
    discrete: bool = True,
    energy_scale: str = "em",
    scoring: str = "steps",
    angles: np.ndarray | None = None,
) -> SimulationSummary:
    """Simulate single particles with Geant4 and write a CaloChallenge HDF5 file (MeV).

    Args:
        output: the HDF5 file to write (atomically).
        energies: (N,) incident kinetic energies in MeV, one per event, in file order.
        particle: gamma/photon, e-/electron, e+/positron (pions need hadronic data: refused if absent).
        geometry: the voxel binning (built-in name, XML path or Geometry).
        detector: ``"atlas"`` (ATLAS-barrel-like, five layers) or ``"sampling"`` (any binning).
        physics: ``auto``, ``datafree``, ``stock`` or ``ftfp_bert`` (see engine.choose_physics).
        seed: the run seed; event ``k`` is seeded from ``(seed, k)``.
        workers: worker processes (default ``os.cpu_count()``, at most one per event).
        cut_mm: Geant4 production cut in mm.
        root_output: also write a ROOT file: TTree ``events`` with ``e_inc`` (double, MeV) and
            ``voxels`` (float[V], MeV) per event.
        overwrite: replace existing output files.
        progress: show a tqdm bar (showers/s).
        energy_spec: how the energies were chosen (recorded in the file).
        discrete: the energies are a few discrete values (then per-energy times are recorded).
        energy_scale: ``"em"`` (default): voxel energies on the calorimeter's EM scale, each layer's
            active-material deposit divided by its sampling fraction — the detector's stored
            calibration (:data:`fastsim.fullsim.calibration.CALIBRATIONS`) where there is one, else
            the fractions measured on this run's own showers; ``"active"``: the raw active-material
            deposits. Either way the fractions measured on this run are recorded
            (``sampling_fractions_this_run``).
        scoring: ``"steps"`` (default: plain active gaps, each step's deposit put into the voxel of
            its midpoint by compiled code) or ``"volumes"`` (one Geant4 volume per voxel and gap;
            exact edges as geometry boundaries, ~1.5× slower); see :data:`engine.SCORINGS`.
        angles: (N,) incidence angle of each event in degrees from the calorimeter's normal, in
            [0, 45] (default: all 0); the binning of each layer is centred where the particle's
            axis crosses the layer's middle. When given, the file gets an ``incident_angles``
            (N, 1) dataset (degrees) beside ``incident_energies``. Angles other than 0 need
            ``steps`` scoring.

    Returns:
        a :class:`SimulationSummary`.
    """
    from fastsim.data.hdf5 import ANGLES_DATASET, ShowerWriter

    output = os.fspath(output)
    e_inc = check_energies(energies)
    geo = Geometry.resolve(geometry)
    g4_particle = canonical_particle(particle)
    phys = choose_physics(g4_particle, physics)
    spec: DetectorSpec = resolve_detector(detector, geo)
    if seed < 0:
        raise FastsimError(f"seed must be >= 0, got {seed}")
    if scoring not in SCORINGS:
        raise FastsimError(f"unknown scoring {scoring!r}; choose {' or '.join(SCORINGS)}")
    angle = np.zeros(len(e_inc)) if angles is None else check_angles(angles)
    if angle.shape != e_inc.shape:
        raise FastsimError(f"{len(angle)} incidence angles for {len(e_inc)} energies")
    if scoring != "steps" and np.any(angle != 0):
        raise FastsimError("incidence angles other than 0 need --scoring steps (voxel volumes are fixed on the z axis)")
    if energy_scale not in SCALES:
        raise FastsimError(f"unknown energy scale {energy_scale!r}; choose {' or '.join(SCALES)}")
    n = len(e_inc)
    workers = max(1, min(int(workers or os.cpu_count() or 1), n))
    for path in (output, root_output):
        if path is not None:
            check_target(path, overwrite)
    out_dir = os.path.dirname(os.path.abspath(output))
    config = {"geometry": geo.to_dict(), "detector": detector, "particle": g4_particle, "physics": phys, "cut_mm": float(cut_mm), "seed": int(seed), "scoring": scoring}

    t0 = time.perf_counter()
    shard_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.shards-", dir=out_dir)
    try:
        shards, info = _run_workers(config, e_inc, angle, workers, shard_dir, progress)
        wall = time.perf_counter() - t0
        f_run, f_run_unc = _run_sampling_fractions(shards, n, geo)
        fractions, source = _chosen_fractions(energy_scale, spec, f_run, f_run_unc, n)
        vfac = voxel_factors(geo, 1.0 / fractions) if energy_scale == SCALE_EM else None
        balance = np.empty((n, len(BALANCE_COLUMNS)))
        seconds = np.empty(n)
        e_tot = np.empty(n)
        root_writer = _RootWriter(root_output, geo.n_voxels, energy_scale) if root_output is not None else None
        try:
            with ShowerWriter(output, geo.n_voxels, overwrite=overwrite) as writer:
                for rows, sh, bal, sec, _ls in _iter_merged(shards, n):
                    if vfac is not None:
                        sh = sh * vfac
                    writer.append(e_inc[rows], sh)
                    if root_writer is not None:
                        root_writer.append(e_inc[rows], sh)
                    balance[rows], seconds[rows] = bal, sec
                    e_tot[rows] = sh.sum(axis=1, dtype=np.float64)
                if angles is not None:
                    writer.add_dataset(ANGLES_DATASET, angle[:, None], units="deg", pivot_z_mm=spec.depth_mm / 2)
                frac = balance / e_inc[:, None]
                response = e_tot / e_inc
                attrs = {
                    "producer": "geant4",
                    "geant4_version": info.get("geant4_version", ""),
                    "physics_list": info.get("physics_description", phys),
                    "detector": spec.to_dict(),
                    "geometry": geo.to_dict(),
                    "particle": g4_particle,
                    "seed": int(seed),
                    "workers": workers,
                    "cpu_count": os.cpu_count() or 1,
                    "n_showers": n,
                    "energy_spec": energy_spec,
                    "scoring": SCORING_DESCRIPTIONS[scoring],
                    "units": UNITS[energy_scale],
                    **scale_attributes(energy_scale, fractions, source),
                    "sampling_fractions_this_run": json.dumps([_finite(x) for x in f_run]),
                    "sampling_fractions_this_run_unc": json.dumps([_finite(x) for x in f_run_unc]),
                    # per core: every worker's wall time (initialisation included) summed, per shower
                    "time_per_shower_s": float(sum(info["worker_seconds"]) / n),
                    "time_per_shower_by_energy": _energy_table(e_inc, seconds, discrete),
                    "geant4_init_s": float(np.mean(info["init_seconds"])),
                    "wall_time_s": float(wall),
                    # E_tot/E_inc on the file's scale; the visible (active-material) fraction beside it
                    "response_mean": float(response.mean()),
                    "response_by_energy": _energy_table(e_inc, response, discrete),
                    "visible_fraction_by_energy": _energy_table(e_inc, frac[:, 0], discrete),
                    "energy_balance_columns": list(BALANCE_COLUMNS),
                    "energy_balance_mean_fraction": {c: float(frac[:, j].mean()) for j, c in enumerate(BALANCE_COLUMNS)},
                }
                writer.set_attrs(**{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items()})
            if root_writer is not None:
                root_writer.close()
        except BaseException:
            if root_writer is not None:
                root_writer.abort()
            raise
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    return SimulationSummary(output, os.fspath(root_output) if root_output else None, e_inc, balance, seconds, attrs, e_tot)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _run_sampling_fractions(shards: list[str], n: int, geo: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Each layer's sampling fraction measured on the run's own showers (NaN where a layer saw nothing)."""
    active = np.empty((n, geo.n_layers))
    passive = np.empty((n, geo.n_layers))
    for rows, sh, _bal, _sec, ls in _iter_merged(shards, n):
        active[rows] = layer_totals(sh, geo) + ls[:, 0]
        passive[rows] = ls[:, 1]
    return sampling_fractions(active, passive)


def _chosen_fractions(
    scale: str, spec: DetectorSpec, f_run: np.ndarray, f_run_unc: np.ndarray, n: int
) -> tuple[np.ndarray, str]:
    """The sampling fractions that define the file's EM scale, and where they come from."""
    cal = stored_calibration(spec.name)
    if cal is not None:
        return np.asarray(cal.fractions, dtype=np.float64), f"stored calibration of {spec.name}: {cal.source}"
    if scale != SCALE_EM:
        return f_run, ""
    if not np.all(np.isfinite(f_run)):
        bad = np.flatnonzero(~np.isfinite(f_run)).tolist()
        raise FastsimError(
            f"detector {spec.name!r} has no stored sampling fractions and layer(s) {bad} saw no energy in "
            f"these {n} showers, so the EM scale cannot be measured; simulate more or higher-energy showers, "
            "or pass --energy-scale active"
        )
    return f_run, f"measured on this run's {n} showers (Σ active / Σ (active + passive) per layer)"


class _RootWriter:
    """A ROOT TTree ``events`` (``e_inc`` double MeV, ``voxels`` float[V] MeV), written atomically.

    Tree and branch names are the defaults of ``fastsim prep-root --kind voxels``.
    """

    def __init__(self, path: str | os.PathLike, n_voxels: int, energy_scale: str = SCALE_EM) -> None:
        import uproot

        self.path = os.fspath(path)
        self.tmp = temporary_path(self.path)
        self.file = uproot.recreate(self.tmp)
        self.tree = self.file.mktree(
            "events",
            {"e_inc": np.float64, "voxels": np.dtype((np.float32, (n_voxels,)))},
            title=f"Geant4 single-particle showers (fastsim simulate): MeV, {energy_scale} scale",
        )

    def append(self, e_inc: np.ndarray, showers: np.ndarray) -> None:
        self.tree.extend({"e_inc": np.asarray(e_inc, np.float64), "voxels": np.asarray(showers, np.float32)})

    def close(self) -> None:
        self.file.close()
        publish(self.tmp, self.path, overwrite=True)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        discard(self.tmp)
