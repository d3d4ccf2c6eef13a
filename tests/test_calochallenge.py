"""The CaloChallenge protocol: threshold, official inputs and binnings, FPD/KPD, the official
classifier, and ``fastsim benchmark --protocol/--threshold`` end to end. Analytic cases only."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import toy_showers

from fastsim.cli import main as fastsim_main
from fastsim.data.hdf5 import write_calochallenge
from fastsim.geometry import Geometry, Layer
from fastsim.metrics import calochallenge as cc
from fastsim.metrics.classifier import CALOCHALLENGE, classifier_test
from fastsim.metrics.fpd import fpd, fpd_floor, frechet_distance, kpd, mmd_poly_unbiased
from fastsim.metrics.shapes import shower_features


# ------------------------------------------------------------------------------------ threshold
def test_threshold_zeroes_exactly_the_voxels_below_it():
    s = np.array([[0.0, 0.5, 0.999999, 1.0, 1.000001, 7.0]], dtype=np.float32)
    out = cc.apply_threshold(s, 1.0)
    # below: zeroed; equal: kept (the official np.where(shower < min_energy, 0, shower))
    np.testing.assert_array_equal(out, np.array([[0.0, 0.0, 0.0, 1.0, 1.000001, 7.0]], dtype=np.float32))
    assert out.dtype == np.float32
    assert s[0, 1] == np.float32(0.5)  # the input is left alone
    np.testing.assert_array_equal(cc.apply_threshold(s, 0.0), s)
    with pytest.raises(ValueError):
        cc.apply_threshold(s, -1.0)


def test_default_thresholds_are_the_official_values(geo_photons, geo_small):
    assert cc.default_threshold(geo_photons) == 1.0
    assert cc.default_threshold(Geometry.builtin("1-pions")) == 1.0
    assert cc.default_threshold(Geometry.builtin("2")) == pytest.approx(0.5e-3 / 0.033)
    assert cc.default_threshold(geo_small) == 0.0
    # a geometry read back from a file's JSON attribute under another name is still dataset 1
    assert cc.dataset_key(Geometry(geo_photons.layers, name="from-file")) == "1-photons"


# ------------------------------------------------------------------------------- high-level vector
@pytest.fixture
def geo_two() -> Geometry:
    """Layer 0: 1 α × 2 r (r centres 5, 20 mm); layer 3: 2 α (centres −π/2, +π/2) × 1 r (centre 5 mm)."""
    return Geometry((Layer(0, (0.0, 10.0, 30.0), 1), Layer(3, (0.0, 10.0), 2)), name="two")


def test_high_level_vector_equals_a_hand_computation(geo_two):
    showers = np.array([[2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    e_inc = np.array([10.0, 100.0])
    f = shower_features(showers, e_inc, geo_two)
    vec = cc.high_level_vector({**f, "sparsity_official": cc.sparsity(showers, geo_two)}, geo_two)
    assert cc.high_level_columns(geo_two) == [
        "log10 E_inc", "log10 E_layer 0", "log10 E_layer 3", "center_eta/100 3", "center_phi/100 3",
        "width_eta/100 3", "width_phi/100 3", "log10 E_tot", "sparsity 0", "sparsity 3",
        "center_r/100 0", "center_r/100 3", "width_r/100 0", "width_r/100 3",
    ]  # fmt: skip
    # shower 1: layer 0 holds 2 MeV at r = 5; layer 3 holds 3 MeV at φ = −5 mm and 1 MeV at φ = +5 mm
    phi_c = (3 * -5.0 + 1 * 5.0) / 4
    phi_w = math.sqrt((3 * 25.0 + 1 * 25.0) / 4 - phi_c**2)
    first = [1.0, math.log10(2 + 1e-8), math.log10(4 + 1e-8), 0.0, phi_c / 100, 0.0, phi_w / 100,
             math.log10(6 + 1e-8), 0.5, 0.0, 0.05, 0.05, 0.0, 0.0]  # fmt: skip
    # shower 2: 1 MeV at r = 5 and 1 MeV at r = 20 in layer 0, nothing in layer 3
    second = [2.0, math.log10(2 + 1e-8), -8.0, 0.0, 0.0, 0.0, 0.0, math.log10(2 + 1e-8), 0.0, 1.0,
              0.125, 0.0, 0.075, 0.0]  # fmt: skip
    np.testing.assert_allclose(vec, [first, second], atol=1e-12)


def test_normed_low_level_input(geo_two):
    showers = np.array([[2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    x = cc.low_level_normed_inputs(showers, np.array([10.0, 100.0]), geo_two)
    np.testing.assert_allclose(x[0], [1.0, 1.0, 0.0, 0.75, 0.25, math.log10(2), math.log10(4)], rtol=1e-6)
    np.testing.assert_allclose(x[1], [2.0, 0.5, 0.5, 0.0, 0.0, math.log10(2), -8.0], rtol=1e-6)


# ------------------------------------------------------------------------------------- binnings
def test_official_binnings():
    np.testing.assert_allclose(cc.etot_einc_edges(), np.linspace(0.5, 1.5, 101))
    # dataset-1 photons: [0.9, 1.1] from 2^12 MeV up; [0.4, 1.4] below and for pions
    assert cc.per_energy_edges(2048.0, "1-photons")[[0, -1]].tolist() == [0.4, 1.4]
    assert cc.per_energy_edges(4096.0, "1-photons")[[0, -1]].tolist() == [0.9, 1.1]
    assert cc.per_energy_edges(65536.0, "1-pions")[[0, -1]].tolist() == [0.4, 1.4]
    assert len(cc.per_energy_edges(4096.0, "1-photons")) == 21
    bins = cc.per_energy_bins("1-photons")
    assert len(bins) == 15 and bins[0][:2] == (256.0, 512.0) and bins[-1][:2] == (2.0**22, 2.0**23)
    assert cc.feature_edges("center_eta", 1, "1-photons", 1.0, [])[[0, -1]].tolist() == [-100.0, 100.0]
    assert cc.feature_edges("center_phi", 12, "1-pions", 1.0, [])[[0, -1]].tolist() == [-500.0, 500.0]
    assert cc.feature_edges("width_eta", 5, "2", 0.015, []).tolist() == np.linspace(0, 30, 101).tolist()
    assert cc.feature_edges("width_r", 13, "1-pions", 1.0, [])[[0, -1]].tolist() == [0.0, 1500.0]
    e = cc.feature_edges("e_layer", 0, "1-photons", 1.0, [3.0, 1000.0])
    assert len(e) == 40 and e[0] == pytest.approx(1.0) and e[-1] == pytest.approx(1000.0)


def test_official_separation_power():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.05, 5000)
    edges = cc.etot_einc_edges()
    assert cc.official_separation_power(x, x, edges) == 0.0
    assert cc.official_separation_power(x, x + 10, edges) != cc.official_separation_power(x, x + 10, edges)  # NaN
    assert cc.official_separation_power(x, x + 0.6, np.linspace(0.5, 2.5, 201)) == pytest.approx(1.0)
    # entries outside the range are dropped, not clipped into the edge bins
    assert cc.official_separation_power(np.concatenate([x, x + 5]), x, edges) == 0.0
    # hand computation: p = (1, 0), q = (½, ½) -> ½ [(½)²/(3/2) + (½)²/(½)] = 1/3
    assert cc.official_separation_power([0.2], [0.2, 0.7], [0.0, 0.5, 1.0]) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------- FPD / KPD
def test_frechet_distance_of_known_gaussians():
    d = 4
    assert frechet_distance(np.zeros(d), np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(0.0, abs=1e-12)
    # N(0, I) vs N(μ, 4 I): |μ|² + Tr(I + 4I − 2·2I) = |μ|² + d
    mu = np.array([1.0, 2.0, 0.0, 0.0])
    assert frechet_distance(np.zeros(d), np.eye(d), mu, 4 * np.eye(d)) == pytest.approx(5.0 + d)


def test_fpd_identical_samples_is_zero_and_a_shift_is_recovered():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 3))
    small = dict(min_samples=1000, max_samples=5000, seed=3)
    v, u = fpd(x, x, **small)
    # the fit keeps the intercept >= 0, so "consistent with 0" is one-sided
    assert u > 0 and 0 <= v < 3 * u and v < 1e-3
    # a mean shift of 0.5 in every one of 3 unnormalised features: FPD = 3 × 0.25
    y = rng.normal(size=(4000, 3)) + 0.5
    v, u = fpd(x, y, normalise=False, **small)
    assert v == pytest.approx(0.75, abs=0.03)


def test_fpd_floor_predicts_the_fpd_of_two_independent_samples():
    """FPD of two independent samples of one Gaussian is > 0 (empirical distributions differ); the
    floor, estimated from halves of the reference alone, predicts it within its spread."""
    rng = np.random.default_rng(4)
    small = dict(min_samples=3000, max_samples=6000, num_batches=5, num_points=4)
    ref = rng.normal(size=(2000, 10))
    values = [fpd(ref, rng.normal(size=(1000, 10)), seed=s, **small)[0] for s in range(4)]
    floor, spread = fpd_floor(ref, 1000, seed=0, **small)
    assert min(values) > 0 and floor > 0 and spread > 0
    assert abs(np.mean(values) - floor) < 3 * max(spread, np.std(values, ddof=1)), (values, floor, spread)
    # a real difference stands far above the floor
    shifted = fpd(ref, rng.normal(size=(1000, 10)) + 0.3, seed=0, **small)[0]
    assert shifted > floor + 10 * spread
    # the floor falls with the sample sizes as 1/n_gen + 1/n_ref
    assert fpd_floor(ref, 4000, n_real=4000, seed=0, **small)[0] == pytest.approx(
        floor * (2 / 4000) / (1 / 1000 + 1 / 2000), rel=1e-9)


def test_mmd_and_kpd():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(45, 3)) + 0.3
    k = lambda a, b: (a @ b.T / 3 + 1) ** 4  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    by_hand = ((kxx.sum() - np.trace(kxx)) / (60 * 59) + (kyy.sum() - np.trace(kyy)) / (45 * 44) - 2 * k(x, y).mean())
    assert mmd_poly_unbiased(x, y, block=7) == pytest.approx(by_hand, rel=1e-10)
    counts = rng.integers(0, 4, 60)
    assert mmd_poly_unbiased(x, y, x_counts=counts) == pytest.approx(mmd_poly_unbiased(np.repeat(x, counts, 0), y))
    a = rng.normal(size=(3000, 4))
    v, u = kpd(a, a, num_batches=8, batch_size=1000)
    assert abs(v) < 3 * u + 1e-6
    v, u = kpd(a, a + 0.5, num_batches=8, batch_size=1000)
    assert v > 10 * u > 0


# ------------------------------------------------------------------------------------ classifier
def test_official_classifier_settings():
    c = CALOCHALLENGE
    assert (c.hidden, c.dropout, c.lr, c.batch_size, c.max_epochs) == ((2048, 2048, 2048), 0.0, 2e-4, 1000, 50)
    assert (c.leaky_slope, c.select_on, c.standardize, c.score_calibrated, c.calib_eps) == (0.01, "accuracy", False, True, 1e-6)
    assert (1 - c.val_fraction - c.test_fraction, c.val_fraction, c.test_fraction) == pytest.approx((0.6, 0.2, 0.2))
    assert c.patience is None and c.dtype == "float64"


def test_official_classifier_on_analytic_cases():
    rng = np.random.default_rng(4)
    cfg = replace(CALOCHALLENGE, hidden=(64, 64, 64), max_epochs=6, batch_size=200, seed=1)
    same = classifier_test(rng.normal(size=(1500, 6)), rng.normal(size=(1500, 6)), cfg)
    assert abs(same["auc"] - 0.5) < 2 * same["auc_unc"]
    assert (same["n_train"], same["n_val"], same["n_test"]) == (1800, 600, 600)  # int(0.6 n), int(0.2 n), rest
    shifted = classifier_test(rng.normal(size=(1500, 6)) + np.array([1.5, 0, 0, 0, 0, 0]), rng.normal(size=(1500, 6)), cfg)
    assert shifted["auc"] > 0.8 and shifted["jsd"] > 0.2


# ------------------------------------------------------------------------------------ benchmark CLI
#: EM-scale toy showers (E_tot/E_inc ≈ 0.95) at 1 and 8 GeV with a radial exponential profile
_showers = functools.partial(toy_showers, energies=(1024.0, 8192.0), radial_mm=20.0, shape=1.0, response=0.95, spread=0.02)


@pytest.fixture
def files(tmp_path, geo_photons):
    ref, gen = str(tmp_path / "ref.h5"), str(tmp_path / "gen.h5")
    write_calochallenge(ref, *_showers(geo_photons, 300, 0))
    write_calochallenge(gen, *_showers(geo_photons, 250, 1))
    return gen, ref


def _bench(capsys, tmp_path, name, *args):
    out = tmp_path / name
    code = fastsim_main(["benchmark", "--out", str(out), "--no-plots", *args])
    return code, capsys.readouterr(), out


def test_benchmark_calochallenge_protocol_records_everything(files, tmp_path, capsys, geo_photons):
    gen, ref = files
    code, io, out = _bench(capsys, tmp_path, "cc", "--generated", gen, "--reference", ref,
                           "--classifier-epochs", "1", "--max-showers", "200")  # fmt: skip
    assert code == 0, io.err
    assert "calochallenge, threshold 1 MeV" in io.out
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"] == "calochallenge" and m["threshold"]["mev"] == 1.0
    clf = m["classifier"]
    assert clf["settings"]["hidden"] == [2048, 2048, 2048] and clf["settings"]["max_epochs"] == 1
    assert clf["n_per_class"] == {"low_level": 200, "low_level_normed": 200, "high_level": 200}
    assert clf["low_level_normed"]["n_features"] == 1 + 368 + 5
    assert clf["high_level"]["n_features"] == len(m["calochallenge"]["high_level_columns"]) == 1 + 5 + 8 + 1 + 15
    c = m["calochallenge"]
    assert c["dataset"] == "1-photons" and c["fpd"]["min_samples"] == 10_000 and c["kpd"]["batch_size"] == 10_000
    assert c["fpd"]["value"] is not None and c["kpd"]["unc"] is not None and c["fpd"]["floor"] > 0
    assert [r["layer"] for r in c["features"]["center_eta"]] == [1, 2]  # the α-binned layers only
    assert len(c["e_ratio"]["edges"]) == 101
    # per energy in the official binning: 1 GeV in [0.4, 1.4], 8 GeV in [0.9, 1.1]
    rows = m["response"]["per_energy"]
    assert [(r["e_ratio"]["edges"][0], r["e_ratio"]["edges"][-1]) for r in rows] == [(0.4, 1.4), (0.9, 1.1)]
    # the official histograms, by hand from the thresholded showers (float64, as HighLevelFeatures)
    (e_g, s_g), (e_r, s_r) = (_showers(geo_photons, 250, 1), _showers(geo_photons, 300, 0))
    s_g, s_r = (np.where(x < 1.0, 0.0, x.astype(np.float64)) for x in (s_g, s_r))
    edges = np.linspace(0.0, 1.0, 21)
    for li, row in enumerate(c["features"]["sparsity"]):
        # values k/n sit on these edges (e.g. 2 of 5 voxels hit): float32 storage would move them
        sl = geo_photons.layer_slice(li)
        spars = [1.0 - (x[:, sl] > 0).mean(axis=1) for x in (s_g, s_r)]
        assert row["layer"] == geo_photons.layer_ids[li] and row["edges"] == edges.tolist()
        hist = [np.histogram(x, bins=edges)[0] for x in spars]
        np.testing.assert_allclose(row["hist_generated"], hist[0] / hist[0].sum(), atol=1e-15)
        np.testing.assert_allclose(row["hist_reference"], hist[1] / hist[1].sum(), atol=1e-15)
        assert row["separation_power"] == pytest.approx(cc.official_separation_power(*spars, edges), abs=1e-15)
    x_g, x_r = s_g.sum(1) / e_g, s_r.sum(1) / e_r
    assert c["e_ratio"]["separation_power"] == pytest.approx(cc.official_separation_power(x_g, x_r, cc.etot_einc_edges()))
    md = (out / "report.md").read_text()
    assert "Protocol: **calochallenge**" in md and "FPD" in md and "low-level-normed" in md


def test_benchmark_threshold_option_and_quick_protocol(files, tmp_path, capsys, geo_photons):
    gen, ref = files
    code, io, out = _bench(capsys, tmp_path, "q", "--generated", gen, "--reference", ref, "--protocol", "quick",
                           "--threshold", "0.01", "--no-classifier")  # fmt: skip
    assert code == 0, io.err
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"] == "quick" and m["threshold"] == {"mev": 0.01, "source": "--threshold"}
    assert m["calochallenge"] is None
    assert m["classifier"] == {"run": False}
    spec = m["voxel_spectrum"]
    edges = np.asarray(spec["edges_mev"])
    # nothing survives between 0 and the threshold, in either sample
    below = edges[1:] <= 0.01
    assert below.any() and not np.asarray(spec["generated"])[below].any() and not np.asarray(spec["reference"])[below].any()
    # the mean image of the reference is that of its thresholded showers, computed by hand
    e_ref, s_ref = _showers(geo_photons, 300, 0)
    by_hand = (np.where(s_ref < 0.01, 0.0, s_ref) / e_ref[:, None]).mean(axis=0)
    np.testing.assert_allclose(np.load(out / "mean_images.npz")["reference"], by_hand, rtol=1e-6)
    assert not np.allclose(by_hand, (s_ref / e_ref[:, None]).mean(axis=0), rtol=1e-6)  # it did remove some
    code, io, out0 = _bench(capsys, tmp_path, "q0", "--generated", gen, "--reference", ref, "--protocol", "quick",
                            "--threshold", "0", "--no-classifier")  # fmt: skip
    m0 = json.loads((out0 / "metrics.json").read_text())
    assert np.asarray(m0["voxel_spectrum"]["reference"])[below].sum() > 0
    assert m0["threshold"]["mev"] == 0.0


def test_benchmark_classifier_inputs_option(files, tmp_path, capsys):
    gen, ref = files
    code, io, out = _bench(capsys, tmp_path, "ci", "--generated", gen, "--reference", ref, "--protocol", "quick",
                           "--classifier-inputs", "normed", "--classifier-epochs", "1", "--max-showers", "100")  # fmt: skip
    assert code == 0, io.err
    clf = json.loads((out / "metrics.json").read_text())["classifier"]
    assert clf["inputs"] == ["normed"] and set(clf["n_per_class"]) == {"low_level_normed"}
    assert "low_level" not in clf and "high_level" not in clf
    assert clf["settings"]["hidden"] == [256, 256, 256]  # the quick network


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("--protocol", "official"), "--protocol"), (("--threshold", "-1"), "--threshold"),
     (("--threshold", "one"), "--threshold"), (("--threshold", "nan"), "--threshold"),
     (("--classifier-inputs", "low,voxels"), "classifier inputs")],
)  # fmt: skip
def test_benchmark_bad_protocol_or_threshold_is_one_line(files, tmp_path, capsys, args, needle):
    gen, ref = files
    code, io, out = _bench(capsys, tmp_path, "bad", "--generated", gen, "--reference", ref, *args)
    assert code == 2
    lines = io.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in io.err
    assert not out.exists()


# ------------------------------------------------------------------------------------- generate
def test_generate_threshold_zeroes_exactly_the_voxels_below_it(tmp_path, capsys):
    import h5py
    from test_generate import train_tiny_checkpoint

    ckpt = train_tiny_checkpoint("wgan", tmp_path / "wgan.ckpt")
    common = ["generate", "-c", str(ckpt), "--energies", "1000,5000", "--n", "40", "--seed", "3"]
    assert fastsim_main([*common, "-o", str(tmp_path / "raw.h5")]) == 0
    with h5py.File(tmp_path / "raw.h5") as f:
        raw = f["showers"][:]
        assert f.attrs["readout_threshold_mev"] == 0.0
    thr = float(np.median(raw[raw > 0]))
    assert fastsim_main([*common, "-o", str(tmp_path / "thr.h5"), "--threshold", str(thr)]) == 0
    with h5py.File(tmp_path / "thr.h5") as f:
        np.testing.assert_array_equal(f["showers"][:], np.where(raw < np.float32(thr), 0.0, raw))
        assert f.attrs["readout_threshold_mev"] == thr
    capsys.readouterr()
    assert fastsim_main([*common, "-o", str(tmp_path / "bad.h5"), "--threshold", "-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threshold" in err[0] and not (tmp_path / "bad.h5").exists()
