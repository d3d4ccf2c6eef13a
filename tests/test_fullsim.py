"""Geant4 full simulation (fastsim.fullsim): physics sanity, reproducibility, output files, failures.

The simulations run for real (geant4-pybind, data-free EM list) in worker processes: ~1 GeV and
8 GeV photons, a few dozen events. The pytest process itself never imports Geant4 (Geant4 may
crash while tearing down at interpreter exit; workers leave with os._exit).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers_signals import press_ctrl_c, restore_sigint

from fastsim.data.hdf5 import read_calochallenge, validate_calochallenge
from fastsim.errors import FastsimError
from fastsim.fullsim import g4env
from fastsim.fullsim.detector import atlas_like, resolve_detector, sampling_stack
from fastsim.fullsim.engine import balance_ok, choose_physics, event_seed
from fastsim.fullsim.runner import check_energies, simulate
from fastsim.geometry import Geometry

# find_spec, not import: importing geant4_pybind without GEANT4_DATA_DIR would ask to download data.
# Only the tests that run Geant4 need it; the detector, option and energy checks run without.
needs_g4 = pytest.mark.skipif(
    importlib.util.find_spec("geant4_pybind") is None, reason="geant4-pybind (extra 'g4') is not installed"
)

GEO = Geometry.builtin("1-photons")
SEED = 7
E_LOW, E_HIGH, N_EACH = 1024.0, 8192.0, 24


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Placeholder data sets in a test cache, never the user's."""
    monkeypatch.setenv("FASTSIM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """One real run: 24 photons at 1 GeV and 24 at 8 GeV, two workers, HDF5 + ROOT output."""
    d = tmp_path_factory.mktemp("g4run")
    energies = np.repeat([E_LOW, E_HIGH], N_EACH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTSIM_CACHE", str(d / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        return simulate(
            d / "photons.h5", energies, particle="gamma", seed=SEED, workers=2, root_output=d / "photons.root",
            progress=False, energy_spec="test",
        )


# --------------------------------------------------------------------------- detector (no Geant4)


def test_default_detector_maps_onto_dataset1_photon_binning() -> None:
    spec = resolve_detector("atlas", GEO)
    assert [ly.name for ly in spec.layers] == ["presampler", "EM strips", "EM middle", "EM back", "tile A"]
    assert GEO.layer_ids == [0, 1, 2, 3, 12] and GEO.n_voxels == 368
    x0 = [ly.x0 for ly in spec.layers]
    # brief: EM sampling layers of about 4, 16 and 2 X0
    assert x0[1] == pytest.approx(4.0, abs=0.3) and x0[2] == pytest.approx(16.0, abs=0.5) and x0[3] == pytest.approx(2.0, abs=0.2)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["layers"][2]["n_cells"] == 54 and d["layers"][4]["absorber"] == "G4_Fe"
    assert "presampler" in spec.describe()
    with pytest.raises(FastsimError, match="layers"):
        atlas_like().check(Geometry.regular(3, 1, [0, 10, 20]))
    with pytest.raises(FastsimError, match="beyond the layer radius"):
        sampling_stack(GEO).check(Geometry.regular(5, 1, [0, 10, 5000]))
    assert len(sampling_stack(Geometry.regular(3, 4, [0, 10, 20])).layers) == 3


def test_energy_and_option_checks() -> None:
    assert check_energies([256, 65536]).dtype == np.float64
    for bad, message in (([], "no incident energies given"), ([float("nan")], "must be finite"),
                         ([-1.0], "-1 MeV is outside"), ([0.0], "0 MeV is outside"), ([1e12], "1e\\+12 MeV is outside")):
        with pytest.raises(FastsimError, match=message):
            check_energies(bad)
    assert event_seed(1, 0) != event_seed(1, 1) != event_seed(2, 0)
    assert event_seed(1, 5) == event_seed(1, 5) > 0


def test_cli_energy_specs() -> None:
    from fastsim.fullsim.cli import build_parser, energies_from_args

    p = build_parser()
    e, _, discrete = energies_from_args(p.parse_args(["-o", "x.h5", "--pow2", "8:16", "-n", "3"]))
    assert discrete and len(e) == 27 and e[0] == 256 and e[-1] == 65536
    e, _, discrete = energies_from_args(p.parse_args(["-o", "x.h5", "--log-uniform", "1000:100000", "-n", "500", "--seed", "3"]))
    assert not discrete and e.min() >= 1000 and e.max() <= 100000
    # log-uniform: as many below the geometric mean as above it (within noise)
    assert abs(np.mean(e < 10000) - 0.5) < 0.1
    e2, _, _ = energies_from_args(p.parse_args(["-o", "x.h5", "--log-uniform", "1000:100000", "-n", "500", "--seed", "3"]))
    np.testing.assert_array_equal(e, e2)
    for bad, message in ((["--pow2", "8"], "--pow2: expected LOW:HIGH, got '8'"),
                         (["--pow2", "a:b"], "--pow2: expected LOW:HIGH numbers"),
                         (["--log-uniform", "0:10"], "--log-uniform: energies must be > 0 MeV"),
                         (["--energies", "1,x"], "--energies: expected numbers separated by commas")):
        with pytest.raises(FastsimError, match=message):
            energies_from_args(p.parse_args(["-o", "x.h5", *bad]))


def test_pion_request_fails_clearly(tmp_path, monkeypatch, capsys) -> None:
    for var in g4env.DATASET_PREFIXES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GEANT4_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(FastsimError, match="hadronic physics.*G4PARTICLEXSDATA"):
        choose_physics("pi+")
    with pytest.raises(FastsimError, match="data sets"):
        choose_physics("gamma", "stock")
    assert choose_physics("gamma", "auto") == "datafree"
    from fastsim.cli import main

    out = tmp_path / "pions.h5"
    capsys.readouterr()
    assert main(["simulate", "-o", str(out), "--particle", "pi+", "--energies", "10000", "-n", "2"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fastsim simulate: error: particle pi+ needs hadronic physics (FTFP_BERT)")
    assert not out.exists()


def test_stock_physics_detected_only_with_real_data(tmp_path, monkeypatch) -> None:
    for var in g4env.DATASET_PREFIXES:
        monkeypatch.delenv(var, raising=False)
    base = tmp_path / "data"
    for name in ("G4EMLOW8.8", "G4ENSDFSTATE3.0", "PhotonEvaporation6.1.2"):
        (base / name).mkdir(parents=True)
    monkeypatch.setenv("GEANT4_DATA_DIR", str(base))
    assert choose_physics("gamma", "auto") == "stock"
    # placeholders made for the data-free list never count as real data
    (base / "G4EMLOW8.8" / "FASTSIM_EMPTY_PLACEHOLDER").touch()
    assert choose_physics("gamma", "auto") == "datafree"


# --------------------------------------------------------------------------- real Geant4 runs


@needs_g4
def test_output_file_is_valid_calochallenge(run) -> None:
    assert validate_calochallenge(run.path, GEO) == []
    e, showers = read_calochallenge(run.path)
    assert showers.shape == (2 * N_EACH, 368) and showers.dtype == np.float32
    np.testing.assert_array_equal(e, np.repeat([E_LOW, E_HIGH], N_EACH))
    assert np.all(showers >= 0) and np.all(showers.sum(1) > 0)
    import h5py

    with h5py.File(run.path) as f:
        a = dict(f.attrs)
    assert a["producer"] == "geant4" and a["particle"] == "gamma" and a["seed"] == SEED
    assert "11.4" in a["geant4_version"] and a["physics_list"].startswith("fastsim-datafree-em")
    assert json.loads(a["detector"])["name"] == "atlas-barrel-like"
    assert a["time_per_shower_s"] > 0
    by_e = json.loads(a["time_per_shower_by_energy"])
    assert set(by_e) == {"1024", "8192"} and by_e["8192"] > by_e["1024"] > 0
    # the file is on the EM scale: each layer's voxels are its active-material deposits divided by
    # the layer's sampling fraction, so undoing the factors gives the visible energy of the balance
    assert a["energy_scale"] == "em"
    f = np.asarray(json.loads(a["sampling_fractions"]))
    np.testing.assert_allclose(np.asarray(json.loads(a["em_scale_factors"])), 1 / f)
    np.testing.assert_allclose((GEO.layer_energies(showers) * f).sum(1), run.balance[:, 0], rtol=1e-5)
    assert "EM scale" in a["units"]


@needs_g4
def test_sampling_fractions_measured_on_the_run_agree_with_the_stored_calibration(run) -> None:
    from fastsim.fullsim.calibration import CALIBRATIONS

    cal = CALIBRATIONS["atlas-barrel-like"]
    f_run = np.asarray(json.loads(run.attrs["sampling_fractions_this_run"]))
    u_run = np.asarray(json.loads(run.attrs["sampling_fractions_this_run_unc"]))
    assert f_run[0] == 1.0 and cal.fractions[0] == 1.0  # the presampler is all liquid argon
    # Pb/LAr 1.5 mm / 4.2 mm cells: ~0.2-0.3; the Fe/scintillator tile layer far less
    assert np.all((f_run[1:4] > 0.15) & (f_run[1:4] < 0.35)) and 0.0 < f_run[4] < 0.15
    # 48 showers at 1 and 8 GeV vs the calibration's 900 at 0.25-65 GeV: EM layers within 5 sigma
    # (the strips' fraction depends a little on the shower's energy spectrum there, hence not 3)
    diff = np.abs(f_run[1:4] - np.asarray(cal.fractions[1:4]))
    assert np.all(diff < 5 * np.hypot(u_run[1:4], np.asarray(cal.uncertainties[1:4])) + 0.01), (f_run, cal.fractions)


@needs_g4
def test_root_output_matches_hdf5_and_feeds_prep_root(run, tmp_path) -> None:
    import uproot

    from fastsim.cli import main

    with uproot.open(run.root_path) as f:
        tree = f["events"]
        assert tree.typenames() == {"e_inc": "double", "voxels": "float[368]"}
        arr = tree.arrays(["e_inc", "voxels"], library="np")
    e, showers = read_calochallenge(run.path)
    np.testing.assert_array_equal(arr["e_inc"], e)
    np.testing.assert_array_equal(arr["voxels"], showers)
    # the ROOT data-prep path reads it with its defaults
    out = tmp_path / "from_root.h5"
    assert main(["prep-root", str(run.root_path), "-o", str(out), "--geometry", "1-photons", "--no-progress"]) == 0
    e2, showers2 = read_calochallenge(out)
    np.testing.assert_array_equal(e2, e)
    np.testing.assert_array_equal(showers2, showers)


@needs_g4
def test_energy_conservation(run) -> None:
    # visible (voxels + active outside the binning) + invisible (absorbers, dead material) +
    # leakage equals the incident energy event by event (all three are scored independently)
    assert np.all(balance_ok(run.e_inc, run.balance, "gamma", rel_tol=1e-3))
    assert not np.any(balance_ok(run.e_inc * 1.01, run.balance, "gamma", rel_tol=1e-3))
    frac = run.balance / run.e_inc[:, None]
    assert np.all(frac[:, 2] > 0.5)  # most energy is lost in the lead
    assert np.all(frac[:, 4] < 0.05)  # ~24 X0 of EM calorimeter contain a photon shower


def _cog_x0(showers: np.ndarray) -> np.ndarray:
    """Longitudinal centre of gravity (X0 from the front) from layer energies, (N,)."""
    spec = atlas_like()
    centres, depth = [], 0.0
    for ly in spec.layers:
        depth += ly.front_x0
        centres.append(depth + ly.x0 / 2)
        depth += ly.x0
    el = GEO.layer_energies(showers)
    return (el * np.asarray(centres)).sum(1) / el.sum(1)


@needs_g4
def test_shower_depth_grows_with_log_energy(run) -> None:
    _, showers = read_calochallenge(run.path)
    lo, hi = _cog_x0(showers[:N_EACH]), _cog_x0(showers[N_EACH:])
    diff = hi.mean() - lo.mean()
    err = math.hypot(lo.std() / math.sqrt(N_EACH), hi.std() / math.sqrt(N_EACH))
    # shower maximum moves by ln(8) ≈ 2.1 X0; the coarse layers see part of it
    assert diff > 3 * err and 0.3 < diff < 4.0
    # and more of the energy reaches the middle layer at 8 GeV
    el = GEO.layer_energies(showers) / showers.sum(1, keepdims=True)
    assert el[N_EACH:, 2].mean() > el[:N_EACH, 2].mean()


@needs_g4
def test_response_and_resolution_plausible(run) -> None:
    r = run.response
    lo, hi = r[:N_EACH], r[N_EACH:]
    # Pb/LAr 1.5 mm / 4.2 mm: sampling fraction ~ 0.2-0.3 (minus ~1 X0 of dead material in front)
    assert 0.15 < lo.mean() < 0.32 and 0.15 < hi.mean() < 0.32
    res_lo, res_hi = lo.std() / lo.mean(), hi.std() / hi.mean()
    # a ~10 %/sqrt(E) sampling term plus front-material fluctuations
    assert 0.01 < res_lo < 0.2 and res_hi < res_lo
    # on the EM scale (the file's) a contained shower has E_tot/E_inc a little below 1: the
    # ~1 X0 of aluminium in front and the leakage are not corrected
    em = run.file_response
    assert 0.85 < np.median(em[:N_EACH]) < 1.02 and 0.85 < np.median(em[N_EACH:]) < 1.02
    assert run.attrs["response_by_energy"]["1024"] == pytest.approx(em[:N_EACH].mean())
    assert run.attrs["visible_fraction_by_energy"]["1024"] == pytest.approx(lo.mean())


@needs_g4
def test_seeded_runs_reproducible_for_any_worker_count(run, tmp_path) -> None:
    e = np.full(6, E_LOW)
    one = simulate(tmp_path / "one.h5", e, seed=SEED, workers=1, progress=False)
    _, s1 = read_calochallenge(one.path)
    _, s_ref = read_calochallenge(run.path, 0, 6)  # same seed, events 0..5, made by 2 workers
    np.testing.assert_array_equal(s1, s_ref)
    other = simulate(tmp_path / "other.h5", e, seed=SEED + 1, workers=2, progress=False)
    _, s2 = read_calochallenge(other.path)
    assert not np.array_equal(s1, s2)


@needs_g4
def test_active_scale_option_and_em_scale_conversion_are_exact(run, tmp_path, capsys) -> None:
    """--energy-scale active writes the raw deposits; fastsim em-scale turns them into the EM-scale file."""
    import h5py

    from fastsim.cli import main
    from fastsim.fullsim.calibration import CALIBRATIONS, voxel_factors

    raw = simulate(tmp_path / "raw.h5", np.full(4, E_LOW), seed=SEED, workers=1, progress=False, energy_scale="active")
    _, s_raw = read_calochallenge(raw.path)
    _, s_em = read_calochallenge(run.path, 0, 4)  # same seed and events, EM scale
    np.testing.assert_allclose(s_raw.sum(1), raw.balance[:, 0], rtol=1e-5)
    assert raw.attrs["energy_scale"] == "active" and "sampling_fractions" not in raw.attrs
    f = np.asarray(CALIBRATIONS["atlas-barrel-like"].fractions)
    np.testing.assert_allclose(s_raw * voxel_factors(GEO, 1 / f), s_em, rtol=1e-6)

    conv = tmp_path / "conv.h5"
    assert main(["em-scale", str(raw.path), "-o", str(conv)]) == 0
    _, s_conv = read_calochallenge(conv)
    np.testing.assert_allclose(s_conv, s_em, rtol=1e-6)
    with h5py.File(conv) as fh:
        a = dict(fh.attrs)
    assert a["energy_scale"] == "em" and json.loads(a["sampling_fractions"]) == list(f)
    assert json.loads(a["response_by_energy"])["1024"] == pytest.approx((s_em.sum(1) / E_LOW).mean(), rel=1e-5)
    assert a["seed"] == SEED and a["producer"] == "geant4"  # the input's attributes are kept
    # and back: exact to float32 rounding
    back = tmp_path / "back.h5"
    assert main(["em-scale", str(conv), "-o", str(back), "--to", "active"]) == 0
    np.testing.assert_allclose(read_calochallenge(back)[1], s_raw, rtol=1e-6)
    # converting twice, or to a file that exists, is a one-line error and writes nothing
    capsys.readouterr()
    assert main(["em-scale", str(conv), "-o", str(tmp_path / "twice.h5")]) == 2
    err = capsys.readouterr().err
    assert "already on the em energy scale" in err and str(conv) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "twice.h5").exists()
    assert main(["em-scale", str(raw.path), "-o", str(conv)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["em-scale", str(raw.path), "-o", str(tmp_path / "bad.h5"), "--fractions", "1,0.2"]) == 2
    assert "2 layer factors for a geometry with 5 layers" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()


@needs_g4
def test_existing_output_refused(run, capsys) -> None:
    from fastsim.cli import main

    before = os.path.getmtime(run.path)
    capsys.readouterr()
    assert main(["simulate", "-o", str(run.path), "--energies", "1024", "-n", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"fastsim simulate: error: {run.path}: already exists (pass --overwrite to replace it)"
    )
    assert os.path.getmtime(run.path) == before


def test_bad_options_one_line_before_any_simulation(tmp_path, capsys) -> None:
    from fastsim.cli import main

    for bad, message in (
        (["--energies", "-5"], "incident energy -5 MeV is outside (0, 1e+08] MeV"),
        (["--energies", "1024", "--workers", "0"], "--workers must be >= 1, got 0"),
        (["--energies", "1024", "--cut", "0"], "--cut must be a positive length in mm, got 0.0"),
        (["--pow2", "8:16", "--geometry", str(tmp_path / "missing.xml")], f"{tmp_path}/missing.xml: binning file not found"),
        (["--energies", "1024", "--angle", "50"], "--angle: incidence angle 50 deg is outside [0, 45] deg"),
        (["--energies", "1024", "--angle", "10,-1"], "--angle: incidence angle -1 deg is outside [0, 45] deg"),
        (["--energies", "1024", "--angle", "nan"], "--angle: incidence angle nan deg is outside [0, 45] deg"),
        (["--energies", "1024", "--angle", "ten"], "--angle: expected numbers separated by commas, got 'ten'"),
        (["--energies", "1024", "--angle", ","], "--angle: no values"),
        (["--energies", "1024", "--angle", "10", "--scoring", "volumes"], "--angle other than 0 needs --scoring steps"),
    ):
        capsys.readouterr()
        assert main(["simulate", "-o", str(tmp_path / "x.h5"), *bad]) == 2
        assert capsys.readouterr().err.strip() == f"fastsim simulate: error: {message}"
    assert not (tmp_path / "x.h5").exists()


def test_bad_angle_from_the_command_line(tmp_path) -> None:
    """What a user types: one line on stderr, exit status 2, no traceback, no output file."""
    out = tmp_path / "a.h5"
    cmd = [sys.executable, "-m", "fastsim.cli", "simulate", "-o", str(out), "--energies", "1024", "--angle", "90"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == "fastsim simulate: error: --angle: incidence angle 90 deg is outside [0, 45] deg"
    assert not out.exists()


@needs_g4
def test_incidence_angle_keeps_the_shower_on_the_axis(tmp_path) -> None:
    """--angle 0,30: angles stored per event; in each layer the shower stays centred in the shower frame."""
    import h5py

    from fastsim.cli import main
    from fastsim.data.hdf5 import open_calochallenge

    out = tmp_path / "angles.h5"
    assert main(["simulate", "-o", str(out), "--energies", "4096", "-n", "12", "--angle", "0,30",
                 "--workers", "2", "--seed", "4", "--no-progress"]) == 0
    assert validate_calochallenge(out, GEO) == []
    with open_calochallenge(out) as cf:
        angles = cf.incident_angles()
        e, sh = cf.read()
    np.testing.assert_array_equal(angles, [0.0] * 12 + [30.0] * 12)
    np.testing.assert_array_equal(e, 4096.0)
    with h5py.File(out) as f:
        assert f["incident_angles"].shape == (24, 1) and f["incident_angles"].attrs["units"] == "deg"
        assert "angles 0,30 deg" in f.attrs["energy_spec"]
    for sel in (angles == 0, angles == 30):
        x, y, core = _layer_centres(sh[sel])
        # a binning left on the z axis would put the 30° centres 100-180 mm off; on the axis they
        # are within a few mm (at 30° the shower's rise and fall along the axis shift them by a few mm)
        assert np.all(np.abs(x) < 8) and np.all(np.abs(y) < 8), (x, y)
        assert np.all(core > 0.6), core  # most of each layer's energy within 30 mm of the axis


def _layer_centres(showers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean energy-weighted centre (x, y in mm, voxel centres) of layers 1 and 2 over ``showers``,
    and the median fraction of their energy within r ≤ 30 mm."""
    xs, ys, core = [], [], []
    for i in (1, 2):
        ly = GEO.layers[i]
        r_mid = (np.asarray(ly.r_edges[:-1]) + np.asarray(ly.r_edges[1:])) / 2
        a_mid = -math.pi + (np.arange(ly.n_alpha) + 0.5) * 2 * math.pi / ly.n_alpha
        img = GEO.layer_image(showers, i)  # (N, n_alpha, n_r)
        w = img.sum((1, 2))
        xs.append(((img * np.cos(a_mid)[:, None] * r_mid).sum((1, 2)) / w).mean())
        ys.append(((img * np.sin(a_mid)[:, None] * r_mid).sum((1, 2)) / w).mean())
        core.append(np.median(img[:, :, np.asarray(ly.r_edges[1:]) <= 30].sum((1, 2)) / w))
    return np.array(xs), np.array(ys), np.array(core)


def test_embedded_angle_reference() -> None:
    """fastsim/refdata/photons_ds1_g4_angles.h5: 3 angles × 3 energies × 50 photons, showers on the axis.

    The angle shows in the physics: an inclined shower crosses more lead per layer (X0 / cos θ),
    so more of its energy stays in the strips layer, and it is elongated along x in the layer plane.
    """
    from importlib import resources

    from fastsim.data.hdf5 import open_calochallenge

    path = str(resources.files("fastsim") / "refdata" / "photons_ds1_g4_angles.h5")
    assert os.path.getsize(path) <= 512 * 1024
    assert validate_calochallenge(path, GEO) == []
    with open_calochallenge(path) as cf:
        angles = cf.incident_angles()
        e, sh = cf.read()
        assert cf.attrs["producer"] == "geant4" and "steps" in cf.attrs["scoring"]
    for angle in (0.0, 20.0, 40.0):
        for energy in (256.0, 1024.0, 4096.0):
            assert np.sum((angles == angle) & (e == energy)) == 50
    frac1 = GEO.layer_energies(sh)[:, 1] / sh.sum(1)
    for energy in (256.0, 1024.0, 4096.0):
        f0, f40 = (frac1[(angles == a) & (e == energy)].mean() for a in (0.0, 40.0))
        assert f40 > f0 + 0.05, (energy, f0, f40)
    for angle in (0.0, 20.0, 40.0):
        sel = (angles == angle) & (e == 4096.0)
        x, y, core = _layer_centres(sh[sel])
        assert np.all(np.abs(x) < 8) and np.all(np.abs(y) < 8), (angle, x, y)
        assert np.all(core > 0.6)
        # second moments of the core of the EM middle layer: x (the inclination plane) vs y
        ly = GEO.layers[2]
        r_mid = (np.asarray(ly.r_edges[:-1]) + np.asarray(ly.r_edges[1:])) / 2
        a_mid = -math.pi + (np.arange(ly.n_alpha) + 0.5) * 2 * math.pi / ly.n_alpha
        img = GEO.layer_image(sh[(angles == angle) & (e >= 1024)], 2).sum(0)[:, r_mid < 50]
        r = r_mid[r_mid < 50]
        ratio = (img * (np.cos(a_mid)[:, None] * r) ** 2).sum() / (img * (np.sin(a_mid)[:, None] * r) ** 2).sum()
        assert (ratio > 1.25) if angle == 40.0 else (0.85 < ratio < 1.3), (angle, ratio)


def test_angle_dataset_read_and_validated(tmp_path) -> None:
    """incident_angles is optional: files without it read as before; a wrong shape or NaN is reported."""
    import h5py

    from fastsim.data.hdf5 import InputFileError, open_calochallenge, write_calochallenge

    plain = tmp_path / "plain.h5"
    write_calochallenge(plain, np.full(3, 1000.0), np.ones((3, GEO.n_voxels), np.float32))
    with open_calochallenge(plain) as cf:
        assert not cf.has_angles and cf.incident_angles() is None
    for name, angles, problem in (
        ("good.h5", np.array([[0.0], [10.0], [20.0]]), None),
        ("flat.h5", np.array([0.0, 10.0, 20.0]), None),
        ("short.h5", np.array([[0.0], [10.0]]), "incident_angles must have shape (3, 1) like the showers, got (2, 1)"),
        ("nan.h5", np.array([[0.0], [np.nan], [20.0]]), "incident_angles has 1 non-finite values"),
    ):
        path = tmp_path / name
        write_calochallenge(path, np.full(3, 1000.0), np.ones((3, GEO.n_voxels), np.float32))
        with h5py.File(path, "a") as f:
            f.create_dataset("incident_angles", data=angles)
        problems = validate_calochallenge(path, GEO)
        if problem is None:
            assert problems == []
            with open_calochallenge(path) as cf:
                np.testing.assert_array_equal(cf.incident_angles(), [0.0, 10.0, 20.0])
        else:
            assert problems == [problem]
            if "shape" in problem:
                with pytest.raises(InputFileError, match="incident_angles must have shape"):
                    open_calochallenge(path)



@needs_g4
@pytest.mark.parametrize("scoring", ["volumes", "steps"])
def test_voxel_scoring_matches_geometry_binning(tmp_path, scoring) -> None:
    """Random points of each active slab land in the voxel Geometry.voxel_index computes.

    volumes: Geant4's navigator locates each point in a voxel volume. steps: the compiled scorer's
    machine code is called on a step at each point, around the axis of a particle at 0° and 30°.
    """
    code = (
        "import os, numpy as np\n"
        "from fastsim.geometry import Geometry\n"
        "from fastsim.fullsim.detector import atlas_like\n"
        "from fastsim.fullsim.engine import get_application\n"
        f"app = get_application(Geometry.builtin('1-photons'), atlas_like(), 'gamma', 'datafree', scoring={scoring!r})\n"
        "app.simulate(np.array([100.0]), [1])\n"
        "n, bad = app.check_voxel_mapping(150, seed=1)\n"
        "print('RESULT', n, bad, flush=True)\n"
        "if app.scoring == 'steps':\n"
        "    print('RESULT', *app.check_voxel_mapping(150, seed=2, angle_deg=30.0), flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    assert len(lines) == (2 if scoring == "steps" else 1), out.stdout[-2000:] + out.stderr[-2000:]
    for _, n, bad in lines:
        assert int(n) == 750 and int(bad) == 0


@needs_g4
def test_step_and_volume_scoring_agree(tmp_path) -> None:
    """The two scorings of the active gaps give the same showers within statistics (same seeds).

    Only the voxel edges as geometry boundaries differ, which changes the step sequence, not the
    physics: response, layer fractions and the radial profile agree; each closes its energy balance.
    """
    e = np.full(16, 4096.0)
    runs = {sc: simulate(tmp_path / f"{sc}.h5", e, seed=5, workers=1, progress=False, scoring=sc)
            for sc in ("volumes", "steps")}
    feats = {}
    for sc, s in runs.items():
        assert np.all(balance_ok(s.e_inc, s.balance, "gamma"))
        assert sc in s.attrs["scoring"]
        _, sh = read_calochallenge(s.path)
        layers = GEO.layer_energies(sh)
        img = GEO.layer_image(sh, 2).sum(axis=1)  # (N, n_r) of the EM middle layer
        feats[sc] = (sh.sum(1) / e, layers / layers.sum(1, keepdims=True), img / img.sum(1, keepdims=True))
    (r_v, l_v, p_v), (r_s, l_s, p_s) = feats["volumes"], feats["steps"]
    err = math.hypot(r_v.std(), r_s.std()) / math.sqrt(len(e))
    assert abs(r_v.mean() - r_s.mean()) < 4 * err + 1e-3
    np.testing.assert_allclose(l_v.mean(0), l_s.mean(0), atol=0.02)
    np.testing.assert_allclose(p_v.mean(0), p_s.mean(0), atol=0.02)
    # but the step sequences differ (the scoring is not a no-op)
    assert not np.array_equal(r_v, r_s)


@needs_g4
def test_killed_run_leaves_no_output(tmp_path) -> None:
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "fastsim.cli", "simulate", "-o", str(out), "--energies", "4096", "-n", "5000",
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        shard = None
        while time.time() < deadline and shard is None:  # wait until the worker writes events
            for d in tmp_path.glob(".killed.h5.shards-*"):
                if (d / "shard-0.h5").exists():
                    shard = d
            time.sleep(0.2)
        assert shard is not None, "the run never started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    # the orphaned worker notices its parent is gone and exits after its current block
    pid = int((shard / "worker-0.log").read_text().split("pid ")[1].split()[0])
    deadline = time.time() + 60
    while time.time() < deadline and _running(pid):
        time.sleep(0.5)
    assert not _running(pid)
    assert not out.exists()


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@needs_g4
def test_interrupted_run_cleans_up(tmp_path) -> None:
    out = tmp_path / "int.h5"
    cmd = [sys.executable, "-m", "fastsim.cli", "simulate", "-o", str(out), "--energies", "4096", "-n", "5000",
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=restore_sigint)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".int.h5.shards-*/shard-0.h5")):
        time.sleep(0.2)
    time.sleep(1.0)
    err = press_ctrl_c(proc, presses=8)
    assert proc.returncode == 130, err
    assert not out.exists() and not list(tmp_path.glob(".int.h5*"))


# --------------------------------------------------------------------------- slow


@needs_g4
@pytest.mark.slow
def test_stochastic_term_of_resolution(tmp_path) -> None:
    """σ/E = a/√E ⊕ b over 1-16 GeV: a Pb/LAr sampling calorimeter has a ≈ 8-15 %."""
    energies = np.repeat([1024.0, 4096.0, 16384.0], 200)
    s = simulate(tmp_path / "res.h5", energies, seed=11, progress=False)
    e_gev, res = [], []
    for e in (1024.0, 4096.0, 16384.0):
        r = s.response[s.e_inc == e]
        e_gev.append(e / 1000)
        res.append(r.std() / r.mean())
    # least squares in (σ/E)² = a²/E + b²
    A = np.stack([1 / np.asarray(e_gev), np.ones(3)], axis=1)
    (a2, b2), *_ = np.linalg.lstsq(A, np.asarray(res) ** 2, rcond=None)
    a = math.sqrt(max(a2, 0.0))
    assert 0.05 < a < 0.2, (a, b2, res)


# --------------------------------------------------------------------------- the embedded reference


def test_embedded_photon_reference() -> None:
    """fastsim/refdata/photons_ds1_g4.h5: valid, 9 energies 256 MeV … 65.5 GeV, physics consistent."""
    from importlib import resources

    import h5py

    path = str(resources.files("fastsim") / "refdata" / "photons_ds1_g4.h5")
    assert os.path.getsize(path) <= 15 * 2**20
    assert validate_calochallenge(path, GEO) == []
    e, showers = read_calochallenge(path)
    energies, counts = np.unique(e, return_counts=True)
    np.testing.assert_array_equal(energies, 2.0 ** np.arange(8, 17))
    assert counts.min() >= 1000
    with h5py.File(path) as f:
        a = dict(f.attrs)
    assert a["producer"] == "geant4" and a["particle"] == "gamma" and "11.4" in a["geant4_version"]
    assert set(json.loads(a["time_per_shower_by_energy"])) == {f"{x:g}" for x in energies}
    resp = showers.sum(1) / e
    mean = np.array([resp[e == x].mean() for x in energies])
    res = np.array([resp[e == x].std() / resp[e == x].mean() for x in energies])
    cog = np.array([_cog_x0(showers[e == x]).mean() for x in energies])
    # on the EM scale: E_tot/E_inc a little below 1 (dead material in front, leakage), the
    # per-layer factors in the attributes
    assert a["energy_scale"] == "em"
    f = np.asarray(json.loads(a["sampling_fractions"]))
    assert f.shape == (5,) and f[0] == 1.0 and np.all((f[1:4] > 0.15) & (f[1:4] < 0.35))
    median = np.array([np.median(resp[e == x]) for x in energies])
    assert np.all((median[energies >= 1000] > 0.85) & (median[energies >= 1000] < 1.05)), median
    assert np.all((mean > 0.75) & (mean < 1.05))
    np.testing.assert_allclose(mean, [json.loads(a["response_by_energy"])[f"{x:g}"] for x in energies], rtol=1e-5)
    # resolution improves with every doubling up to 16 GeV; above, a ~1.4 % constant term dominates
    assert np.all(np.diff(res[:7]) < 0) and res[-1] < res[0] / 5
    assert np.all(np.diff(cog) > 0)  # showers get deeper with every doubling of the energy
    # stochastic term (σ/E)·√E at 4 GeV, where neither dead material nor the constant term dominates
    assert 0.04 < res[4] * math.sqrt(energies[4] / 1000) < 0.12


@needs_g4
def test_electrons_and_positrons_conserve_energy(tmp_path) -> None:
    """e⁻ and e⁺ at 1 GeV: the balance closes; for e⁺ only with its annihilation energy 2 mₑc²."""
    for particle in ("e-", "e+"):
        s = simulate(tmp_path / f"{particle}.h5", np.full(6, E_LOW), particle=particle, seed=3, workers=2, progress=False)
        assert s.attrs["particle"] == particle
        assert np.all(balance_ok(s.e_inc, s.balance, particle, rel_tol=2e-4))
        other = "e-" if particle == "e+" else "e+"
        assert not np.any(balance_ok(s.e_inc, s.balance, other, rel_tol=2e-4))
        assert 0.15 < s.response.mean() < 0.32
